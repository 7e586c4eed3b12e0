"""HF references of the towers helper "towers1" opened: Ovis2, MiniCPM-V.

Projector and language come from :func:`._references.generic_reference`; the
vision stage is HF's own tower, run on one image at a time.
"""

from __future__ import annotations

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
