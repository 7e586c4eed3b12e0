"""A fallback adapter for image-text-to-text models no family adapter claims.

Many recent HF VLMs share LLaVA's layout: a base model holding ``vision_tower``,
a projector reached through ``get_image_features`` and a ``language_model`` whose
decoder blocks are ``layers`` and final norm ``norm``, with one ``image_token_id``
marking the image positions. The language stage of such a model is exact in
general: HF records its ``hidden_states`` from the same blocks the hooks here read.
The vision and projector stages are offered where the model's layout allows it
(a ViT-style tower with ``encoder.layers`` fed one image per row; image features
returned per image) and refused with an explanation otherwise.
"""

from __future__ import annotations

import inspect

import torch

from ._llava import LlavaAdapter, _inner_tower

_TEXT_KEYS = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"}


class GenericImageTextAdapter(LlavaAdapter):
    """Any ``AutoModelForImageTextToText`` model with LLaVA's layout.

    It is chosen only when no family adapter serves the model's type (see
    :meth:`supports`). Layers as in the LLaVA adapter: ``vision`` entry 0 = the
    tower's first-block input, k = after block k; ``projector`` = what
    ``get_image_features`` returns (the image tokens the LM receives);
    ``language`` entry 0 = input embeddings with the image merged in, k = after
    decoder block k, the last entry after the final norm. The prompt goes through
    the processor's chat template, or becomes ``"<image>\\n{prompt}"`` without
    one. Check a new family's features against its own ``output_hidden_states``
    once before relying on them.
    """

    family = "generic-image-text"
    model_types = ()  # never matched by type: the registry asks ``supports``
    fallback = True
    raster_stages = ()
    fallback_format = "{image}\n{prompt}"

    @classmethod
    def supports(cls, config):
        """Whether ``config`` is an image-text-to-text model with an image token id."""
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and (
            _image_token_id(config) is not None
        )

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor
        name = type(model).__name__
        self.base = getattr(model, "model", model)
        self.language = getattr(self.base, "language_model", None)
        if self.language is None or not hasattr(self.language, "layers"):
            raise ValueError(
                f"{name} has no language_model with a list of decoder 'layers', so "
                "skvlm's generic adapter cannot read its hidden states. Supported "
                "families: see skvlm.models.supported_families()."
            )
        self.image_token_id = _image_token_id(model.config)
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        self.tower = getattr(self.base, "vision_tower", None)
        inner = _inner_tower(self.tower) if self.tower is not None else None
        blocks = getattr(getattr(inner, "encoder", None), "layers", None)
        self.vision_blocks = blocks
        embeddings = getattr(inner, "embeddings", None)
        self.has_cls = any(
            getattr(embeddings, attr, None) is not None
            for attr in ("class_embedding", "cls_token")
        )
        stages = ["language"]
        if hasattr(self.base, "get_image_features"):
            stages.insert(0, "projector")
        if blocks is not None:
            stages.insert(0, "vision")
        self.stages = tuple(stages)

    def _tower_has_pooler(self):
        return False  # towers differ in what their pooled output means

    def dim(self, stage):
        if stage == "vision":
            return _inner_tower(self.tower).config.hidden_size
        return self.model.config.get_text_config().hidden_size

    def prepare(self, images, prompts=None):
        # the processor also gives what only some models take (token_type_ids...)
        return super().prepare(
            images, [None] * len(images) if prompts is None else prompts
        )

    def vision_pixels(self, batch):
        pixels = batch["pixel_values"]
        if pixels.dim() != 4 or pixels.shape[0] != batch["input_ids"].shape[0]:
            raise ValueError(
                f"{type(self.model).__name__} feeds its vision tower pixel_values of "
                f"shape {tuple(pixels.shape)}, not one image per row, so the generic "
                "adapter cannot tell which tower tokens belong to which image. Use "
                "stage='language' (pooling='image_mean' averages the image tokens)."
            )
        return pixels

    def image_tokens(self, batch):
        method = self.base.get_image_features
        names = inspect.signature(method).parameters
        kwargs = {k: v for k, v in batch.items() if k in names and k not in _TEXT_KEYS}
        output = method(**kwargs)
        features = getattr(output, "pooler_output", output)
        n_images = batch["input_ids"].shape[0]
        if isinstance(features, torch.Tensor) and features.dim() == 3:
            features = list(features)
        if not isinstance(features, (list, tuple)) or len(features) != n_images:
            raise ValueError(
                f"{type(self.model).__name__}.get_image_features does not return one "
                "token sequence per image (it packs them), so the generic adapter has "
                "no per-image projector tokens. Use stage='language' with "
                "pooling='image_mean', which averages the same tokens as the LM sees "
                "them at layer 0."
            )
        return list(features)


def _image_token_id(config):
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None
