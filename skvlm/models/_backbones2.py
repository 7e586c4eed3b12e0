"""Adapters for more ViT-like backbones and video encoders (read on still images).

Vision stage, for every type here: entry 0 is the input of the first block,
entry k the output of block k, exactly HF's ``output_hidden_states`` (ImageGPT:
the last entry carries its final layernorm, as HF's does). What each pooling
covers:

- I-JEPA: patches only (no CLS): ``mean``/``max`` over every patch.
- ViT-MAE: read with its random masking off (``mask_ratio`` 0 in skvlm's
  passes only, the loaded model left as saved; the patches kept in raster
  order), so every patch is read, in place; ``cls`` is its CLS,
  ``mean``/``max`` over the patches.
- ViT-MSN: ``cls``; ``mean``/``max`` over the patches.
- Pixio: ``n_cls_tokens`` class tokens first; ``cls`` is the first,
  ``mean``/``max`` over the patches, ``pooler`` the model's own mean of its
  class tokens after the final layernorm.
- TIPSv2 (vision tower): CLS, then register tokens, then patches; ``pooler``
  is the layernormed CLS.
- YOLOS: CLS, patches, then the detection tokens; ``mean``/``max`` over the
  patches only, integer positions count every token (``-1`` is the last
  detection token), ``pooler`` is YOLOS' pooler over the CLS. YOLOS has no
  attention mask, so a batch its processor padded (images of different
  sizes) runs image by image, each at its own size.
- ViTDet: windowed blocks whose entries are (C, H, W) maps, read as H*W
  tokens row by row; ``mean``/``max`` over all of them (no CLS, no pooler).
- ImageGPT: one token per pixel, its color cluster (the processor's
  ``clusters``); ``mean``/``max`` over every pixel token of a block, the
  linear probe of the iGPT paper (mean over a middle block).
- VideoMAE, TimeSformer, ViViT: an image is a still video of
  ``config.num_frames`` identical frames (the number the model's position and
  time embeddings are built for); ``mean``/``max`` over every (frame, patch)
  token (tubelets of two frames for VideoMAE and ViViT), ``cls`` TimeSformer's
  and ViViT's CLS, ``pooler`` ViViT's pooler over its CLS.
- CLIPSeg, TIPSv2: CLIP-style (projector stage and zero-shot too).
- DETR, Conditional DETR, DAB-DETR, Table Transformer, Deformable DETR: the
  transformer encoder over the backbone's map (:class:`DetrEncoderAdapter`).
"""

from __future__ import annotations

import copy
import threading

import torch

from ..pooling import TokenMasks
from ._base import Adapter, Stack
from ._encoders import HierarchicalAdapter
from ._traits import DETR_ENCODER, final_norm, resolve_path
from ._vision import CLIPAdapter, GenericVisionAdapter, _to_device


class ViTLikeAdapter(GenericVisionAdapter):
    """I-JEPA (no CLS), ViT-MSN (CLS): one token per patch after the prefix."""

    family = "vit-like"
    model_types = ("ijepa", "vit_msn")


class PooledViTAdapter(GenericVisionAdapter):
    """TIPSv2's vision tower and Pixio: a pooled output computed in the forward."""

    family = "vit-pooled"
    model_types = ("tipsv2_vision_model", "pixio")

    def __init__(self, model, processor):
        super().__init__(model, processor)
        # Pixio puts several class tokens first (its pooled output is their mean)
        self.n_prefix += max(int(getattr(model.config, "n_cls_tokens", 1)) - 1, 0)
        self.has_pooler = True


