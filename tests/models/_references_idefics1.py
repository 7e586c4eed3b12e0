"""IDEFICS (v1)'s reference: HF's own forward pass, read by hooks.

The prompt is written the way HF's IDEFICS examples write it, a list of text
and image: ``["User:", image, f"{prompt}\\nAssistant:"]``. IDEFICS's tower
returns no ``hidden_states`` of its own: each of its encoder's blocks is read
by a forward hook during HF's pass over image and prompt (the encoder's input
by a pre-hook), and the last block's output is checked against the tower's
``last_hidden_state``. The projector's tokens are the ``image_hidden_states``
HF hands its first gated cross-attention layer (the resampler's latents).
The language stage is the model's ``hidden_states``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._references import HF, Example, Tokens, _np, _special_ids

__all__ = ["idefics1_reference"]


def _pass(model, inputs):
    """HF's pass: the tower's blocks, the cross-attention's image states and
    the language model's ``hidden_states``."""
    core = model.model
    encoder = core.vision_model.encoder
    seen = {"blocks": []}

    def keep_input(module, args, kwargs):
        seen["input"] = kwargs["inputs_embeds"]

    def keep_block(module, args, output):
        seen["blocks"].append(output)

    def keep_image(module, args, kwargs):
        seen["image"] = args[2]  # (hidden_states, mask, image_hidden_states)

    handles = [
        encoder.register_forward_pre_hook(keep_input, with_kwargs=True),
        *(block.register_forward_hook(keep_block) for block in encoder.layers),
        core.gated_cross_attn_layers[0].register_forward_pre_hook(
            keep_image, with_kwargs=True
        ),
    ]
    try:
        with torch.no_grad():
            out = core(**inputs, output_hidden_states=True, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        tower = core.vision_model(inputs["pixel_values"][0]).last_hidden_state
    states = [seen["input"], *seen["blocks"]]
    torch.testing.assert_close(states[-1], tower)
    return states, seen["image"], out.hidden_states


def idefics1_reference(path, images, prompts):
    """Vision: the tower's blocks (a CLS first, left out of ``mean``/``max``);
    projector: the cross-attention's image states; language: ``hidden_states``,
    the image mask at the one ``<image>`` token."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    token_id = processor.image_token_id
    special = _special_ids(processor.tokenizer, token_id)
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        items = ["User:", image, f"{prompt}\nAssistant:"]
        inputs = dict(processor(text=[items], return_tensors="pt"))
        vision, cross, language = _pass(model, inputs)
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == token_id
        assert image_mask.sum() == 1
        text_mask = ~image_mask & ~np.isin(ids, sorted(special))
        pooled = np.arange(vision[0].shape[1]) >= 1
        examples.append(
            Example(
                {
                    "vision": Tokens([_np(h[0]) for h in vision], pooled=pooled),
                    "projector": Tokens([_np(cross[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in language], image=image_mask, text=text_mask
                    ),
                },
                facts={"projector_tokens": cross.shape[1]},
            )
        )
    return examples
