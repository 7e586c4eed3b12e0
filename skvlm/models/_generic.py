"""The adapter of every image-text-to-text family without a hand-written one.

It reads a family's parts off its :class:`~skvlm.models.Traits` (derived from
transformers' own structure, see :mod:`skvlm.models._traits`) and uses only
what transformers offers every such model: the processor, ``get_image_features``
and the language model's decoder ``layers`` and final ``norm``.

- ``vision``: the tower's blocks, read by hooks (entry 0 = input of the first
  block, k = output of block k: the tower's own ``output_hidden_states``).
  Offered where the rows of ``pixel_values`` map back to images (one row per
  image, or tiles of equal token count, or LLaVA-NeXT-style views). A tiled
  image's tokens are those of all its tiles, tile after tile, so ``mean`` and
  ``max`` pool over every tile (per image, never the global view alone), and
  ``cls`` is the first tile's CLS. A class token that a tower appends after
  each tile's patches (Llama 4) is left out of ``mean`` and ``max``, and no
  ``cls`` is offered. A Pixtral tower (one sequence of the patches of every
  image, each at its own size) is split per image by ``image_sizes``
  (:mod:`skvlm.models._pixtral`). Any other packed tower (Qwen-style:
  patches of all images in one sequence, told apart by ``image_grid_thw``;
  MiniCPM-V's, every view of every image told apart by ``target_sizes``,
  its later blocks on a merged grid) is split per image and put in raster
  patch order, window permutation undone (:mod:`skvlm.models._packed`). A tower that takes each image
  already cut into patches (LFM2-VL's NaFlex tower, Gemma 4's) gives each
  image's real patches, padding masked (:mod:`skvlm.models._patches`). A
  tower of encoders run one after the other (a SAM encoder, then a second
  encoder: DeepSeek-OCR-2, Unlimited-OCR; a tuple of block lists in its
  traits) gives SAM's entries, then the second encoder's blocks', in one
  layer index space (:mod:`skvlm.models._chained`). A processor that gives
  each image's views as patch sequences (Molmo 2, ``views="sequences"``)
  gives each image's tokens over all its views, view after view.
- ``projector``: what ``get_image_features`` returns, split per image exactly
  as the language model receives it (the features fill the image-token
  positions in order), so an image's projector tokens are the vectors at its
  image positions at language entry 0.
- ``language``: entry 0 = input embeddings with the image merged in, k =
  after decoder block k, the last entry after the final norm (HF's
  ``hidden_states``). A language model with hyper-connections (GLM-5-Next,
  HY-V4-VL, Qwen4-Exp: its blocks carry ``streams`` residual streams, merged
  into one only before the final norm) gives each entry but the last as its
  streams side by side, stream 0 first (``streams`` x width features, as
  HF's ``hidden_states`` hold them); the last entry, after the merge and the
  final norm, has the model's width. Gemma 3n's blocks carry
  ``altup_num_inputs`` AltUp streams the same way; as in HF's
  ``hidden_states``, its last entry is its last block's streams, before they
  are merged and normed (``Traits.last_entry``). A decoder that runs its loop
  blocks several times per pass (Inkling 2 loop) gives one entry per block
  execution, as HF's ``hidden_states`` do (:mod:`skvlm.models._loops`).

A stage the family's structure does not allow is refused when asked for,
naming the family, the stage and the reason.
"""

from __future__ import annotations

import inspect
from functools import partial

import torch

from .._transformers_compat import (
    torchvision_available,
    torchvision_only_image_processor,
)
from ..pooling import TokenMasks, pad_tokens
from ._base import LANGUAGE_POOLINGS, Adapter, Stack, language_masks, pool_token_lists
from ._chained import chained_stack, chained_tower
from ._chat import ChatPromptMixin, special_token_ids
from ._encoders import map_stack
from ._loading import load_processor, load_processor_without_video
from ._loops import block_executions
from ._packed import PackedTowerMixin
from ._patches import PatchTowerMixin, patch_tower_kind
from ._pixtral import PixtralTowerMixin, has_pixtral_tower
from ._timm_stages import timm_stages
from ._tokens import raster_tokens
from ._traits import (
    family_traits,
    final_norm,
    has_class_token,
    language_layers,
    resolve_path,
)
from ._vision import VisionTowerMixin, _to_device
from ._vq import unpadded_image_features

_TEXT_KEYS = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"}
# The processor's name for the images' pixels (Video-LLaVA's tells images from
# videos).
_PIXEL_KEYS = ("pixel_values", "pixel_values_images")


def _image_token_id(config):
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _saved_processor_class(path, revision=None):
    """The ``processor_class`` the checkpoint's processor config names."""
    import json

    from transformers.utils import cached_file

    file = cached_file(path, "processor_config.json", revision=revision)
    with open(file, encoding="utf-8") as handle:
        return json.load(handle)["processor_class"]


