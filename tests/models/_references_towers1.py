"""HF references of the towers helper "towers1" opened: Ovis2, MiniCPM-V.

Projector and language come from :func:`._references.generic_reference`; the
vision stage is HF's own tower, run on one image at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from ._references import HF, Tokens, _np, generic_reference


def ovis2_reference(path, images, prompts):
    """Ovis2: its tower's ``hidden_states`` on the image's views (the global
    view, then its tiles), view after view. HF's last entry is the tower's
    last hidden state after its final RMS norm and the 2 x 2 merge
    (``hidden_stride``); the stack's last entry is the last block's output,
    read off that block by a hook and checked to give HF's last entry once
    normed and merged by hand."""
    examples = generic_reference(
        path, images, prompts, tower=None, nested=False, has_cls=False, placeholder=None
    )
    hf = HF(path)
    tower = hf.model.model.vision_tower
    stride = tower.config.hidden_stride
    seen = []
    for image, example in zip(images, examples, strict=True):
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        pixels = pixels["pixel_values"]
        seen.clear()
        hook = tower.transformer.encoder.layers[-1].register_forward_hook(
            lambda module, args, output: seen.append(output)
        )
        try:
            with torch.no_grad():
                hidden = list(tower(pixels, output_hidden_states=True).hidden_states)
        finally:
            hook.remove()
        (last,) = seen
        views, tokens, width = last.shape
        side = int(tokens**0.5)
        normed = tower.transformer.rms_norm(last).view(
            views, side // stride, stride, side // stride, stride, width
        )
        merged = normed.permute(0, 1, 3, 2, 4, 5).reshape(views, -1, stride**2 * width)
        torch.testing.assert_close(merged, hidden[-1])
        hidden[-1] = last
        example.stages["vision"] = Tokens([_np(h.reshape(-1, width)) for h in hidden])
        example.facts["views"] = views
    return examples


def shieldgemma2_reference(path, images, prompts):
    """ShieldGemma 2 as HF runs it: ``ShieldGemma2ForImageClassification``
    (its weights as the checkpoint holds them) and ``ShieldGemma2Processor``,
    each prompt given to it as the one policy to check (``custom_policies``),
    so HF builds the prompt with its own chat template. Vision: the tower's
    ``hidden_states``; projector: ``get_image_features``; language: the Gemma 3
    model's ``hidden_states``, all of the Gemma 3 model inside the classifier;
    ``facts["ids"]``: the prompt's token ids."""
    from transformers import AutoModelForImageClassification, AutoProcessor

    from ._references import Example, _special_ids

    classifier = AutoModelForImageClassification.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    core = classifier.model.model  # the Gemma 3 model inside the classifier
    token_id = classifier.config.image_token_id
    special = _special_ids(processor.tokenizer, token_id)
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(
            images=[image],
            custom_policies={"asked": prompt},
            policies=["asked"],
            return_tensors="pt",
        )
        with torch.no_grad():
            language = core(**inputs, output_hidden_states=True, use_cache=False)
            features = core.get_image_features(inputs["pixel_values"]).pooler_output
            vision = core.vision_tower(
                pixel_values=inputs["pixel_values"], output_hidden_states=True
            ).hidden_states
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == token_id
        text_mask = ~image_mask & ~np.isin(ids, sorted(special))
        examples.append(
            Example(
                {
                    "vision": Tokens([_np(h[0]) for h in vision]),
                    "projector": Tokens([_np(features[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in language.hidden_states],
                        image=image_mask,
                        text=text_mask,
                    ),
                },
                facts={"ids": ids},
            )
        )
    return examples


def minicpm_reference(path, images, prompts):
    """MiniCPM-V: ``get_image_features(..., output_hidden_states=True)`` on one
    image at a time (its views alone in the packed sequence: the global view,
    then the slices, each row by row). Entries up to the output of block
    ``insert_layer_id`` hold every view's patches; after it (unless the
    ``"4x"`` mode skips it) the tower's window merger has merged 2 x 2
    patches, so later entries hold a quarter as many tokens, which its merger
    reads as each view's halved grid row by row. HF's last entry is after the
    tower's final norm: the stack's last is the last block's output, read off
    that block by a hook and checked to give HF's once normed."""
    examples = generic_reference(
        path, images, prompts, tower=None, nested=False, has_cls=False, placeholder=None
    )
    hf = HF(path)
    core = hf.model.model
    tower = core.vision_tower
    config = tower.config
    merged_after = (
        config.insert_layer_id if hf.model.config.downsample_mode != "4x" else None
    )
    seen = []
    for image, example in zip(images, examples, strict=True):
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        sizes = pixels["target_sizes"]
        seen.clear()
        hook = tower.encoder.layers[-1].register_forward_hook(
            lambda module, args, output: seen.append(output)
        )
        try:
            with torch.no_grad():
                hidden = list(
                    core.get_image_features(
                        pixels["pixel_values"], sizes, output_hidden_states=True
                    ).hidden_states
                )
        finally:
            hook.remove()
        (last,) = seen
        torch.testing.assert_close(tower.post_layernorm(last), hidden[-1])
        hidden[-1] = last
        patches = int(sizes.prod(-1).sum())
        for k, state in enumerate(hidden):
            merged = merged_after is not None and k > merged_after + 1
            assert state.shape[1] == (patches // 4 if merged else patches), k
        example.stages["vision"] = Tokens([_np(h[0]) for h in hidden])
        example.facts["views"] = len(sizes)
    return examples