class ViTMAEAdapter(GenericVisionAdapter):
    """ViT-MAE, every patch read in raster order (its pre-training masking off).

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_encoder
    >>> path = make_tiny_encoder(tempfile.mkdtemp(), "vit_mae")
    >>> adapter = load_adapter(path, device="cpu")
    >>> adapter.model.config.mask_ratio  # the loaded model is left as saved
    0.75
    >>> adapter.poolings("vision", 3)
    ('cls', 'mean', 'max')
    """

    family = "vit_mae"
    model_types = ("vit_mae",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        # MAE's checkpoints keep their pre-training ratio (0.75), read by the
        # embeddings' masking at each pass. The model stays as loaded: a
        # shallow copy of its embeddings (the same weights) with a config of
        # its own, at ratio 0, stands in for them in this adapter's passes.
        self._embeddings = next(
            m for m in model.modules() if hasattr(m, "random_masking")
        )
        self._unmasked = copy.copy(self._embeddings)
        self._unmasked.config = copy.copy(self._embeddings.config)
        self._unmasked.config.mask_ratio = 0.0

    def forward(self, stage, batch):
        pixels = batch["pixel_values"]
        patch = self.model.config.patch_size
        n = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)
        # increasing noise keeps the patches in their own order
        noise = torch.arange(n, device=pixels.device, dtype=torch.float32)
        owner = threading.get_ident()
        unmasked = self._unmasked

        def every_patch(module, args, kwargs, output):
            if threading.get_ident() != owner:
                return None  # another thread's pass through the shared model
            # its forward (not its call: the copy shares the model's hooks)
            return unmasked.forward(*args, **kwargs)

        handle = self._embeddings.register_forward_hook(every_patch, with_kwargs=True)
        try:
            return self.model(
                pixel_values=pixels, noise=noise.expand(pixels.shape[0], n)
            )
        finally:
            handle.remove()


class YolosAdapter(GenericVisionAdapter):
    """YOLOS: CLS, patches, then detection tokens, left out of mean and max."""

    family = "yolos"
    model_types = ("yolos",)
    raster_stages = ()

    def stack(self, stage, batch):
        n_detection = self.model.config.num_detection_tokens
        n_prefix = self.n_prefix

        def masks(hidden):
            masks = TokenMasks.full(
                hidden.shape[0],
                hidden.shape[1],
                hidden.device,
                n_prefix=n_prefix,
                has_cls=True,
            )
            masks.pooled[:, hidden.shape[1] - n_detection :] = False
            return masks

        return Stack(blocks=self.blocks, masks=masks)

    def extract(self, batch, stage, requests):
        # YOLOS attends to every patch, padding too: a batch its processor
        # padded (images of different sizes) runs image by image, each cut
        # to its own size, as it would run alone
        mask = batch.get("pixel_mask")
        if mask is None or bool(mask.all()):
            return super().extract(batch, stage, requests)
        parts = []
        for i in range(mask.shape[0]):
            height, width = int(mask[i, :, 0].sum()), int(mask[i, 0].sum())
            pixels = batch["pixel_values"][i : i + 1, :, :height, :width]
            parts.append(super().extract({"pixel_values": pixels}, stage, requests))
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