def _transformers_version():
    import transformers

    return transformers.__version__


def _check_torchvision(path, exc, revision=None):
    """Raise the error that names torchvision, where that is why loading failed."""
    from transformers import AutoConfig

    if torchvision_available():
        return
    model_type = AutoConfig.from_pretrained(path, revision=revision).model_type
    name = torchvision_only_image_processor(model_type)
    if name is not None:
        raise ImportError(
            f"{model_type}: its image processor ({name}) exists only with "
            f"torchvision in transformers {_transformers_version()}, and torchvision "
            "is not installed (or does not import beside this torch). Install it: "
            "pip install torchvision (the build that matches your torch)."
        ) from exc


def _concatenated_streams(hidden, rows, tokens):
    """(batch, tokens, streams x width): a block's residual streams side by
    side, stream 0 first (a 3-D tensor is returned as is).

    The stream axis is read off the tensor, whose batch and token axes have
    sizes ``rows`` and ``tokens``: (batch, tokens, streams, width) for
    hyper-connections, (streams, batch, tokens, width) for Gemma 3n's AltUp.
    """
    if hidden.dim() != 4:
        return hidden
    if hidden.shape[1:3] == (rows, tokens) and hidden.shape[:2] != (rows, tokens):
        hidden = hidden.movedim(0, 2)
    return hidden.flatten(2)


