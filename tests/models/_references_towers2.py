"""HF references of towers read view by view or encoder by encoder.

Projector and language come from :func:`._references.generic_reference`; the
vision stage is HF's own, on one image at a time:

- Molmo 2: the tower's ``hidden_states`` on the image's views (a
  low-resolution view, then its crops: the rows of ``pixel_values``, each a
  sequence of patches), view after view;
- a SAM encoder followed by a second encoder (DeepSeek-OCR-2,
  Unlimited-OCR), on the global view: SAM's own ``hidden_states`` from HF's
  SAM module called alone, each (height, width, channels) map row by row,
  then the tower's own ``hidden_states`` (the second encoder's) after its
  input, one list of entries.
"""

from __future__ import annotations

import torch

from ._references import HF, Tokens, _np, generic_reference


def views_reference(path, images, prompts):
    """Molmo 2: every view's patches, view after view (low-res view first)."""
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=False,
        has_cls=False,
        placeholder="<image>",
    )
    hf = HF(path)
    tower = hf.model.model.vision_tower
    for image, example in zip(images, examples, strict=True):
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        views = pixels["pixel_values"]
        assert int(pixels["image_num_crops"][0]) == len(views)
        with torch.no_grad():
            states = tower(views, output_hidden_states=True).hidden_states
        example.stages["vision"] = Tokens([_np(h.flatten(0, 1)) for h in states])
        example.facts["views"] = len(views)
    return examples


def sam_then_encoder_reference(path, images, prompts):
    """SAM's ``hidden_states`` (HF's SAM module alone), then the tower's (the
    second encoder's), on the image's global view (``pixel_values``)."""
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=False,
        has_cls=False,
        placeholder="<image>",
    )
    hf = HF(path)
    tower = hf.model.model.vision_tower
    for image, example in zip(images, examples, strict=True):
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        view = pixels["pixel_values"]
        assert len(view) == 1
        # HF's SAM hidden_states end with its neck's output (last_hidden_state)
        # in place of its last block's: that block is read by a hook
        seen = []
        hook = tower.sam_encoder.layers[-1].register_forward_hook(
            lambda module, args, output, seen=seen: seen.append(output)
        )
        try:
            with torch.no_grad():
                sam = tower.sam_encoder(view, output_hidden_states=True).hidden_states
        finally:
            hook.remove()
        with torch.no_grad():
            second = tower(view, output_hidden_states=True).hidden_states
        sam = [*sam[:-1], seen[0]]
        states = [_np(h[0].reshape(-1, h.shape[-1])) for h in sam]
        # the second encoder's blocks: its input (SAM's neck output and the
        # queries or class token) is no entry
        states += [_np(h[0]) for h in second[1:]]
        example.stages["vision"] = Tokens(states)
        example.facts["sam_entries"] = len(sam)
    return examples
