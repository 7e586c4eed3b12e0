"""Adapters for Idefics3 and SmolVLM (the same architecture, different processors).

The image processor splits each image into tiles (sub-images in row-major order,
then a downscaled global view), pads every row of the batch to the same number
of tiles with all-zero images, and marks padded pixels in ``pixel_attention_mask``.
The model drops the all-zero tiles and runs the SigLIP-style tower on the rest;
the connector pixel-shuffles each tile's patches and projects them into the
language model's width. Tile and token counts vary per image; every stage's
masks follow them, so padding never reaches a pooling.
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks
from ._base import (
    LANGUAGE_POOLINGS,
    TOKEN_POOLINGS,
    Adapter,
    Stack,
    language_masks,
    pool_token_lists,
)
from ._chat import ChatPromptMixin, special_token_ids
from ._loading import load_processor_without_video
from ._tokens import valid_position_ids
from ._traits import family_traits, final_norm, language_layers, resolve_path
from ._vision import _to_device

# Added tokens that frame the image tiles in the prompt: not prompt text.
_IMAGE_FRAME_TOKENS = r"<row_\d+_col_\d+>|<global-img>|<fake_token_around_image>"


class Idefics3Adapter(ChatPromptMixin, Adapter):
    """Idefics3 (``Idefics3ForConditionalGeneration``): SigLIP-style tower,
    pixel-shuffle connector, Llama 3 language model.

    Stages and layers:

    - ``vision``: entry 0 = the patch embeddings plus position embeddings (input
      of the first encoder block), entry k = after encoder block k, as the
      tower's own ``output_hidden_states``; no entry carries the
      ``post_layernorm`` the connector applies first. An image's tokens are the
      patches of all its tiles, tile after tile (sub-images row-major, the global
      view last), padded patches excluded. Poolings ``mean`` and ``max`` (no CLS
      token, no pooled head).
    - ``projector``: one entry, the image's tokens after the connector (pixel
      shuffle and projection), tile after tile, in the language model's width:
      exactly the vectors at its ``<image>`` positions. ``mean`` and ``max``.
    - ``language``: entry 0 = the input embeddings with the image tokens merged
      in, entry k = after decoder block k; the last entry carries the final norm
      (HF's ``hidden_states[-1]``). Poolings ``last``, ``mean``, ``max``,
      ``image_mean`` (every ``<image>`` position of every tile), ``text_mean``
      (special tokens and the tile markers ``<row_i_col_j>``, ``<global-img>``,
      ``<fake_token_around_image>`` excluded) and int positions among the valid
      tokens. Position ids count valid tokens only, so left padding leaves
      results unchanged.

    The prompt is formatted with the processor's chat template
    (``<|begin_of_text|>User:<image>{prompt}<end_of_utterance>\\nAssistant:``);
    the processor expands ``<image>`` into the tiles' token grid.
    """

    dynamic_resolution = True

    family = "idefics3"
    # Idefics2: the same parts (its connector is a perceiver resampler, 4..64
    # latents per image instead of pixel-shuffled tiles).
    model_types = ("idefics2", "idefics3")
    auto_class = "AutoModelForImageTextToText"
    stages = ("vision", "projector", "language")
    image_token = "<image>"
    fallback_format = (
        "<|begin_of_text|>User:<image>{prompt}<end_of_utterance>\nAssistant:"
    )

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = model.config.model_type
        traits = family_traits(model)
        self.base = resolve_path(model, traits.base)
        self.tower = resolve_path(model, traits.vision)
        self.vision_blocks = resolve_path(self.tower, traits.vision_blocks)
        self.language = resolve_path(model, traits.language)
        self.language_blocks = language_layers(self.language, traits)
        self.image_token_id = model.config.image_token_id
        self.patch_size = model.config.vision_config.patch_size
        self._special_ids = special_token_ids(
            processor.tokenizer, _IMAGE_FRAME_TOKENS
        ) - {self.image_token_id}

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        if stage == "vision":
            return len(self.vision_blocks) + 1
        if stage == "projector":
            return 1
        return len(self.language_blocks) + 1

    def poolings(self, stage, layer):
        return LANGUAGE_POOLINGS if stage == "language" else TOKEN_POOLINGS

    def dim(self, stage):
        if stage == "vision":
            return self.model.config.vision_config.hidden_size
        return self.model.config.get_text_config().hidden_size

    def format_prompt(self, prompt):
        """The text the model sees for ``prompt``; one holding ``<image>`` is used as is.

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_idefics3
        >>> adapter = load_adapter(make_tiny_idefics3(tempfile.mkdtemp()), device="cpu")
        >>> print(adapter.format_prompt("What is it?"))
        <|begin_of_text|>User:<image>What is it?<end_of_utterance>
        Assistant:
        """
        return super().format_prompt(prompt)

    # -- inputs --------------------------------------------------------------------
    def prepare(self, images, prompts=None):
        nested = [[image] for image in images]  # one image per row
        if prompts is None:
            batch = self.processor.image_processor(images=nested, return_tensors="pt")
        else:
            batch = self.processor(
                images=nested,
                text=self.format_prompts(prompts),
                padding=True,
                return_tensors="pt",
            )
        batch = _to_device(dict(batch), self.device, self.dtype)
        if "attention_mask" in batch:
            # Llama counts positions from the first column, padding included;
            # counting valid tokens only makes left padding invisible.
            batch["position_ids"] = valid_position_ids(batch["attention_mask"])
        return batch

    def _tiles(self, batch):
        """Which tiles are real, (batch, tiles), and their valid patches, (batch, tiles, patches).

        As the model does: a tile that is all zeros is padding, and a patch is
        valid when any of its pixels is.
        """
        pixels = batch["pixel_values"]
        real = pixels.flatten(2).ne(0).any(-1)
        p = self.patch_size
        mask = batch.get("pixel_attention_mask")
        if mask is None:
            mask = torch.ones(
                pixels.shape[:2] + pixels.shape[-2:],
                dtype=torch.bool,
                device=pixels.device,
            )
        patches = mask.unfold(2, p, p).unfold(3, p, p).sum(dim=(-1, -2)) > 0
        return real, patches.flatten(2)

    # -- stacks and forward passes ---------------------------------------------------
    def stack(self, stage, batch):
        if stage == "vision":
            real, patches = self._tiles(batch)
            n_rows, n_tiles, n_patches = patches.shape

            def unpack(hidden):
                # (real tiles, patches, dim) -> (rows, tiles * patches, dim); the
                # padding tiles' slots stay zero and are masked out.
                full = hidden.new_zeros(n_rows * n_tiles, n_patches, hidden.shape[-1])
                full[real.flatten()] = hidden
                return full.view(n_rows, n_tiles * n_patches, -1)

            valid = (real[..., None] & patches).reshape(n_rows, n_tiles * n_patches)
            return Stack(
                blocks=self.vision_blocks,
                masks=TokenMasks(valid=valid, pooled=valid),
                unpack=unpack,
            )
        masks = language_masks(
            batch["input_ids"],
            batch["attention_mask"],
            {self.image_token_id},
            self._special_ids,
        )
        return Stack(
            blocks=self.language_blocks,
            masks=masks,
            final_norm=final_norm(self.language, self.traits.language_norm),
        )

    def _image_features(self, batch):
        return self.base.get_image_features(
            batch["pixel_values"], batch.get("pixel_attention_mask")
        )

    def forward(self, stage, batch):
        if stage == "vision":
            return self._image_features(batch)
        return self.base(**batch, use_cache=False)

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        return pool_token_lists(
            [list(self._image_features(batch).pooler_output)], requests
        )


class SmolVLMAdapter(Idefics3Adapter):
    """SmolVLM (``SmolVLMForConditionalGeneration``): Idefics3's architecture with
    its own processor and chat template
    (``<|im_start|>User:<image>{prompt}<end_of_utterance>\\nAssistant:``).

    Stages, layers and poolings are those of ``Idefics3Adapter``. The
    processor owns a video processor that needs torchvision; without it skvlm
    loads the processor with a stand-in (images never need it). It also needs
    ``num2words``.
    """

    family = "smolvlm"
    model_types = ("smolvlm",)
    fallback_format = "<|im_start|>User:<image>{prompt}<end_of_utterance>\nAssistant:"

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """The checkpoint's processor, without its video processor if torchvision is missing."""
        return load_processor_without_video(
            path, "SmolVLMProcessor", revision=revision, model_kwargs=model_kwargs
        )
