"""References of the encoder-decoders whose encoder reads the image alone.

HF's own outputs, one example at a time: the encoder's ``hidden_states``
(vision), ``enc_to_dec_proj`` over its last hidden state (projector), the
decoder's ``hidden_states`` (language) over the prompt as HF's ``generate``
reads it: ``decoder_start_token_id``, then the prompt's ids without special
tokens (Pix2Struct: its processor's ``decoder_input_ids`` with
``add_special_tokens=False``, as transformers' docs prompt it).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from ._references import Example, Tokens, _np

__all__ = ["pix2struct_reference", "vision_encoder_decoder_reference"]


def _language(ids, states, tokenizer):
    text = ~np.isin(ids, sorted(tokenizer.all_special_ids))
    return Tokens([_np(h[0]) for h in states], text=text)


def pix2struct_reference(path, images, prompts):
    """Vision: the encoder's ``hidden_states`` over the real patches (the
    processor gets the saved ``max_patches``; zero rows pad); language: the
    decoder's ``hidden_states`` over the start token and the processor's
    ``decoder_input_ids``, cross-attending with the processor's patch mask."""
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    start = model.config.decoder_start_token_id
    max_patches = processor.image_processor.max_patches
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        # without special tokens, as transformers' Pix2Struct docs prompt it
        inputs = processor(
            images=[image],
            text=[prompt],
            return_tensors="pt",
            max_patches=max_patches,
            add_special_tokens=False,
        )
        decoder = torch.cat(
            [torch.tensor([[start]]), inputs["decoder_input_ids"]], dim=1
        )
        with torch.no_grad():
            out = model(
                flattened_patches=inputs["flattened_patches"],
                attention_mask=inputs["attention_mask"],
                decoder_input_ids=decoder,
                output_hidden_states=True,
                use_cache=False,
            )
        real = inputs["attention_mask"][0].bool().numpy()
        examples.append(
            Example(
                {
                    "vision": Tokens(
                        [_np(h[0])[real] for h in out.encoder_hidden_states]
                    ),
                    "language": _language(
                        decoder[0].numpy(),
                        out.decoder_hidden_states,
                        processor.tokenizer,
                    ),
                }
            )
        )
    return examples


def vision_encoder_decoder_reference(path, images, prompts):
    """Vision: the encoder's ``hidden_states`` (a ViT: CLS first, left out of
    ``mean``/``max``); projector: ``enc_to_dec_proj`` over the encoder's last
    hidden state; language: the decoder's ``hidden_states`` over the start
    token and the prompt's ids."""
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    tokenizer = processor.tokenizer
    start = model.config.decoder_start_token_id
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        pixels = processor.image_processor(images=[image], return_tensors="pt")
        ids = [start, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
        decoder = torch.tensor([ids])
        with torch.no_grad():
            out = model(
                pixel_values=pixels["pixel_values"],
                decoder_input_ids=decoder,
                output_hidden_states=True,
                use_cache=False,
            )
            projected = model.enc_to_dec_proj(out.encoder_last_hidden_state)
        vision = out.encoder_hidden_states
        pooled = np.arange(vision[0].shape[1]) >= 1
        examples.append(
            Example(
                {
                    "vision": Tokens([_np(h[0]) for h in vision], pooled=pooled),
                    "projector": Tokens([_np(projected[0])]),
                    "language": _language(
                        decoder[0].numpy(), out.decoder_hidden_states, tokenizer
                    ),
                }
            )
        )
    return examples
