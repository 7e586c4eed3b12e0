"""Phi-4-multimodal: an image, audio and text model that transformers loads as a causal LM.

transformers maps ``phi4_multimodal`` to ``AutoModelForCausalLM`` (and to the
multimodal-LM auto class), not to image-text-to-text: its image features are
written into the token embeddings by the embedding module itself, and it has
no ``get_image_features``. Its parts are named in :data:`skvlm.models.TRAITS`.

Each image becomes a global view (the image resized to one crop) followed by
its crops (the image resized and padded to a grid of up to ``dynamic_hd``
crops); a batch pads every image to the same number of crops, and
``image_attention_mask`` marks each crop's real patches.

- The tower runs with eager attention (bidirectional): transformers' SDPA path
  runs it causally whenever no crop of the batch has padded patches, which
  would make an image's features depend on the rest of its batch.
- ``vision``: the tower's blocks over an image's real views, global view first
  then its crops in order (entry 0 = input of the first block, k = output of
  block k, HF's ``hidden_states``). ``mean`` and ``max`` pool over the real
  patches of all views of the image: the global view and every crop, never
  the padding of a crop or a padded crop. The tower has no class token.
- ``projector``: the vectors the model writes at the image's positions in the
  sequence (its crops' grid, then the global view's, with the learned
  separators), i.e. language entry 0 at the image tokens.
- ``language``: as for every family (HF's ``hidden_states``).

Loading needs torchvision: transformers ships this family's image processor
only with its torchvision backend.
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks, pad_tokens
from ._base import Stack
from ._chat import special_token_ids
from ._generic import GenericImageTextAdapter


class Phi4MultimodalAdapter(GenericImageTextAdapter):
    """Phi-4-multimodal (``Phi4MultimodalForCausalLM``), images and text."""

    family = "phi4_multimodal"
    model_types = ("phi4_multimodal",)
    fallback = False
    auto_class = "AutoModelForCausalLM"
    stages = ("vision", "projector", "language")
    # The turn format of Phi-4-multimodal-instruct's model card; its processor
    # loads no chat template.
    fallback_format = "<|user|>{image}{prompt}<|end|><|assistant|>"

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.image_token_id = model.config.vision_config.image_token_id
        self._special_ids = special_token_ids(processor.tokenizer) - {
            self.image_token_id
        }
        self.crop_size = model.config.vision_config.crop_size
        # transformers (5.25) declares the tower's attention causal, which its
        # SDPA path applies when no crop of the batch has padded patches (its
        # mask is then dropped): an image's features would depend on the other
        # images of the batch. Eager attention is bidirectional with or
        # without a mask, as the tower was trained and as HF's SDPA computes
        # it whenever a mask is present.
        if self.tower is not None:
            self.tower.set_attn_implementation("eager")
        # no get_image_features: the projector stage reads the embedding's output
        self.unavailable.pop("projector", None)
        self.stages = tuple(
            s for s in ("vision", "projector", "language") if s not in self.unavailable
        )

    def _views(self, batch):
        """Views per image, the tower's rows (real views only) and their patch masks."""
        pixels = batch["image_pixel_values"]
        masks = batch["image_attention_mask"]
        ratios = torch.div(batch["image_sizes"], self.crop_size, rounding_mode="floor")
        counts = (1 + ratios[:, 0] * ratios[:, 1]).tolist()
        rows = torch.cat([p[:n] for p, n in zip(pixels, counts, strict=True)])
        patches = torch.cat([m[:n] for m, n in zip(masks, counts, strict=True)])
        return counts, rows, patches.flatten(1).bool()

    def stack(self, stage, batch):
        if stage != "vision":
            return super().stack(stage, batch)
        counts, _, patches = self._views(batch)
        # per image: its views' patches, view after view; pooled = real patches
        per_image = [p.reshape(-1, 1).float() for p in patches.split(counts)]
        patched, valid = pad_tokens(per_image)
        pooled = (patched[..., 0] > 0) & valid

        def unpack(hidden):
            return pad_tokens([h.flatten(0, 1) for h in hidden.split(counts)])[0]

        masks = TokenMasks(valid=valid, pooled=pooled)
        return Stack(blocks=self.vision_blocks, masks=masks, unpack=unpack)

    def forward(self, stage, batch):
        if stage == "vision":
            _, rows, patches = self._views(batch)
            side = int(patches.shape[1] ** 0.5)
            return self.tower(
                pixel_values=rows,
                patch_attention_mask=patches.reshape(-1, side, side),
            )
        return self.base(**batch, use_cache=False)

    def image_tokens(self, batch):
        """Each image's projector tokens: language entry 0 at its image positions."""

        def read(layer, hidden, masks):
            return [h[m] for h, m in zip(hidden, masks.image, strict=True)]

        results, _ = self.capture(batch, "language", [0], read)
        return results[0]

    def dim(self, stage):
        if stage == "vision":
            return self.model.config.vision_config.hidden_size
        return self.model.config.hidden_size


ADAPTERS = [Phi4MultimodalAdapter]
