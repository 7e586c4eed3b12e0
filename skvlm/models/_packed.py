"""Packed vision towers (Qwen-style), unpacked per image, for the generic adapter.

A packed tower takes the patches of every image of a batch as one
(patches, dim) tensor, with attention kept within each image, and is told the
images apart by a patch grid per image (``image_grid_thw``: frames, rows,
columns). Qwen2-VL's tower is one (its own adapter, :mod:`skvlm.models._qwen`);
so are the towers of Cosmos3-Edge, EXAONE 4.5, HyperCLOVA X Vision v2,
LLaVA-OneVision-1.5, Ovis2.5, PaddleOCR-VL, the Qwen2.5-Omni and Qwen3-Omni
thinkers and VideoLLaMA3, which the generic adapter serves through
:class:`PackedTowerMixin` with nothing written per family. What it needs is
read off the model:

- the grid: the argument of ``get_image_features`` named ``*grid_thw``
  (or ``*grid_hw``, rows and columns of one frame: Nemotron Omni's RADIO;
  or ``target_sizes``, rows and columns of each view: MiniCPM-V)
  (an image has ``t * h * w`` patches); a grid that counts the language
  model's image tokens (``Traits.grid_unit="token"``, Inkling 2: each token
  ``m x m`` patches of the tower's ``spatial_merge_size`` m, packed token by
  token) is scaled to patches;
- views: a grid of more rows than the batch has images (MiniCPM-V packs
  every view of every image: a global view, then the slices) is split into
  images by their image tokens: each view gives the language model
  ``patches / r`` tokens for one ratio ``r`` over the batch (MiniCPM-V: 16,
  or 4 in its "4x" mode), and an image's views are the next ones, in order,
  that make up its row's count of image tokens;
- merged entries: a tower that merges its tokens between blocks (MiniCPM-V's
  window-attention merger after block ``insert_layer_id`` merges 2 x 2
  patches, in raster order of the merged grid: its merger and the model's
  read them so) gives its later entries a coarser grid; each entry's grid is
  read off its own token count (``s`` x ``s`` patches merged into one token:
  every view's grid divided by ``s``), for a tower that packs its patches
  row by row, without windows or class tokens;
- the order of an image's patches: the processor packs them merge block by
  merge block (``(t, h / m, w / m, m, m)``) for the tower's merge size ``m``:
  a per-image ``*merge_sizes`` argument of ``get_image_features`` where it
  has one (VideoLLaMA3), else the tower's ``spatial_merge_size`` (1, that is
  raster order, for a tower without one: PaddleOCR-VL);
- windows: a tower with a ``window_size`` (Qwen2.5-VL's windowed attention:
  EXAONE 4.5, HyperCLOVA X, Ovis2.5, Qwen2.5-Omni; Muse Glimmer and Muse
  Spark) permutes its units, ``spatial_merge_size ** 2`` patches each, into
  window order before its first block and back only after its last, so
  every intermediate state is window-permuted; the permutation is
  transformers' own (:func:`skvlm._transformers_compat.vision_window_index`).
  Qwen2.5-VL's unit is a merge block; Muse's tower (``spatial_merge_size``
  1) permutes single patches, which its processor packs row by row (its
  ``merge_size`` only rounds the image's size, and the tower merges 2 x 2
  patches after its blocks);
- class tokens: a tower whose traits say ``class_token="first"``
  (LLaVA-OneVision-1.5) puts one before each frame's patches.

Vision entries: entry 0 is the input of the first block, entry k the output of
block k (the tower's own ``output_hidden_states``, before any final norm or
merger), split per image and put in **raster patch order** (frames, then rows,
then columns of the image's patch grid; a class token first, where the tower
has one), whatever order the tower computes them in; an image of several
views holds its views' tokens view after view, in the processor's order.
``mean`` and ``max`` pool the image's own patches (never a class token, another image's patches or
padding); an int position counts the image's tokens in that order; ``cls``
is the class token where there is one. The tower runs as
``get_image_features`` runs it (its input layout, its extra arguments), and
the pass stops after the deepest block asked for.
"""

from __future__ import annotations

import inspect

import torch

from .._transformers_compat import vision_window_index
from ..pooling import TokenMasks, pad_tokens
from ._base import Stack
from ._traits import resolve_path

__all__ = ["NO_GRID", "PackedTowerMixin", "raster_gather"]

#: Why the vision stage of a packed tower without a per-image patch grid is refused.
NO_GRID = (
    "its tower packs the patches of all images in one sequence and "
    "get_image_features takes no patch grid (*grid_thw) to split it"
)


