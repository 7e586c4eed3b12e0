"""The adapter of Mllama (Llama 3.2 Vision): a tiled tower read by cross-attention.

The image processor resizes each image to fit a grid of tiles of its aspect
ratio (1 x 1, 1 x 2, 2 x 1... up to ``max_image_tiles`` tiles), cuts it into
those tiles (row-major) and pads every image to ``max_image_tiles`` tiles with
all-zero ones, marked invalid in ``aspect_ratio_mask``. There is no global
(thumbnail) view: every valid tile is a part of the image. The tower embeds
each tile (a CLS token, then its patches, padded to a multiple of 8 tokens)
and runs two encoders over the sequence of all tiles of the image: the
*local* ``transformer``, then (after ``layernorm_post`` and the post-tile
embedding) the gated *global* ``global_transformer``. Its output, the global
encoder's last states concatenated with some local layers' (the config's
``intermediate_layers_indices``), goes through ``multi_modal_projector``; the
language model's cross-attention layers read the result, and the prompt holds
one ``<|image|>`` token per image.

Stages and layers (numbering of the ``vision`` stage, with L local and G
global layers):

- ``vision``: entry 0 = the input of the first local layer (patch, tile and
  position embeddings after ``layernorm_pre``), entry k (1 <= k <= L) = after
  local layer k, entry L + j (1 <= j <= G) = after global layer j; the last
  entry is the global encoder's output, the first ``hidden_size`` features of
  the tower's ``last_hidden_state``. An image's tokens are those of its valid
  tiles, tile after tile, each tile's CLS then its patches; padding tiles and
  padding patches are never read. ``mean`` and ``max`` pool the patches of
  every valid tile (each tile's CLS excluded); ``cls`` is the first tile's
  CLS; an int is a position among the valid tokens (CLS tokens included).
- ``projector``: one entry, ``multi_modal_projector``'s output for the image
  (the cross-attention states the language model reads), its valid tiles
  only, tile after tile, every token of a tile (CLS included, as the language
  model reads them). ``mean`` and ``max`` pool over all of them; int positions.
- ``language``: HF's ``hidden_states`` (entry 0 = the input embeddings,
  entry k = after decoder block k, cross-attention blocks included, the last
  entry after the final norm), as for every generic family.
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks
from ._base import LANGUAGE_POOLINGS, TOKEN_POOLINGS, Stack
from ._generic import GenericImageTextAdapter
from ._traits import resolve_path

_TILE_INPUTS = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")


class MllamaAdapter(GenericImageTextAdapter):
    """Mllama (``MllamaForConditionalGeneration``); see the module doc.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_mllama
    >>> adapter = load_adapter(make_tiny_mllama(tempfile.mkdtemp()), device="cpu")
    >>> adapter.stages, adapter.n_layers("vision")  # 3 local + 2 global layers
    (('vision', 'projector', 'language'), 6)
    """

    family = "mllama"
    model_types = ("mllama",)
    fallback = False
    stages = ("vision", "projector", "language")

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.projector = resolve_path(model, self.traits.projector[0])
        self.has_cls = True
        # the generic checks (one block list, get_image_features) do not apply
        self.unavailable = dict(self.traits.unsupported)
        self.stages = tuple(s for s in type(self).stages if s not in self.unavailable)

    def n_layers(self, stage):
        if stage == "vision":
            return len(self.vision_blocks) + 1
        if stage == "projector":
            return 1
        return len(self.language_blocks) + 1

    def poolings(self, stage, layer):
        if stage == "language":
            return LANGUAGE_POOLINGS
        if stage == "vision":
            return ("cls", *TOKEN_POOLINGS)
        return TOKEN_POOLINGS

    def dim(self, stage):
        if stage == "vision":
            return self.model.config.vision_config.hidden_size
        return self.model.config.get_text_config().hidden_size

    # -- the tiles of each image ------------------------------------------------
    def _tiles(self, batch):
        """Valid tiles of each prompt's image, from ``aspect_ratio_mask``."""
        mask = batch["aspect_ratio_mask"]
        if mask.shape[1] != 1:
            raise ValueError(
                f"mllama: skvlm reads one image per prompt, got {mask.shape[1]}."
            )
        return mask[:, 0].sum(dim=-1)

    def _patches(self):
        """Tokens of one tile: its CLS and its patches (before padding to 8)."""
        vision = self.model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + 1

    def stack(self, stage, batch):
        if stage != "vision":
            return super().stack(stage, batch)
        tiles = self._tiles(batch)
        max_tiles = batch["pixel_values"].shape[2]
        patches = self._patches()

        def masks(hidden):
            per_tile = hidden.shape[1] // max_tiles  # padded to a multiple of 8
            position = torch.arange(hidden.shape[1], device=hidden.device)
            tile, patch = position // per_tile, position % per_tile
            real_tile = tile[None] < tiles.to(hidden.device)[:, None]
            valid = real_tile & (patch < patches)[None]  # no padding tile or patch
            pooled = valid & (patch != 0)[None]  # each tile's CLS excluded
            return TokenMasks(valid=valid, pooled=pooled, has_cls=True)

        return Stack(blocks=self.vision_blocks, masks=masks)

    def forward(self, stage, batch):
        if stage == "vision":
            return self.tower(**{k: batch[k] for k in _TILE_INPUTS})
        return super().forward(stage, batch)

    def image_tokens(self, batch):
        """Each image's cross-attention states over its valid tiles: (tokens_i, dim)."""
        states = self.tower(**{k: batch[k] for k in _TILE_INPUTS}).last_hidden_state
        states = self.projector(states)[:, 0]  # (prompts, tiles, patches, dim)
        return [
            s[: int(n)].flatten(0, 1)
            for s, n in zip(states, self._tiles(batch), strict=True)
        ]
