"""Mllama's reference: HF's own encoder outputs and cross-attention states.

Mllama's vision model returns no ``hidden_states`` of its own (its
``output_hidden_states`` is empty in transformers 5); each of its two encoders
(``transformer``, the local one, and ``global_transformer``) returns every
layer's output in a ``BaseModelOutput``, read here with forward hooks on the
encoders, and checked against the tower's ``last_hidden_state`` (the global
encoder's output, then the local layers of ``intermediate_layers_indices``).
The projector's tokens are the ``cross_attention_states`` HF's own forward
pass hands its language model. Valid tiles come from the image processor's
``num_tiles``; each tile is a CLS and its patches (padding patches dropped).
"""

from __future__ import annotations

import numpy as np
import torch

from ._references import HF, Tokens, _np, chat, generic_reference

__all__ = ["mllama_reference"]


def _encoder_states(model, inputs):
    """HF's per-layer states of both encoders, the tower's output, the
    cross-attention states the language model receives."""
    vision = model.model.vision_model
    seen = {}

    def keep(name):
        def hook(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[name] = (hidden, output.hidden_states)

        return hook

    def keep_states(module, args, kwargs):
        seen["cross"] = kwargs["cross_attention_states"]

    handles = [
        vision.transformer.register_forward_hook(keep("local"), with_kwargs=True),
        vision.global_transformer.register_forward_hook(
            keep("global"), with_kwargs=True
        ),
        model.model.language_model.register_forward_pre_hook(
            keep_states, with_kwargs=True
        ),
    ]
    try:
        with torch.no_grad():
            tower = vision(
                pixel_values=inputs["pixel_values"],
                aspect_ratio_ids=inputs["aspect_ratio_ids"],
                aspect_ratio_mask=inputs["aspect_ratio_mask"],
            ).last_hidden_state
            model.model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    local_in, local = seen["local"]
    return [local_in, *local, *seen["global"][1]], len(local), tower, seen["cross"]


def mllama_reference(path, images, prompts):
    """Language: the generic reference; vision and projector: see module doc."""
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=True,
        has_cls=False,
        placeholder="<|image|>",
        projector=False,
    )
    hf = HF(path)
    config = hf.model.config.vision_config
    patches = (config.image_size // config.patch_size) ** 2 + 1  # CLS + patches
    for example, image, prompt in zip(examples, images, prompts, strict=True):
        n_tiles = hf.processor.image_processor(images=[[image]])["num_tiles"][0][0]
        text = hf.processor.apply_chat_template(
            chat(prompt), add_generation_prompt=True, tokenize=False
        )
        inputs = dict(hf.processor(images=[[image]], text=[text], return_tensors="pt"))
        states, n_local, tower, cross = _encoder_states(hf.model, inputs)
        max_tiles = inputs["pixel_values"].shape[2]
        dim = config.hidden_size

        states = [
            h[0].reshape(max_tiles, -1, h.shape[-1])[:n_tiles, :patches].flatten(0, 1)
            for h in states
        ]
        # what HF's own output says: the global encoder's last states, then
        # the intermediate local layers stacked on a last axis (entry i + 1 is
        # local layer i's output)
        output = tower[0, 0, :n_tiles].reshape(-1, tower.shape[-1])
        torch.testing.assert_close(output[:, :dim], states[-1])
        indices = config.intermediate_layers_indices
        intermediate = output[:, dim:].reshape(len(output), dim, len(indices))
        for j, i in enumerate(indices):
            torch.testing.assert_close(intermediate[..., j], states[i + 1])
        n_tokens = len(states[0])
        example.stages["vision"] = Tokens(
            [_np(h) for h in states], pooled=np.arange(n_tokens) % patches != 0
        )
        # (prompts x tiles, tokens, dim): the cross-attention layers view it
        # as (prompts, tiles x tokens, dim)
        cross = cross.reshape(1, -1, cross.shape[-1])
        example.stages["projector"] = Tokens([_np(cross[0, :n_tokens])])
        example.facts.update(tiles=n_tiles, local_layers=n_local)
    return examples