def raster_gather(grid, merges, *, window=None, unit=None, n_prefix=0):
    """Index taking a packed tower's tokens to raster order, per image.

    Parameters
    ----------
    grid : torch.Tensor of shape (n_images, 3)
        Each image's patch grid (frames, rows, columns).
    merges : sequence of int
        Each image's merge size m: the processor packs an image's patches as
        (frames, rows / m, columns / m, m, m).
    window : torch.Tensor or None
        The permutation the tower's blocks see, in units of ``unit``
        consecutive tokens of the processor's packing (packed unit j holds
        processor unit ``window[j]``), or None.
    unit : int or None
        Tokens per unit the window permutation moves: the tower's own merge
        block, ``spatial_merge_size ** 2`` (Qwen2.5-VL: 4; a tower that
        permutes single patches, Muse Glimmer's: 1). None: ``merges[0] ** 2``.
    n_prefix : int, default=0
        Class tokens the tower puts before each frame's patches.

    Returns
    -------
    gather : torch.Tensor
        ``packed[gather]`` holds every image's tokens in raster order, image
        after image (each frame's class tokens first).
    lengths : list of int
        Each image's number of tokens.
    patch : torch.Tensor of bool
        For each position of ``packed[gather]``, whether it holds a patch
        (False on class tokens).

    Examples
    --------
    >>> import torch
    >>> from skvlm.models._packed import raster_gather
    >>> gather, lengths, _ = raster_gather(torch.tensor([[1, 2, 4]]), [2])
    >>> gather.tolist(), lengths
    ([0, 1, 4, 5, 2, 3, 6, 7], [8])
    """
    if window is not None and n_prefix:
        raise ValueError("a windowed tower with class tokens is not supported")
    order, patch, lengths, offset = [], [], [], 0
    for (t, h, w), m in zip(grid.tolist(), merges, strict=True):
        within = torch.arange(h * w).view(h // m, w // m, m, m).permute(0, 2, 1, 3)
        frame = torch.arange(n_prefix + h * w)
        for f in range(t):
            start = offset + f * len(frame)
            order.append(frame[:n_prefix] + start)
            order.append(within.reshape(-1) + start + n_prefix)
            patch.append(frame >= n_prefix)
        lengths.append(t * len(frame))
        offset += lengths[-1]
    gather = torch.cat(order)
    if window is not None:
        # Blocks see units in window order: packed unit j holds processor
        # unit window[j], so processor unit b sits at argsort[b].
        unit = merges[0] ** 2 if unit is None else unit
        position = torch.argsort(window.cpu())
        unwindow = (position[:, None] * unit + torch.arange(unit)).reshape(-1)
        gather = unwindow[gather]
    return gather.to(grid.device), lengths, torch.cat(patch)


def _argument(method, suffix):
    """The name of ``method``'s parameter ending in ``suffix``, or None."""
    names = inspect.signature(method).parameters
    return next((name for name in names if name.endswith(suffix)), None)


def _grid_argument(method):
    """The patch-grid argument: ``*grid_thw`` (frames, rows, columns), or
    ``*grid_hw`` (rows, columns: Nemotron Omni's RADIO tower), or
    ``target_sizes`` (rows, columns of each view: MiniCPM-V)."""
    return (
        _argument(method, "grid_thw")
        or _argument(method, "grid_hw")
        or _argument(method, "target_sizes")
    )


def _merge_scale(grid, tokens):
    """``s`` such that ``tokens`` is every view's (frames, rows / s, columns /
    s) grid, s > 1; None if no such ``s``."""
    patches = int(grid.prod(-1).sum())
    if tokens <= 0 or patches % tokens:
        return None
    scale = round((patches // tokens) ** 0.5)
    if scale < 2 or scale * scale * tokens != patches:
        return None
    if bool((grid[:, 1:] % scale).any()):
        return None
    return scale


class PackedTowerMixin:
    """The vision stage of a generic-adapter family with a packed tower.

    Uses the adapter's ``tower``, ``vision_blocks``, ``base`` (with
    ``get_image_features``), ``has_cls`` and ``family``; see the module doc.
    """

    def packed_unavailable(self):
        """Why the packed tower cannot be read per image, or None."""
        method = getattr(self.base, "get_image_features", None)
        if method is None or _grid_argument(method) is None:
            return NO_GRID
        if self.has_cls and self.packed_windowed():
            return (
                "its tower packs the patches of all images in one sequence, in "
                "attention windows, with class tokens that skvlm cannot place"
            )
        return None

    def packed_windowed(self):
        """Whether the tower's blocks see the merge blocks in window order."""
        return all(
            hasattr(self.tower, name)
            for name in ("window_size", "patch_size", "spatial_merge_size")
        )

    def _packed_inputs(self, batch):
        method = self.base.get_image_features
        names = inspect.signature(method).parameters
        skip = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
        return {k: v for k, v in batch.items() if k in names and k not in skip}

    def packed_layout(self, batch, tokens=None):
        """``(gather, lengths, patch)`` of :func:`raster_gather` for ``batch``,
        one length per image (its views together).

        ``tokens``: the number of tokens of the entry read, when it may hold
        a merged grid (see the module doc); None where it cannot be read so.
        """
        method = self.base.get_image_features
        grid = batch[_grid_argument(method)]
        if grid.shape[-1] == 2:  # (rows, columns): one frame per image
            grid = torch.cat([torch.ones_like(grid[:, :1]), grid], dim=1)
        views = self.packed_views(batch, grid)
        merge_key = _argument(method, "merge_sizes")
        if merge_key is not None and merge_key in batch:
            merges = [int(m) for m in batch[merge_key].tolist()]
        elif self.traits.grid_unit == "token":
            # the grid counts language tokens of m x m patches, packed token
            # by token (Inkling 2)
            m = int(self.tower.config.spatial_merge_size)
            grid = grid * grid.new_tensor([1, m, m])
            merges = [m] * len(grid)
        else:
            merges = [int(getattr(self.tower, "spatial_merge_size", 1))] * len(grid)
        window = unit = None
        if self.packed_windowed():
            window = vision_window_index(self.tower, grid)
            unit = int(self.tower.spatial_merge_size) ** 2
        n_prefix = self.packed_prefix()
        if tokens is not None and tokens != int((grid.prod(-1) + n_prefix).sum()):
            scale = _merge_scale(grid, tokens)
            if scale is None or window is not None or n_prefix or set(merges) != {1}:
                return None
            grid = torch.cat([grid[:, :1], grid[:, 1:] // scale], dim=1)
        gather, lengths, patch = raster_gather(
            grid, merges, window=window, unit=unit, n_prefix=n_prefix
        )
        ends = torch.tensor(views).cumsum(0).tolist()
        lengths = [
            sum(lengths[end - n : end]) for n, end in zip(views, ends, strict=True)
        ]
        return gather, lengths, patch

    def packed_views(self, batch, grid):
        """Rows of the patch grid per image: one each, or, where the grid has
        more rows than the batch has images, each image's views (see the
        module doc)."""
        n_images = batch["input_ids"].shape[0]
        if len(grid) == n_images:
            return [1] * n_images
        tokens = self._image_counts(batch)
        patches = grid.prod(-1).tolist()
        total = sum(tokens)
        ratio = sum(patches) // total if total else 0
        views, done = [], 0
        for count in tokens:
            start, got = done, 0
            while got < count and done < len(patches):
                got += patches[done] // ratio
                done += 1
            if got != count:
                break
            views.append(done - start)
        if ratio == 0 or len(views) != n_images or done != len(patches):
            raise ValueError(
                f"{self.family}: stage 'vision' is not available: its "
                f"{len(patches)} views do not map back to the {n_images} images "
                "by their image tokens. Use stage='projector' or stage='language', "
                "and report the model id."
            )
        return views

    def packed_prefix(self):
        """Tokens the tower puts before each frame's patches: one class token
        (``has_cls``), or as many as ``Traits.prefix_tokens``' rows (RADIO's
        class and register tokens)."""
        path = getattr(self.traits, "prefix_tokens", None)
        if path is None:
            return int(self.has_cls)
        return int(resolve_path(self.model, path).shape[0])

    def packed_stack(self, batch):
        family = self.family
        layouts = {}  # per token count: an entry's gather, lengths and masks
        current = {}

        def add(found):
            gather, lengths, patch = found
            device = gather.device
            counts = torch.tensor(lengths, device=device)
            valid = torch.arange(max(lengths), device=device) < counts[:, None]
            pooled = valid.clone()
            pooled[valid] = patch.to(device)
            masks = TokenMasks(valid=valid, pooled=pooled, has_cls=self.has_cls)
            layouts[len(gather)] = (gather, lengths, masks)

        def layout(tokens):
            if tokens not in layouts:
                found = self.packed_layout(batch, tokens)
                if found is None or len(found[0]) != tokens:
                    raise ValueError(
                        f"{family}: stage 'vision' is not available: its tower "
                        f"gave {tokens} tokens, which are not the patches and "
                        "class tokens of the batch's images, nor a merged grid "
                        "of them. Use stage='projector' or stage='language', and "
                        "report the model id."
                    )
                add(found)
            return layouts[tokens]

        add(self.packed_layout(batch))  # the views are checked before the pass

        def unpack(hidden):
            flat = hidden.reshape(-1, hidden.shape[-1])
            gather, lengths, current["masks"] = layout(len(flat))
            return pad_tokens(torch.split(flat[gather], lengths))[0]

        return Stack(
            blocks=self.vision_blocks,
            masks=lambda hidden: current["masks"],
            unpack=unpack,
            entry_masks=True,
        )

    def packed_forward(self, batch):
        return self.base.get_image_features(**self._packed_inputs(batch))
