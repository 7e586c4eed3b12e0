"""UDOP's and PP-FormulaNet's references: HF's own hidden states, tokens told
apart by hand.

UDOP's encoder reads the prompt's words (each with the box ``[0, 0, 0, 0]``),
then the image's patches that no word's box centre covers, zero-padded back
to the full grid; HF's encoder returns the mask of that sequence. The
reference takes that mask from HF's own encoder output, and orders each
entry's tokens as skvlm documents them: the patches, then the words.
"""

from __future__ import annotations

import numpy as np
import torch

from ._references import HF, Example, Tokens, _np

__all__ = ["pp_formulanet_reference", "udop_reference"]


def udop_reference(path, images, prompts):
    """Vision: ``encoder_hidden_states`` at the patch positions HF's mask
    keeps; language: the same entries over the patches, then the words (the
    decoder is not the stage)."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    start = torch.tensor([[model.config.decoder_start_token_id]])
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        words = prompt.split()
        inputs = processor(
            images=[image],
            text=[words],
            boxes=[[[0, 0, 0, 0]] * len(words)],
            return_tensors="pt",
        )
        with torch.no_grad():
            out = model(**inputs, decoder_input_ids=start, output_hidden_states=True)
            mask = model.get_encoder()(**inputs).attention_mask[0].numpy()
        n_words = inputs["input_ids"].shape[1]
        patches = mask[n_words:].astype(bool)
        states = out.encoder_hidden_states
        vision = [_np(h[0, n_words:])[patches] for h in states]
        language = [
            np.concatenate([v, _np(h[0, :n_words])])
            for v, h in zip(vision, states, strict=True)
        ]
        ids = inputs["input_ids"][0].numpy()
        n_patches = len(vision[0])
        image_mask = np.arange(n_patches + n_words) < n_patches
        text_mask = np.concatenate(
            [np.zeros(n_patches, bool), ~np.isin(ids, sorted(hf.specials))]
        )
        examples.append(
            Example(
                {
                    "vision": Tokens(vision),
                    "language": Tokens(language, image=image_mask, text=text_mask),
                },
                facts={"patches": n_patches},
            )
        )
    return examples


def pp_formulanet_reference(path, images, prompts):
    """Vision: the encoder's ``encoder_hidden_states``, each (height, width)
    map read row by row; projector: the encoder's ``pooler_output`` (what the
    decoder cross-attends to); language: ``decoder_hidden_states`` over
    ``</s> <s>`` (the decoder start token, then BOS, as HF's
    ``shift_tokens_right`` makes of a labelled ``<s> ... </s>``) and the
    prompt's tokens."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    tokenizer = processor.tokenizer
    start = [model.config.text_config.decoder_start_token_id, tokenizer.bos_token_id]
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(images=[image], return_tensors="pt")
        ids = start + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(
                **inputs,
                decoder_input_ids=torch.tensor([ids]),
                output_hidden_states=True,
            )
            features = model.get_encoder()(**inputs).pooler_output
        text = np.arange(len(ids)) >= len(start)
        text &= ~np.isin(ids, sorted(hf.specials))
        examples.append(
            Example(
                {
                    "vision": Tokens(
                        [_np(h[0].flatten(0, 1)) for h in out.encoder_hidden_states]
                    ),
                    "projector": Tokens([_np(features[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in out.decoder_hidden_states], text=text
                    ),
                }
            )
        )
    return examples