class VitDetAdapter(HierarchicalAdapter):
    """ViTDet: every entry a (C, H, W) map of one width (no CLS, no pooler)."""

    family = "vitdet"
    model_types = ("vitdet",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.widths = [model.config.hidden_size] * (len(self.blocks) + 1)

    def poolings(self, stage, layer):
        return ("mean", "max")


class ImageGPTAdapter(GenericVisionAdapter):
    """ImageGPT: pixel tokens (color clusters), causal blocks, final layernorm last."""

    family = "imagegpt"
    model_types = ("imagegpt",)
    raster_stages = ()

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.has_cls = False
        self.n_prefix = 0
        self.has_pooler = False
        self.norm = final_norm(model, self.traits.language_norm)

    def stack(self, stage, batch):
        stack = super().stack(stage, batch)
        stack.final_norm = self.norm
        return stack

    def forward(self, stage, batch):
        return self.model(input_ids=batch["input_ids"])


class StillVideoAdapter(GenericVisionAdapter):
    """VideoMAE, TimeSformer, ViViT: an image is a still video of ``num_frames`` frames.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_encoder, random_images
    >>> path = make_tiny_encoder(tempfile.mkdtemp(), "videomae")
    >>> adapter = load_adapter(path, device="cpu")
    >>> batch = adapter.prepare(random_images(2))
    >>> frames = adapter.model.config.num_frames
    >>> tuple(batch["pixel_values"].shape[:2]) == (2, frames)  # each image, repeated
    True
    """

    family = "still-video"
    model_types = ("videomae", "timesformer", "vivit")
    raster_stages = ()

    def prepare(self, images, prompts=None):
        frames = int(self.model.config.num_frames)
        batch = self.processor(
            [[image] * frames for image in images], return_tensors="pt"
        )
        return _to_device(dict(batch), self.device, self.dtype)


class CLIPSegAdapter(CLIPAdapter):
    """CLIPSeg's CLIP: its vision tower, projection and zero-shot logits (the
    segmentation decoder is not read)."""

    family = "clipseg"
    model_types = ("clipseg",)


class Tipsv2Adapter(CLIPAdapter):
    """TIPSv2: CLS and register tokens, then patches; no projection.

    ``pooler`` and the projector stage are the layernormed CLS (its image
    embedding); zero-shot logits are cosine similarities divided by the learned
    temperature. Text is padded to the full length, as its processor does.
    """

    family = "tipsv2"
    model_types = ("tipsv2",)
    text_padding = "max_length"

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.stages = ("vision", "projector")

    def stack(self, stage, batch):
        n_prefix = 1 + int(self.vision_config.num_register_tokens)
        return self.tower_stack(self.vision_blocks, n_prefix=n_prefix, has_cls=True)

    def dim(self, stage):
        return self.vision_config.hidden_size

    def project(self, pooled):
        return pooled

    def logit_params(self):
        return 1.0 / float(self.model.temperature.detach()), 0.0


class DetrEncoderAdapter(Adapter):
    """DETR-style detectors: the transformer encoder over the backbone's map.

    Entry 0 is the encoder's input (the backbone's last map, projected to the
    encoder's width and flattened row by row; Deformable DETR: each of its
    feature levels so, one after the other), entry k the output of encoder
    layer k, exactly HF's ``encoder_hidden_states``. ``mean``/``max`` cover the
    positions that hold the image (the detector's own padding mask, the one
    its encoder is given); integer positions count those only. Each image is padded to the processor's
    ``longest_edge`` square (``pad_size``), so that its features do not depend
    on the other images of its batch (the backbone's convolutions see the
    padding). The decoder and its object queries are not read.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm import VLMEmbeddingTransformer
    >>> from skvlm.testing import make_tiny_encoder, random_images
    >>> path = make_tiny_encoder(tempfile.mkdtemp(), "detr")
    >>> vlm = VLMEmbeddingTransformer(path, stage="vision", device="cpu", verbose=0)
    >>> vlm.fit_transform(random_images(2)).shape  # the encoder's width
    (2, 16)
    """

    family = "detr"
    model_types = (
        "detr",
        "conditional_detr",
        "dab-detr",
        "table-transformer",
        "deformable_detr",
    )
    stages = ("vision",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.blocks = resolve_path(model, self.traits.vision_blocks)
        self.encoder = resolve_path(model, DETR_ENCODER)
        self._local = threading.local()

    def n_layers(self, stage):
        return len(self.blocks) + 1

    def poolings(self, stage, layer):
        return ("mean", "max")

    def default_pooling(self, stage):
        return "mean"

    def dim(self, stage):
        return self.model.config.hidden_size

    def prepare(self, images, prompts=None):
        processor = getattr(self.processor, "image_processor", self.processor)
        longest = getattr(processor, "size", {}).get("longest_edge")
        kwargs = {"pad_size": {"height": longest, "width": longest}} if longest else {}
        batch = processor(images=images, return_tensors="pt", **kwargs)
        return _to_device(dict(batch), self.device, self.dtype)

    def stack(self, stage, batch):
        # the encoder's padding mask of this thread's pass (see forward)
        self._local.masks = masks_seen = []

        def masks(hidden):
            valid = masks_seen[-1].to(hidden.device)
            return TokenMasks(valid=valid, pooled=valid.clone())

        return Stack(blocks=self.blocks, masks=masks)

    def forward(self, stage, batch):
        local = self._local

        owner = threading.get_ident()

        def keep_mask(module, args, kwargs):
            if threading.get_ident() != owner:
                return  # another thread's pass through the shared model
            # (batch, tokens), True where the map holds the image
            local.masks.append(kwargs["attention_mask"].bool())

        handle = self.encoder.register_forward_pre_hook(keep_mask, with_kwargs=True)
        try:
            return self.model(
                pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"]
            )
        finally:
            handle.remove()


ADAPTERS = [
    ViTLikeAdapter,
    PooledViTAdapter,
    ViTMAEAdapter,
    YolosAdapter,
    VitDetAdapter,
    ImageGPTAdapter,
    StillVideoAdapter,
    CLIPSegAdapter,
    Tipsv2Adapter,
    DetrEncoderAdapter,
]

__all__ = [cls.__name__ for cls in ADAPTERS]