class GenericImageTextAdapter(
    PixtralTowerMixin,
    PackedTowerMixin,
    PatchTowerMixin,
    ChatPromptMixin,
    VisionTowerMixin,
    Adapter,
):
    """Any ``AutoModelForImageTextToText`` model, its parts found by its traits.

    Chosen only when no family adapter serves the model's type (see
    :meth:`supports`); ``family`` is the config's ``model_type``. The prompt
    goes through the processor's chat template, or becomes
    ``"{placeholder}\\n{prompt}"`` without one.
    """

    family = "generic-image-text"
    model_types = ()  # never matched by type: the registry asks ``supports``
    fallback = True
    auto_class = "AutoModelForImageTextToText"
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

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """``AutoProcessor``; without its video processor when torchvision is missing.

        A family whose image processor transformers ships only with torchvision
        (Llama 4, Phi-4-multimodal) cannot load without it: the error says so.
        """
        try:
            processor = load_processor(
                path, revision=revision, model_kwargs=model_kwargs
            )
        except (ImportError, ValueError) as exc:
            _check_torchvision(path, exc, revision)
            if not isinstance(exc, ImportError):
                raise
            processor = None
        if getattr(processor, "tokenizer", None) is not None:
            return processor
        from transformers import PROCESSOR_MAPPING, AutoConfig

        config = AutoConfig.from_pretrained(path)
        if type(config) in PROCESSOR_MAPPING:
            name = PROCESSOR_MAPPING[type(config)].__name__
        else:  # a sub-model type (Qwen2.5-Omni's thinker): the saved class
            name = _saved_processor_class(path, revision)
        return load_processor_without_video(
            path, name, revision=revision, model_kwargs=model_kwargs
        )

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = model.config.model_type
        self.traits = traits = family_traits(model)
        self.base = resolve_path(model, traits.base)
        self.language = resolve_path(model, traits.language)
        if self.language is None:
            raise ValueError(
                f"{self.family}: stage 'language' is not available: "
                f"{type(model).__name__} has no language model with a list of decoder "
                "'layers' under the names skvlm looks for. Add a Traits(language=...) "
                "entry for it in skvlm.models.TRAITS, or report the model id."
            )
        # one entry per block execution: a decoder loop runs blocks again
        # (skvlm.models._loops)
        self.language_blocks = block_executions(
            language_layers(self.language, traits), model.config.get_text_config()
        )
        self.image_token_id = _image_token_id(model.config)
        self.image_token = traits.placeholder or (
            getattr(processor, "image_token", None) or "<image>"
        )
        self._special_ids = special_token_ids(processor.tokenizer) - {
            self.image_token_id
        }
        self.tower = resolve_path(model, traits.vision)
        # encoders run one after the other (SAM, then a second encoder): their
        # block lists make one stack, each entry of its encoder's width
        self.chained = isinstance(traits.vision_blocks, tuple)
        self.vision_norm = None
        if self.chained:
            self.vision_blocks, self.vision_widths, self.vision_norm = (
                chained_tower(self.tower, traits.vision_blocks)
                if self.tower is not None
                else (None, (), None)
            )
        else:
            self.vision_blocks = resolve_path(self.tower, traits.vision_blocks)
            self.vision_widths = ()  # a timm hierarchy's entries' widths
        if self.vision_blocks is None and not self.chained:
            self.vision_blocks, self.vision_widths = timm_stages(self.tower)
        self.unavailable = dict(traits.unsupported)
        self.pixtral = has_pixtral_tower(model)
        if self.pixtral:  # images at their own sizes
            self.dynamic_resolution = True
        self.patch_tower = patch_tower_kind(self.tower)  # patch sequences in
        if self.vision_blocks is None:
            self.unavailable.setdefault(
                "vision", "its vision tower has no list of blocks skvlm can find"
            )
        if not hasattr(self.base, "get_image_features"):
            self.unavailable.setdefault("projector", "it has no get_image_features")
        if traits.class_token == "auto":
            self.has_cls = has_class_token(self.tower)
        else:
            self.has_cls = traits.class_token == "first"
        self.packed = traits.views == "packed" and not self.pixtral
        if self.packed:  # images at their own sizes
            self.dynamic_resolution = True
            reason = self.packed_unavailable()
            if reason is not None:
                self.unavailable.setdefault("vision", reason)
        # a class token after each view's patches (Llama 4), left out of mean/max
        self.n_suffix = int(traits.class_token == "last")
        self.stages = tuple(
            s for s in ("vision", "projector", "language") if s not in self.unavailable
        )

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
        if stage == "vision" and self.has_cls:
            return ("cls", "mean", "max")
        return ("mean", "max")

    def dim(self, stage):
        if stage == "vision" and self.vision_widths:
            return self.vision_widths[-1]
        if stage == "vision":
            vision = getattr(self.model.config, "vision_config", None)
            return vision.hidden_size
        return self.model.config.get_text_config().hidden_size

    def dims(self, stage):
        """Widths of the stage's entries: ``streams`` x width before the last
        language entry where the blocks carry several residual streams."""
        if stage == "vision" and self.vision_widths:
            return self.vision_widths
        widths = super().dims(stage)
        streams = self.traits.streams
        if stage != "language" or streams == 1:
            return widths
        if self.traits.last_entry == "block":
            return (widths[0] * streams,) * len(widths)
        return (widths[0] * streams,) * (len(widths) - 1) + widths[-1:]

    # -- inputs ----------------------------------------------------------------
    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        texts = self.format_prompts(prompts)
        images = list(images)
        if self.traits.images == "nested":
            images = [[image] for image in images]
        extra = {}
        if "mm_token_type_ids" in inspect.signature(self.base.forward).parameters:
            # M-RoPE needs them; some processors return them only when asked
            extra["return_mm_token_type_ids"] = True
        batch = self.processor(
            images=images, text=texts, return_tensors="pt", padding=True, **extra
        )
        batch = {k: v for k, v in dict(batch).items() if k != "labels"}
        batch = _to_device(batch, self.device, self.dtype)
        if self.traits.unpad_images:
            batch = unpadded_image_features(self.base, batch)
        return batch

    def _image_counts(self, batch):
        return (batch["input_ids"] == self.image_token_id).sum(dim=1).tolist()

    def _views(self, batch):
        """Rows of the tower's input per image, and that input."""
        pixels = next(batch[key] for key in _PIXEL_KEYS if key in batch)
        n_images = batch["input_ids"].shape[0]
        views = self.traits.views
        if views == "anyres":
            from transformers.models.llava_next.modeling_llava_next import (
                image_size_to_num_patches,
            )

            config = self.model.config
            counts = [
                image_size_to_num_patches(
                    image_size=size,
                    grid_pinpoints=config.image_grid_pinpoints,
                    patch_size=config.vision_config.image_size,
                )
                for size in batch["image_sizes"]
            ]
            rows = torch.cat([p[:n] for p, n in zip(pixels, counts, strict=True)])
            return counts, rows
        if pixels.dim() == 5 and views == "tokens":
            # (images, tiles, C, H, W), every image with its tiles (Perception LM)
            pixels = pixels.flatten(0, 1)
        if views == "masked":  # real tiles marked per image (Granite-Docling)
            real = batch["pixel_attention_mask"].bool()
            return real.sum(-1).tolist(), pixels[real]
        if views == "sequences":  # each view a patch sequence (Molmo 2)
            return batch["image_num_crops"].tolist(), pixels
        if pixels.dim() != 4:
            raise ValueError(
                f"{self.family}: stage 'vision' is not available: pixel_values has "
                f"shape {tuple(pixels.shape)}, not one row per image or tile. Use "
                "stage='language' (pooling='image_mean' averages the image tokens)."
            )
        if views == "rows" and pixels.shape[0] == n_images:
            return [1] * n_images, pixels
        tokens = self._image_counts(batch)
        total = sum(tokens)
        if total == 0 or total % pixels.shape[0]:
            raise ValueError(
                f"{self.family}: stage 'vision' is not available: its "
                f"{pixels.shape[0]} pixel rows do not map back to the {n_images} "
                "images. Declare the family's views in skvlm.models.TRAITS, or use "
                "stage='language'."
            )
        per_tile = total // pixels.shape[0]
        return [t // per_tile for t in tokens], pixels

    # -- stacks and forward passes ---------------------------------------------
    def stack(self, stage, batch):
        if stage == "vision" and self.pixtral:
            return self.pixtral_stack(batch)
        if stage == "vision" and self.packed:
            return self.packed_stack(batch)
        if stage == "vision" and self.patch_tower:
            return self.patch_stack(batch)
        if stage == "vision" and self.chained:
            return chained_stack(self.vision_blocks, self.vision_norm)
        if stage == "vision" and self.vision_widths:
            return map_stack(self.vision_blocks)
        if stage == "vision":
            counts, _ = self._views(batch)
            n_prefix = int(self.has_cls)
            if all(c == 1 for c in counts) and not self.n_suffix:
                return self.tower_stack(
                    self.vision_blocks,
                    n_prefix=n_prefix,
                    has_cls=self.has_cls,
                    unpack=raster_tokens,
                )

            def unpack(hidden):
                per_image = hidden.split(counts)
                return pad_tokens([h.flatten(0, -2) for h in per_image])[0]

            def masks(hidden):
                tokens = hidden.shape[1]
                per_view = tokens // max(counts)
                position = torch.arange(tokens, device=hidden.device)[None]
                length = torch.tensor(counts, device=hidden.device)[:, None]
                valid = position < length * per_view
                within = position % per_view
                pooled = valid & (within >= n_prefix)
                pooled &= within < per_view - self.n_suffix
                return TokenMasks(valid=valid, pooled=pooled, has_cls=self.has_cls)

            return Stack(blocks=self.vision_blocks, masks=masks, unpack=unpack)
        ids = batch["input_ids"]
        masks = language_masks(
            ids,
            batch["attention_mask"],
            {self.image_token_id},
            self._special_ids,
        )
        norm = (
            final_norm(self.language, self.traits.language_norm)
            if self.traits.last_entry == "norm"
            else None
        )
        return Stack(
            blocks=self.language_blocks,
            masks=masks,
            final_norm=norm,
            unpack=partial(
                _concatenated_streams, rows=ids.shape[0], tokens=ids.shape[1]
            ),
        )

    def forward(self, stage, batch):
        if stage == "vision" and self.pixtral:
            return self.pixtral_forward(batch)
        if stage == "vision" and self.packed:
            return self.packed_forward(batch)
        if stage == "vision" and self.patch_tower:
            return self.patch_forward(batch)
        if stage == "vision":
            return self.tower(pixel_values=self._views(batch)[1])
        if self.traits.row_positions and "position_ids" not in batch:
            batch = dict(batch, position_ids=self.row_positions(batch))
        return self.base(**batch, use_cache=False)

    def row_positions(self, batch):
        """Each row's M-RoPE positions computed alone, stacked (axes, rows, tokens).

        For a family whose positions of a row depend on the rest of its batch
        (``Traits.row_positions``); each prompt holds one image, so row ``i``
        takes the ``i``-th row of ``image_grid_thw``.
        """
        method = self.base.compute_3d_position_ids
        names = inspect.signature(method).parameters
        ids = batch["input_ids"]
        rows = []
        for i in range(ids.shape[0]):
            kwargs = {
                key: value[i : i + 1]
                for key, value in batch.items()
                if key in names
                and isinstance(value, torch.Tensor)
                and (key == "image_grid_thw" or value.shape[:1] == ids.shape[:1])
            }
            rows.append(method(**kwargs))
        return torch.cat(rows, dim=1)

    def image_tokens(self, batch):
        """Each image's projector tokens: a list of (tokens_i, dim)."""
        method = self.base.get_image_features
        names = inspect.signature(method).parameters
        kwargs = {k: v for k, v in batch.items() if k in names and k not in _TEXT_KEYS}
        if "mm_encoder_outputs" in batch:  # computed image by image (_vq)
            output = batch["mm_encoder_outputs"]["image"]
        else:
            output = method(**kwargs)
        features = getattr(output, "pooler_output", output)
        if isinstance(features, (list, tuple)):
            features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
        flat = features.reshape(-1, features.shape[-1])
        counts = self._image_counts(batch)
        if sum(counts) != len(flat):
            raise ValueError(
                f"{self.family}: stage 'projector' is not available: "
                f"get_image_features gave {len(flat)} tokens for {sum(counts)} image "
                "positions. Use stage='language' with pooling='image_mean'."
            )
        return list(flat.split(counts))

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        return pool_token_lists([self.image_tokens(batch)], requests)
