"""Kosmos-2's reference: HF's own ``hidden_states``, image positions from its mask.

Kosmos-2's prompts hold no image token id: its processor marks the image's
positions in ``image_embeds_position_mask``, which is the reference's image
mask. Every token the processor adds to the tokenizer (``<image>``,
``</image>``, ``<grounding>``, the patch-index tokens...) is a marker, left
out of the text mask with the tokenizer's special tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from ._references import HF, Example, Tokens, _np

__all__ = ["kosmos2_5_reference", "kosmos2_reference"]


def kosmos2_reference(path, images, prompts):
    """Vision: the tower's ``hidden_states`` (a CLS first, left out of
    ``mean``/``max``); projector: ``get_image_features``; language: the
    model's ``hidden_states`` over the prompt as given."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    tokenizer = processor.tokenizer
    markers = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        with torch.no_grad():
            vision = model.vision_model(
                pixel_values=inputs["pixel_values"], output_hidden_states=True
            ).hidden_states
            features = model.get_image_features(inputs["pixel_values"]).pooler_output
            language = model(
                **inputs, output_hidden_states=True, use_cache=False
            ).hidden_states
        ids = inputs["input_ids"][0].numpy()
        image_mask = inputs["image_embeds_position_mask"][0].numpy().astype(bool)
        text_mask = ~image_mask & ~np.isin(ids, sorted(markers))
        pooled = np.arange(vision[0].shape[1]) >= 1
        examples.append(
            Example(
                {
                    "vision": Tokens([_np(h[0]) for h in vision], pooled=pooled),
                    "projector": Tokens([_np(features[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in language], image=image_mask, text=text_mask
                    ),
                }
            )
        )
    return examples


def kosmos2_5_reference(path, images, prompts):
    """Vision: the Pix2Struct-like tower's ``hidden_states`` over the image's
    real patches (the processor pads with zero rows, which the model's own
    forward masks); projector: ``get_image_features``; language: the model's
    ``hidden_states``. The processor gets the saved ``max_patches`` (its call
    otherwise uses its own default of 4096); the image positions are the
    mask's 1s (``<image>`` and ``</image>`` are -1 there)."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    tokenizer = processor.tokenizer
    markers = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    max_patches = processor.image_processor.max_patches
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(
            images=[image], text=[prompt], return_tensors="pt", max_patches=max_patches
        )
        patches = inputs["flattened_patches"]
        with torch.no_grad():
            vision = model.vision_model(
                flattened_patches=patches, output_hidden_states=True
            ).hidden_states
            features = model.get_image_features(patches).pooler_output
            language = model(
                **inputs, output_hidden_states=True, use_cache=False
            ).hidden_states
        real = (patches[0] != 0).any(dim=-1).numpy()
        ids = inputs["input_ids"][0].numpy()
        image_mask = inputs["image_embeds_position_mask"][0].numpy() == 1
        text_mask = ~image_mask & ~np.isin(ids, sorted(markers))
        examples.append(
            Example(
                {
                    "vision": Tokens([_np(h[0])[real] for h in vision]),
                    "projector": Tokens([_np(features[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in language], image=image_mask, text=text_mask
                    ),
                }
            )
        )
    return examples
