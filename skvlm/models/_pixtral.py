"""Pixtral's vision tower, unpacked per image: Mistral 3, LLaVA with a Pixtral tower,
and every family whose vision config is ``pixtral`` (LightOnOCR, Mistral Large 4).

A Pixtral tower takes each image at its own size (the processor keeps the
aspect ratio and rounds the sides to whole patches; ``image_sizes`` holds them)
and concatenates the patches of every image of a batch into one sequence,
(1, patches, dim), with block-diagonal attention: no patch attends to another
image's. Each image's patches come row by row over its own grid of
``height // patch_size`` x ``width // patch_size``. skvlm splits the sequence
per image by ``image_sizes`` and pads the pieces into (batch, tokens, dim) with
a mask, as it does Qwen's packed tower.

The tower has no CLS token and no pooled head. Vision poolings:

- ``mean``, ``max``: over the image's own patches (never another image's, never
  padding).
- an int ``k``: the image's k-th patch in raster order (row by row over its own
  grid, whose width differs between images).

Entry 0 is the patch embeddings after the tower's pre-norm (the input of the
first block), entry k the output of block k: the tower's own
``output_hidden_states``. The projector stage is what ``get_image_features``
returns per image (Mistral 3: RMS norm, then one token per 2 x 2 block of
patches from its patch merger, then an MLP; LLaVA: one token per patch). At
the language stage, ``image_mean`` covers the ``[IMG]`` positions only:
``[IMG_BREAK]`` (after each row of the image) and ``[IMG_END]`` hold no image
features and are special tokens, left out of ``text_mean`` too.
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks, pad_tokens
from ._base import Stack
from ._traits import PACKED_TOWERS

__all__ = ["PixtralTowerMixin", "has_pixtral_tower"]


def has_pixtral_tower(model):
    """Whether ``model``'s vision tower is one of :data:`PACKED_TOWERS`."""
    vision = getattr(model.config, "vision_config", None)
    return getattr(vision, "model_type", None) in PACKED_TOWERS


class PixtralTowerMixin:
    """The vision stage of an adapter whose tower (``self.tower``, blocks
    ``self.vision_blocks``) is a Pixtral tower."""

    def pixtral_lengths(self, batch):
        """Each image's number of patches, from ``image_sizes``."""
        patch = self.model.config.vision_config.patch_size
        sizes = torch.as_tensor(batch["image_sizes"]).reshape(-1, 2)
        return (sizes // patch).prod(dim=-1).tolist()

    def pixtral_stack(self, batch):
        lengths = self.pixtral_lengths(batch)
        device = batch["pixel_values"].device

        def unpack(hidden):
            return pad_tokens(
                list(hidden.reshape(-1, hidden.shape[-1]).split(lengths))
            )[0]

        counts = torch.tensor(lengths, device=device)
        valid = torch.arange(max(lengths), device=device) < counts[:, None]
        return Stack(
            blocks=self.vision_blocks,
            masks=TokenMasks(valid=valid, pooled=valid),
            unpack=unpack,
        )

    def pixtral_forward(self, batch):
        return self.tower(
            pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"]
        )
