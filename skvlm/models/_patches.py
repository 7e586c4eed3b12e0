"""Vision towers that take each image already cut into patches: LFM2-VL's
SigLIP2 (NaFlex) tower, Gemma 4's and DiffusionGemma's tower.

Their processors flatten every image into a sequence of patches,
(images, patches, channels * patch**2), padded to one patch budget per batch:

- NaFlex (a tower whose ``forward`` takes ``spatial_shapes``): the real
  patches are marked in ``pixel_attention_mask`` and come row by row over the
  image's own grid (``spatial_shapes``), as in a SigLIP2 model alone
  (:class:`~skvlm.models._vision.Siglip2Adapter`, whose inputs and mask these
  are).
- Patch positions (a tower whose ``forward`` takes ``pixel_position_ids``,
  Gemma 4): each patch's (x, y) in ``image_position_ids``, padding at
  (-1, -1); the processor lays the patches row by row.

Each prompt holds one image, so row ``i`` of the tower's input is image ``i``,
unless the processor cut images into several rows (LFM2-VL's
``do_image_splitting``: tiles, then a thumbnail): then an image's tokens are
the real patches of all its rows, row after row (its tiles, then its
thumbnail), and ``mean`` and ``max`` pool over all of them.
The vision stage's entry 0 is the input of the first block (the patch
embeddings with their position embeddings), entry k the output of block k (the
tower's own ``output_hidden_states``), each holding the image's real patches
only, in the processor's order (row by row); padding is masked out of ``mean``
and ``max``. These towers have no class token. Gemma 4's pooler (average over
3 x 3 patches) and standardisation come after the last block: they are the
projector stage's part, not an entry of the vision stage.
"""

from __future__ import annotations

import inspect
from itertools import accumulate

import torch

from ..pooling import TokenMasks, pad_tokens
from ._base import Stack
from ._vision import naflex_inputs, naflex_valid

__all__ = ["PatchTowerMixin", "patch_tower_kind"]


def patch_tower_kind(tower):
    """``"naflex"``, ``"positions"`` or None: how ``tower`` takes its patches."""
    if tower is None:
        return None
    names = inspect.signature(tower.forward).parameters
    if "spatial_shapes" in names:
        return "naflex"
    if "pixel_position_ids" in names:
        return "positions"
    return None


def _bounds(counts):
    """(start, stop) of each image's rows."""
    stops = list(accumulate(counts))
    return zip([0, *stops[:-1]], stops, strict=True)


class PatchTowerMixin:
    """The vision stage of an adapter whose tower (``self.tower``, blocks
    ``self.vision_blocks``) takes patch sequences (``self.patch_tower``)."""

    def patch_valid(self, batch):
        if self.patch_tower == "naflex":
            return naflex_valid(batch)
        return (batch["image_position_ids"] != -1).all(dim=-1)

    def patch_rows(self, batch, valid):
        """How many tower rows each image has (None: one each).

        A processor that cuts an image into tiles (LFM2-VL's
        ``do_image_splitting``: tiles, then a thumbnail) gives it several
        consecutive rows. Every row's image tokens are its real patches over
        one fixed ratio (the model's patches per token), so the rows go to the
        images in order until each image's token count is reached.
        """
        tokens = self._image_counts(batch)
        if valid.shape[0] == len(tokens):
            return None
        patches = valid.sum(dim=-1).tolist()
        total_patches, total_tokens = sum(patches), sum(tokens)
        counts, row = [], 0
        for n_tokens in tokens:
            start, seen = row, 0
            while seen < n_tokens * total_patches and row < len(patches):
                seen += patches[row] * total_tokens
                row += 1
            if seen != n_tokens * total_patches or row == start:
                counts = None
                break
            counts.append(row - start)
        if counts is None or row != len(patches):
            raise ValueError(
                f"{self.family}: stage 'vision' is not available for this batch: "
                f"its {len(patches)} tower rows (tiles) do not map back to its "
                f"{len(tokens)} images by their image tokens. Load the processor "
                "with do_image_splitting=False (one row per image), or use "
                "stage='projector' or 'language'."
            )
        return counts

    def patch_stack(self, batch):
        valid = self.patch_valid(batch)
        counts = self.patch_rows(batch, valid)
        if counts is None:
            return self.tower_stack(
                self.vision_blocks, n_prefix=0, has_cls=False, valid=valid
            )
        lengths = [int(n.sum()) for n in valid.sum(dim=-1).split(counts)]

        def unpack(hidden):
            rows = [h[v] for h, v in zip(hidden, valid, strict=True)]
            images = [torch.cat(rows[a:b]) for a, b in _bounds(counts)]
            return pad_tokens(images)[0]

        length = torch.tensor(lengths, device=valid.device)
        real = torch.arange(max(lengths), device=valid.device) < length[:, None]
        return Stack(
            blocks=self.vision_blocks,
            masks=TokenMasks(valid=real, pooled=real),
            unpack=unpack,
        )

    def patch_forward(self, batch):
        if self.patch_tower == "naflex":
            return self.tower(**naflex_inputs(batch))
        return self.tower(
            pixel_values=batch["pixel_values"],
            pixel_position_ids=batch["image_position_ids"],
        )
