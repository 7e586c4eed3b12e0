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

Each prompt holds one image, so row ``i`` of the tower's input is image ``i``;
a batch whose processor cut images into several rows (LFM2-VL's
``do_image_splitting``: tiles and a thumbnail) is refused with that reason.
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


class PatchTowerMixin:
    """The vision stage of an adapter whose tower (``self.tower``, blocks
    ``self.vision_blocks``) takes patch sequences (``self.patch_tower``)."""

    def patch_valid(self, batch):
        if self.patch_tower == "naflex":
            return naflex_valid(batch)
        return (batch["image_position_ids"] != -1).all(dim=-1)

    def patch_rows(self, batch):
        """Refuse a batch whose tower rows are not one per image (tiles)."""
        rows, images = batch["pixel_values"].shape[0], batch["input_ids"].shape[0]
        if rows != images:
            raise ValueError(
                f"{self.family}: stage 'vision' is not available for this batch: "
                f"its processor cut the {images} images into {rows} tower rows "
                "(tiles), which skvlm does not map back to images for this tower. "
                "Load the processor with do_image_splitting=False (one row per "
                "image), or use stage='projector' or 'language'."
            )

    def patch_stack(self, batch):
        self.patch_rows(batch)
        return self.tower_stack(
            self.vision_blocks, n_prefix=0, has_cls=False, valid=self.patch_valid(batch)
        )

    def patch_forward(self, batch):
        self.patch_rows(batch)
        if self.patch_tower == "naflex":
            return self.tower(**naflex_inputs(batch))
        return self.tower(
            pixel_values=batch["pixel_values"],
            pixel_position_ids=batch["image_position_ids"],
        )
