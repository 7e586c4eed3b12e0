"""Pixtral's vision tower, unpacked per image: Mistral 3 and LLaVA with a Pixtral tower.

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
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks, pad_tokens
from ._base import TOKEN_POOLINGS, Stack
from ._generic import GenericImageTextAdapter

__all__ = ["Mistral3Adapter", "PixtralTowerMixin"]


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


class Mistral3Adapter(PixtralTowerMixin, GenericImageTextAdapter):
    """Mistral 3 / Mistral Small 3.1 (``Mistral3ForConditionalGeneration``):
    Pixtral tower, RMS norm + 2x2 patch merger + MLP projector, Mistral LM.

    Stages and layers:

    - ``vision``: the Pixtral tower's blocks, split per image (see the module
      doc). Entry 0 = the patch embeddings after the tower's pre-norm (input of
      the first block), entry k = after block k: the tower's own
      ``output_hidden_states``. Poolings ``mean``, ``max`` and int positions
      (raster order over the image's own patch grid); no CLS, no ``pooler``.
    - ``projector``: one entry, the image's tokens after the projector (one per
      2x2 block of patches), in the order they fill the ``[IMG]`` positions
      (``get_image_features``). Poolings ``mean`` and ``max``.
    - ``language``: entry 0 = the input embeddings with the image merged in,
      entry k = after decoder block k, the last after the final norm (HF's
      ``hidden_states``). ``image_mean`` covers the ``[IMG]`` positions only:
      ``[IMG_BREAK]`` (end of each row of the image) and ``[IMG_END]`` hold no
      image features and are special tokens, left out of ``text_mean`` too.

    The prompt goes through the processor's chat template (Mistral's
    ``[INST]...[/INST]``). Without torchvision, the processor is skvlm's
    torchvision-free ``PixtralProcessor`` (transformers' own needs torchvision).
    """

    family = "mistral3"
    model_types = ("mistral3",)
    fallback = False
    stages = ("vision", "projector", "language")
    dynamic_resolution = True
    unpacks_packed = True
    fallback_format = "[INST]{image}{prompt}[/INST]"

    def poolings(self, stage, layer):
        if stage == "vision":
            return TOKEN_POOLINGS
        return super().poolings(stage, layer)

    def stack(self, stage, batch):
        if stage == "vision":
            return self.pixtral_stack(batch)
        return super().stack(stage, batch)

    def forward(self, stage, batch):
        if stage == "vision":
            return self.pixtral_forward(batch)
        return super().forward(stage, batch)
