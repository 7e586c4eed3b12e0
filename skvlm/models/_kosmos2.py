"""Kosmos-2 and Kosmos-2.5: a vision tower, a perceiver-style projection, a
causal text decoder.

Kosmos-2's prompts hold no image token id: its processor puts ``<image>``,
``latent_query_num`` image positions and ``</image>`` in front of the prompt
(after ``<s>``) and marks the image positions in
``image_embeds_position_mask``; the model writes the projected image features
there. skvlm reads the image's positions off that mask.

Stages and layers:

- ``vision``: the tower's blocks (entry 0 = the patch and class embeddings
  after the tower's pre-norm, k = after block k: the tower's own
  ``hidden_states``). ``cls`` is the class token; ``mean`` and ``max`` pool
  the patches.
- ``projector``: what ``get_image_features`` returns, one image's
  ``latent_query_num`` tokens (the tower's output, normed and L2-normalised,
  read by the image-to-text projection's latent queries).
- ``language``: the text decoder's blocks: entry 0 = the scaled word
  embeddings with the image features merged in plus the sinusoidal positions
  (the input of the first block), k = after block k, the last entry after the
  final layer norm (HF's ``hidden_states``). ``image_mean`` covers the masked
  positions; ``text_mean`` the prompt's words (``<s>``, ``<image>``,
  ``</image>``, ``<grounding>`` and the other tag tokens left out).

Prompt format: the prompt as given (Kosmos-2's processor adds the image in
front); a prompt that opens with ``<image>`` is used without it. Kosmos-2's
grounding prompts open with ``<grounding>``, e.g. ``"<grounding>An image of"``.

Kosmos-2.5: its tower is Pix2Struct-like, over ``flattened_patches`` (at most
``max_patches`` per image at its own aspect ratio, padded with zero rows):
``vision`` pools the real patches only (no class token). Its mask marks
``<image>`` and ``</image>`` with -1, the image positions with 1. Its
processor fills ``max_patches`` with its own default whatever the image
processor says and builds its mask for right padding, so skvlm passes the
saved ``max_patches`` and pads on the right.
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks
from ._base import Stack
from ._chat import image_first_prompt, special_token_ids
from ._generic import GenericImageTextAdapter
from ._traits import final_norm, resolve_path
from ._vision import _to_device

_MASK = "image_embeds_position_mask"


class Kosmos2Adapter(GenericImageTextAdapter):
    """Kosmos-2 (``Kosmos2ForConditionalGeneration``): see the module's notes."""

    family = "kosmos-2"
    model_types = ("kosmos-2",)
    stages = ("vision", "projector", "language")
    fallback = False
    placeholder_in_prompt = False  # the processor puts the image first

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = "kosmos-2"
        # Every token the processor adds (its tags and patch-index tokens) is
        # a marker, not a word of the prompt.
        tokenizer = processor.tokenizer
        # Its forward insists on pixels: the generative scorer runs the
        # continuations (and the text-only prior) on the causal LM alone, the
        # module that holds the LM head.
        self.language_call = resolve_path(model, self.traits.lm_head.rpartition(".")[0])
        self._special_ids = special_token_ids(tokenizer) | set(
            tokenizer.added_tokens_decoder
        )

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The prompt as Kosmos-2's processor takes it (it adds the image).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_kosmos2
        >>> adapter = load_adapter(make_tiny_kosmos2(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("<grounding>An image of")
        '<grounding>An image of'
        >>> adapter.format_prompt("<image>What is it?")
        'What is it?'
        """
        return image_first_prompt(prompt, self.image_token, "Kosmos-2")

    def image_positions(self, batch):
        """(rows, tokens) bool: the positions that hold image features."""
        return batch[_MASK] > 0  # Kosmos-2.5 marks <image>, </image> with -1

    def _image_counts(self, batch):
        return self.image_positions(batch).sum(dim=1).tolist()

    # -- stacks ------------------------------------------------------------------
    def stack(self, stage, batch):
        if stage != "language":
            return super().stack(stage, batch)
        ids = batch["input_ids"]
        valid = batch["attention_mask"].bool()
        image = self.image_positions(batch) & valid
        special = torch.isin(
            ids, torch.tensor(sorted(self._special_ids), device=ids.device)
        )
        masks = TokenMasks(
            valid=valid,
            pooled=valid,
            image=image,
            text=valid & ~image & ~special,
            has_cls=False,
        )
        norm = final_norm(self.language, self.traits.language_norm)
        return Stack(blocks=self.language_blocks, masks=masks, final_norm=norm)


class FlattenedPatchesMixin:
    """The vision stage of a Pix2Struct-like tower over ``flattened_patches``
    (Kosmos-2.5, Pix2Struct): each image is at most ``max_patches`` rows of
    (row, column, pixels) at its own aspect ratio, padded with zero rows,
    which the tower masks; the stack pools the real patches only (no class
    token). Needs ``self.tower`` and ``self.vision_blocks``."""

    def real_patches(self, batch):
        """(images, patches) bool: the real patches (padding rows are zeros)."""
        return batch["flattened_patches"].abs().sum(dim=-1) != 0

    def flattened_stack(self, batch):
        real = self.real_patches(batch)
        return Stack(
            blocks=self.vision_blocks, masks=TokenMasks(valid=real, pooled=real)
        )

    def flattened_forward(self, batch):
        return self.tower(flattened_patches=batch["flattened_patches"])


class Kosmos25Adapter(FlattenedPatchesMixin, Kosmos2Adapter):
    """Kosmos-2.5 (``Kosmos2_5ForConditionalGeneration``): see the module's notes."""

    family = "kosmos-2.5"
    model_types = ("kosmos-2.5",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = "kosmos-2.5"
        self.has_cls = False

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        # Its processor fills ``max_patches`` with its own default, not the
        # image processor's; and its image-position mask assumes right padding.
        batch = self.processor(
            images=list(images),
            text=self.format_prompts(prompts),
            return_tensors="pt",
            padding=True,
            padding_side="right",
            max_patches=self.processor.image_processor.max_patches,
        )
        return _to_device(dict(batch), self.device, self.dtype)

    def stack(self, stage, batch):
        if stage != "vision":
            return super().stack(stage, batch)
        return self.flattened_stack(batch)

    def forward(self, stage, batch):
        if stage == "vision":
            return self.flattened_forward(batch)
        return super().forward(stage, batch)


ADAPTERS = [Kosmos2Adapter, Kosmos25Adapter]

__all__ = ["FlattenedPatchesMixin", "Kosmos25Adapter", "Kosmos2Adapter"]
