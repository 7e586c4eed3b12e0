"""Adapters for LLaVA-1.5 and LLaVA-NeXT, and the base of every generative family here.

A generative VLM has three stages. ``vision``: the vision tower's hidden states, read
off its blocks (entry 0 is the input of the first block, entry k the output of block
k, exactly the tower's own ``output_hidden_states``). ``projector``: the visual
tokens the language model receives, after the projector. ``language``: the language
model's hidden states over the formatted prompt with the image features merged in
(entry 0 is the input embeddings, entry k the output of decoder block k, the last
entry after the final norm, as HF's ``hidden_states``).
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks, pad_tokens
from ._base import (
    LANGUAGE_POOLINGS,
    TOKEN_POOLINGS,
    Adapter,
    Stack,
    language_masks,
    pool_token_lists,
)
from ._chat import ChatPromptMixin, special_token_ids
from ._pixtral import PixtralTowerMixin, has_pixtral_tower
from ._traits import final_norm, has_class_token, language_layers, resolve_path
from ._vision import VisionTowerMixin, _to_device


class LlavaAdapter(PixtralTowerMixin, ChatPromptMixin, VisionTowerMixin, Adapter):
    """LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP tower, MLP projector, LM.

    Stages and layers:

    - ``vision``: the CLIP tower, all of it (not only the feature layer LLaVA
      uses, ``vision_feature_layer``, usually -2). Entry 0 = the patch embeddings
      after CLIP's pre-layernorm, entry k = after block k; no post-layernorm on
      any entry. Poolings ``cls``, ``mean``/``max`` (patch tokens, CLS excluded),
      ``pooler`` (post-layernormed CLS) at the last entry only.
    - ``projector``: one entry, the image tokens after the MLP projector (the
      selected feature layer, CLS dropped by the ``default`` strategy), in the
      language model's width. Poolings ``mean`` and ``max``.
    - ``language``: entry 0 = the input embeddings with the image tokens merged
      in, entry k = after decoder block k; the last entry carries the final norm
      (HF's ``hidden_states[-1]``). Poolings ``last``, ``mean`` and ``max``
      (every valid token), ``image_mean``, ``text_mean`` (prompt tokens, special
      tokens excluded) and int positions among the valid tokens.

    The prompt is formatted with the processor's chat template (LLaVA-1.5:
    ``"USER: <image>\\n{prompt} ASSISTANT:"``).

    With a Pixtral tower (Pixtral-12B's layout), the vision stage is the tower's blocks split per image as for
    Mistral 3 (:mod:`skvlm.models._pixtral`): poolings ``mean``, ``max`` and
    int positions over the image's own patches, no CLS and no ``pooler``; the
    projector stage has one token per patch; ``image_mean`` covers the
    ``[IMG]`` positions only (``[IMG_BREAK]`` and ``[IMG_END]`` are special
    tokens, in neither ``image_mean`` nor ``text_mean``).
    """

    family = "llava"
    packed = False  # a Pixtral tower (set per model)
    model_types = ("llava",)
    auto_class = "AutoModelForImageTextToText"
    stages = ("vision", "projector", "language")
    raster_stages = ("vision", "language")
    image_token = "<image>"
    fallback_format = "USER: <image>\n{prompt} ASSISTANT:"

    def __init__(self, model, processor):
        super().__init__(model, processor)
        traits = self.traits
        self.base = resolve_path(model, traits.base)
        self.tower = resolve_path(model, traits.vision)
        self.vision_blocks = resolve_path(self.tower, traits.vision_blocks)
        self.has_cls = has_class_token(self.tower)
        self.packed = has_pixtral_tower(model)
        if self.packed:  # a Pixtral tower: images at their own sizes
            self.dynamic_resolution = True
            self.raster_stages = ()
        self.language = resolve_path(model, traits.language)
        self.language_blocks = language_layers(self.language, traits)
        self.image_token_id = model.config.image_token_id
        token = getattr(processor, "image_token", None)
        if isinstance(token, str) and token:
            self.image_token = token

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        if stage == "vision":
            return len(self.vision_blocks) + 1
        if stage == "projector":
            return 1
        return len(self.language_blocks) + 1

    def poolings(self, stage, layer):
        if stage == "language":
            return LANGUAGE_POOLINGS
        if stage == "projector" or self.packed:
            return TOKEN_POOLINGS
        names = ("cls", "mean", "max") if self.has_cls else ("mean", "max")
        if layer == self.n_layers(stage) - 1 and self._tower_has_pooler():
            names = names + ("pooler",)
        return names

    def _tower_has_pooler(self):
        return True

    def dim(self, stage):
        if stage == "vision":
            return self.model.config.vision_config.hidden_size
        return self.model.config.get_text_config().hidden_size

    # -- prompts and inputs ----------------------------------------------------
    def special_ids(self):
        """Token ids left out of ``text_mean``: the tokenizer's special tokens
        (named, and added tokens marked special, such as Pixtral's ``[IMG_BREAK]``)."""
        return special_token_ids(self.processor.tokenizer) - {self.image_token_id}

    def prepare(self, images, prompts=None):
        if prompts is None:
            batch = self.processor.image_processor(images=images, return_tensors="pt")
        else:
            texts = [self.format_prompt(p) for p in prompts]
            batch = self.processor(
                images=images, text=texts, return_tensors="pt", padding=True
            )
        batch = {k: v for k, v in dict(batch).items() if k != "labels"}
        return _to_device(batch, self.device, self.dtype)

    # -- stacks and forward passes ---------------------------------------------
    def stack(self, stage, batch):
        if stage == "vision" and self.packed:
            return self.pixtral_stack(batch)
        if stage == "vision":
            return self.tower_stack(
                self.vision_blocks, n_prefix=int(self.has_cls), has_cls=self.has_cls
            )
        masks = language_masks(
            batch["input_ids"],
            batch["attention_mask"],
            {self.image_token_id},
            self.special_ids(),
        )
        norm = final_norm(self.language, self.traits.language_norm)
        return Stack(blocks=self.language_blocks, masks=masks, final_norm=norm)

    def vision_pixels(self, batch):
        return batch["pixel_values"]

    def forward(self, stage, batch):
        if stage == "vision" and self.packed:
            return self.pixtral_forward(batch)
        if stage == "vision":
            return self.tower(pixel_values=self.vision_pixels(batch))
        return self.base(**batch, use_cache=False)

    def pooler(self, stage, batch, outputs):
        return outputs.pooler_output

    def image_tokens(self, batch):
        """The projected visual tokens of each image: a list of (tokens_i, dim)."""
        kwargs = {k: batch[k] for k in ("image_sizes",) if k in batch}
        features = self.base.get_image_features(
            pixel_values=batch["pixel_values"], **kwargs
        ).pooler_output
        return list(features)

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        return pool_token_lists([self.image_tokens(batch)], requests)


class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT (LLaVA-1.6): LLaVA with anyres tiling and image-newline tokens.

    Each image becomes a base view (the whole image at the tower's size) plus
    tiles from the best-fitting ``image_grid_pinpoints`` grid, so the number of
    tokens varies by image; every pooling is masked, so padding never counts.

    - ``vision``: the tower's hidden states of every view of the image, base view
      first, concatenated (entry 0 = patch embeddings after pre-layernorm, k =
      after block k, as in LLaVA-1.5). ``cls`` is the base view's CLS token;
      ``mean``/``max`` run over the patch tokens of all views (every CLS
      excluded); ``pooler`` (base view's post-layernormed CLS) at the last entry.
    - ``projector``: the image's tokens as the language model receives them, after
      the projector, unpadding and the learned image-newline tokens (included, as
      they occupy image positions in the prompt); ``mean`` and ``max``.
    - ``language``: as LLaVA-1.5 (last entry after the final norm); ``image_mean``
      covers every image position, newline tokens included.
    """

    dynamic_resolution = True
    raster_stages = ()  # anyres tiles and newline tokens

    family = "llava_next"
    model_types = ("llava_next",)
    fallback_format = "[INST] <image>\n{prompt} [/INST]"

    def _views_per_image(self, batch):
        from transformers.models.llava_next.modeling_llava_next import (
            image_size_to_num_patches,
        )

        config = self.model.config
        return [
            image_size_to_num_patches(
                image_size=size,
                grid_pinpoints=config.image_grid_pinpoints,
                patch_size=config.vision_config.image_size,
            )
            for size in batch["image_sizes"]
        ]

    def vision_pixels(self, batch):
        views = self._views_per_image(batch)
        pixels = batch["pixel_values"]
        return torch.cat([p[:n] for p, n in zip(pixels, views, strict=True)], dim=0)

    def stack(self, stage, batch):
        if stage != "vision":
            return super().stack(stage, batch)
        views = self._views_per_image(batch)
        has_cls = self.has_cls

        def unpack(hidden):
            per_image = hidden.split(views)
            return pad_tokens([h.flatten(0, 1) for h in per_image])[0]

        def masks(hidden):
            tokens = hidden.shape[1]
            per_view = tokens // max(views)
            valid = (
                torch.arange(tokens, device=hidden.device)[None]
                < torch.tensor(views, device=hidden.device)[:, None] * per_view
            )
            pooled = valid.clone()
            if has_cls:
                pooled[:, ::per_view] = False
            return TokenMasks(valid=valid, pooled=pooled, has_cls=has_cls)

        return Stack(blocks=self.vision_blocks, masks=masks, unpack=unpack)

    def pooler(self, stage, batch, outputs):
        # the tower pooled every view; keep each image's base view (its first)
        starts = torch.tensor([0, *self._views_per_image(batch)[:-1]]).cumsum(0)
        return outputs.pooler_output[starts.to(outputs.pooler_output.device)]
