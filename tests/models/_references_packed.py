"""HF references of the recipe-built families with a packed (Qwen-style) tower.

Projector and language come from :func:`._references.generic_reference`. The
vision stage is HF's own: ``get_image_features(..., output_hidden_states=True)``
on one image at a time (nothing else in its packed sequence), its
``hidden_states`` taken apart here by hand:

- entry 0 is the input of the first block, entry k the output of block k; the
  last is read off the last block by a hook, since HF's last entry is not always
  its output (LLaVA-OneVision-1.5 drops its class token there, Dots 3 Note
  gives its final norm's output);
- a windowed tower's states are window-permuted: the permutation is recovered
  by matching entry 0 to the tower's patch embeddings before it permutes them
  (the output of its embedding module, named per family);
- the patches, in the processor's packing order (merge blocks of ``merge`` x
  ``merge`` patches contiguous; ``merge=1`` is raster), are put in raster
  order with ``_references._packed_positions``; a class token stays first.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ._references import HF, Tokens, _np, _packed_positions, generic_reference


def _module(model, path):
    for name in path.split("."):
        model = getattr(model, name)
    return model


def _raster(patches, grid, merge):
    rows, cols = _packed_positions(grid, merge).T
    return patches[torch.argsort(rows * int(grid[0, 2]) + cols)]


def packed_reference(
    path,
    images,
    prompts,
    *,
    tower,
    blocks,
    placeholder="<image>",
    merge=2,
    embed=None,
    has_cls=False,
    token_grid=False,
):
    """``tower``, ``blocks``: paths of the vision tower (from the loaded model)
    and of its blocks (from the tower); ``embed``: the path, from the tower, of
    the module whose output the windowed tower permutes (None: no windows);
    ``token_grid``: the processor's grid counts merged tokens of ``merge`` x
    ``merge`` patches (Inkling 2's tower docs), not patches."""
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=False,
        has_cls=False,
        placeholder=placeholder,
    )
    hf = HF(path)
    model = hf.model
    visual = _module(model, tower)
    last_block = _module(visual, blocks)[-1]
    method = model.model.get_image_features
    names = inspect.signature(method).parameters
    n_cls = int(has_cls)
    for image, example in zip(images, examples, strict=True):
        pixels = dict(hf.processor.image_processor(images=[image], return_tensors="pt"))
        grid = pixels["image_grid_thw"]
        if token_grid:
            grid = grid * torch.tensor([1, merge, merge])
        seen = {}
        handles = [
            last_block.register_forward_hook(
                lambda module, args, output, seen=seen: seen.setdefault("last", output)
            )
        ]
        if embed is not None:
            handles.append(
                _module(visual, embed).register_forward_hook(
                    lambda module, args, output, seen=seen: seen.setdefault(
                        "embedded", output
                    )
                )
            )
        with torch.no_grad():
            out = method(
                **{k: v for k, v in pixels.items() if k in names},
                output_hidden_states=True,
            )
        for handle in handles:
            handle.remove()
        hidden = [h.reshape(-1, h.shape[-1]) for h in out.hidden_states]
        # the last entry is the last block's output: HF's hidden_states[-1] is
        # the tower's last_hidden_state, after its merger (Qwen) or its final
        # norm (ERNIE 4.5-VL's ln, Dots 3 Note's norm)
        hidden[-1] = seen["last"].reshape(-1, hidden[0].shape[-1])
        if embed is not None:
            embedded = seen["embedded"].reshape(hidden[0].shape)
            permutation = torch.cdist(hidden[0], embedded).argmin(dim=1)
            assert len(set(permutation.tolist())) == len(permutation)
            hidden = [h[torch.argsort(permutation)] for h in hidden]
            example.facts["permuted"] = bool(
                (permutation != torch.arange(len(permutation))).any()
            )
        assert int(grid[0, 0]) == 1  # an image is one frame
        states = [
            _np(torch.cat([h[:n_cls], _raster(h[n_cls:], grid, merge)])) for h in hidden
        ]
        pooled = np.arange(len(states[0])) >= n_cls
        example.stages["vision"] = Tokens(states, pooled=pooled)
        example.facts["patches"] = int(grid.prod())
    return examples
