"""HF references of the torchvision-only families: Llama 4 and Phi-4-multimodal.

As in ``_references``: transformers alone, one example at a time, tokens
named by hand. These run in the torchvision world (their image processors
exist only with torchvision).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from skvlm.testing._generative import load_processor

from ._references import HF, Example, Tokens, _np, _special_ids, chat


def _flat(states):
    return [_np(h.reshape(-1, h.shape[-1])) for h in states]


def llama4_reference(path, images, prompts):
    """Vision: every tile of the image (its tiles, then the global view when it
    has several), tile after tile; each tile's class token, which Llama 4's
    tower appends after the patches, left out of mean/max. Projector:
    ``get_image_features`` (4 tokens per tile). Language: HF's hidden_states."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    token_id = model.config.image_token_id
    special = _special_ids(processor.tokenizer, token_id)
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        text = processor.apply_chat_template(
            chat(prompt), add_generation_prompt=True, tokenize=False
        )
        inputs = dict(processor(images=[image], text=[text], return_tensors="pt"))
        # the processor normalises in bfloat16; the model runs in float32
        inputs["pixel_values"] = inputs["pixel_values"].float()
        with torch.no_grad():
            language = model(
                **inputs, output_hidden_states=True, use_cache=False
            ).hidden_states
            pixels = inputs["pixel_values"]
            features = model.get_image_features(pixels).pooler_output
            vision = model.vision_model(pixels, output_hidden_states=True)
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == token_id
        per_tile = vision.hidden_states[0].shape[1]
        states = _flat(vision.hidden_states)
        assert image_mask.sum() == features.shape[0] * features.shape[1]
        examples.append(
            Example(
                {
                    "vision": Tokens(
                        states,
                        pooled=np.arange(len(states[0])) % per_tile != per_tile - 1,
                    ),
                    "projector": Tokens(_flat([features])),
                    "language": Tokens(
                        [_np(h[0]) for h in language],
                        image=image_mask,
                        text=~image_mask & ~np.isin(ids, sorted(special)),
                    ),
                },
                facts={"tiles": len(pixels)},
            )
        )
    return examples


def phi4_multimodal_reference(path, images, prompts):
    """Vision: the tower on the image's views (global view, then its crops),
    real patches only in mean/max. Projector: what the model writes at the
    image positions (language entry 0 there). Language: HF's hidden_states.

    Eager attention: transformers' SDPA path runs this tower causally when a
    batch has no padded patch (see ``skvlm.models._phi4``); eager is
    bidirectional, as HF's SDPA is whenever a mask is present.
    """
    model = AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager"
    ).eval()
    processor = load_processor(path)
    token_id = model.config.vision_config.image_token_id
    special = _special_ids(processor.tokenizer, token_id)
    tower = model.model.embed_tokens_extend.image_embed.img_processor
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        # the turn format of the model card
        text = f"<|user|><|image|>{prompt}<|end|><|assistant|>"
        inputs = dict(processor(images=[image], text=[text], return_tensors="pt"))
        with torch.no_grad():
            language = model.model(
                **inputs, output_hidden_states=True, use_cache=False
            ).hidden_states
            crops = inputs["image_pixel_values"][0]
            patches = inputs["image_attention_mask"][0].bool()
            vision = tower(
                crops, patch_attention_mask=patches, output_hidden_states=True
            )
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == token_id
        entry0 = _np(language[0][0])
        examples.append(
            Example(
                {
                    "vision": Tokens(
                        _flat(vision.hidden_states),
                        pooled=patches.reshape(-1).numpy(),
                    ),
                    "projector": Tokens([entry0[image_mask]]),
                    "language": Tokens(
                        [_np(h[0]) for h in language],
                        image=image_mask,
                        text=~image_mask & ~np.isin(ids, sorted(special)),
                    ),
                },
                facts={"views": len(crops)},
            )
        )
    return examples
