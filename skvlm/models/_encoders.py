"""Adapters for more vision encoders and CLIP-style models.

ViT-like towers (one width, one token per patch): DINOv3 ViT (CLS, then
register tokens, then patches), MLCD (CLS, then patches; 2-D rotary
positions; ``pooler`` = the post-layernormed CLS, as CLIP's), AIMv2
(patches only; its attention-pooling head is the ``pooler``), and the CLIP-style MetaCLIP 2, AltCLIP and
Chinese-CLIP, which are CLIP's vision tower beside another text encoder.

Hierarchical encoders (ConvNeXt, ConvNeXt-V2, DINOv3 ConvNeXt, Swin, Swin-V2,
Hiera, ALIGN's EfficientNet): entry 0 of the vision stage is the input of the
first stage (HF's ``hidden_states[0]``) and entry k the output of stage k
(of block k for ALIGN), exactly HF's ``output_hidden_states``. Each entry has
its own width and resolution; its "tokens" are its spatial positions,
flattened row by row (a convolutional map of C channels on an H x W grid is
H*W tokens of width C; Hiera's are in HF's own, mask-unit order). ``mean`` and
``max`` reduce over all of them; ``pooler`` is the model's own pooled output
of the last entry; token positions are not offered, since a position means a
different place at every resolution.
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks
from ._base import Adapter, Stack
from ._traits import resolve_path
from ._vision import CLIPAdapter, GenericVisionAdapter, _to_device, encoder_tower


# -- ViT-like towers -------------------------------------------------------------------
class DINOv3ViTAdapter(GenericVisionAdapter):
    """DINOv3 ViT: CLS and register tokens, then patches; pooler = the normed CLS."""

    family = "dinov3_vit"
    model_types = ("dinov3_vit",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.has_pooler = True


class MLCDAdapter(GenericVisionAdapter):
    """MLCD: CLIP's layout (CLS, then patches); pooler = the post-layernormed CLS.

    Entry 0 is the input of the first block (after the pre-layernorm), entry k
    the output of block k, as HF's ``hidden_states``. DeepGlint's checkpoints
    name their type ``mlcd``, transformers' own config ``mlcd_vision_model``.
    """

    family = "mlcd"
    model_types = ("mlcd", "mlcd_vision_model")

    def __init__(self, model, processor):
        super().__init__(model, processor)
        # Its CLS is a ``class_embedding``, and its pooled output comes from the
        # forward pass, not from a ``pooler`` module.
        self.has_cls = True
        self.n_prefix = 1
        self.has_pooler = True


class Aimv2Adapter(CLIPAdapter):
    """AIMv2 (vision-only or CLIP-style): no CLS; the attention-pooling head is the pooler.

    The projector stage is the projected image embedding (``get_image_features``).
    """

    family = "aimv2"
    model_types = ("aimv2", "aimv2_vision_model")
    has_cls = False

    def _has_pooler(self):
        return resolve_path(self.tower, self.traits.vision_head) is not None

    def logit_params(self):
        # AIMv2 clamps its learned log-scale before exponentiating it.
        log_scale = self.model.logit_scale.detach().clamp(
            0.0, self.model.max_log_logit_scale
        )
        return float(log_scale.exp()), 0.0


class MetaClip2Adapter(CLIPAdapter):
    """MetaCLIP 2: CLIP's architecture with a multilingual (XLM-R) tokenizer."""

    family = "metaclip_2"
    model_types = ("metaclip_2",)


class AltCLIPAdapter(CLIPAdapter):
    """AltCLIP: CLIP's vision tower beside an XLM-R text encoder."""

    family = "altclip"
    model_types = ("altclip",)


class ChineseCLIPAdapter(CLIPAdapter):
    """Chinese-CLIP: CLIP's vision tower beside a BERT text encoder."""

    family = "chinese_clip"
    model_types = ("chinese_clip", "chinese_clip_vision_model")


# -- hierarchical encoders ---------------------------------------------------------------
def _as_tokens(hidden):
    """(batch, C, H, W) feature maps as (batch, H*W, C), row by row; tokens as given."""
    if hidden.dim() == 4:
        return hidden.flatten(2).transpose(1, 2)
    return hidden


def map_stack(blocks):
    """A :class:`Stack` over ``blocks`` whose entries may be (C, H, W) maps.

    A hierarchy's entries differ in token count; none is padded, so each
    entry's masks are all-true over its own tokens (``entry_masks``).
    """

    def masks(hidden):
        batch_size, tokens = hidden.shape[:2]
        return TokenMasks.full(batch_size, tokens, hidden.device)

    return Stack(blocks=blocks, masks=masks, unpack=_as_tokens, entry_masks=True)


class HierarchicalAdapter(Adapter):
    """Encoders whose stages change resolution and width (see the module's notes).

    ``tower`` (the module called with ``pixel_values``) and ``blocks`` (the
    modules whose outputs are entries 1..L) come from the family's traits;
    subclasses give ``widths`` (the width of every entry, 0..L).
    """

    stages = ("vision",)
    positions = False
    prompt_stages = ()

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.tower = encoder_tower(model, self.traits)
        self.blocks = resolve_path(self.tower, self.traits.vision_blocks)

    def n_layers(self, stage):
        return len(self.blocks) + 1 if stage == "vision" else 1

    def dims(self, stage):
        return tuple(self.widths) if stage == "vision" else (self.dim(stage),)

    def dim(self, stage):
        return self.widths[-1]

    def poolings(self, stage, layer):
        if stage == "projector":
            return ("pooler",)
        last = layer == self.n_layers(stage) - 1
        return ("mean", "max", "pooler") if last else ("mean", "max")

    def default_pooling(self, stage):
        return "pooler" if stage == "projector" else "mean"

    def prepare(self, images, prompts=None):
        processor = getattr(self.processor, "image_processor", self.processor)
        batch = processor(images=images, return_tensors="pt")
        return _to_device(
            {"pixel_values": batch["pixel_values"]}, self.device, self.dtype
        )

    def stack(self, stage, batch):
        return map_stack(self.blocks)

    def forward(self, stage, batch):
        return self.tower(pixel_values=batch["pixel_values"])

    def pooler(self, stage, batch, outputs):
        return outputs.pooler_output


class ConvNextAdapter(HierarchicalAdapter):
    """ConvNeXt and ConvNeXt-V2: entry 0 = the stem's output, k = stage k's output.

    ``pooler`` is the layer-normed spatial mean of the last stage.
    """

    family = "convnext"
    model_types = ("convnext", "convnextv2")

    def __init__(self, model, processor):
        super().__init__(model, processor)
        sizes = list(model.config.hidden_sizes)
        self.widths = [sizes[0], *sizes]


class DINOv3ConvNextAdapter(HierarchicalAdapter):
    """DINOv3 ConvNeXt: entry 0 = the normalised pixels (HF's ``hidden_states[0]``).

    Each stage begins with its own downsampling, so the stack's input is the
    image itself, one token per pixel of ``num_channels`` values. ``pooler`` is
    the layer-normed spatial mean of the last stage.
    """

    family = "dinov3_convnext"
    model_types = ("dinov3_convnext",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.widths = [model.config.num_channels, *model.config.hidden_sizes]


class SwinAdapter(HierarchicalAdapter):
    """Swin and Swin-V2: entry 0 = the patch embeddings, k = stage k's output.

    As in HF's ``hidden_states``, a stage's output is taken after its patch
    merging (so it has the next stage's resolution and width); the last stage
    merges nothing. ``pooler`` is the mean of the layer-normed last entry.
    """

    family = "swin"
    model_types = ("swin", "swinv2")

    def __init__(self, model, processor):
        super().__init__(model, processor)
        config = model.config
        n = len(config.depths)
        self.widths = [config.embed_dim] + [
            config.embed_dim * 2 ** min(i + 1, n - 1) for i in range(n)
        ]


class HieraAdapter(HierarchicalAdapter):
    """Hiera: entry 0 = the patch embeddings, k = stage k's output.

    Tokens come in HF's mask-unit order (``hidden_states``, not the spatially
    re-rolled ``reshaped_hidden_states``); ``mean`` and ``max`` do not depend on
    it. ``pooler`` is the spatial mean of the last stage, layer-normed.
    """

    family = "hiera"
    model_types = ("hiera",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        config = model.config
        self.widths = [config.embed_dim] + [
            int(config.embed_dim * config.embed_dim_multiplier**i)
            for i in range(len(config.depths))
        ]


class AlignAdapter(HierarchicalAdapter):
    """ALIGN: an EfficientNet image tower beside a BERT text encoder.

    Vision stage: entry 0 = the stem's output, k = EfficientNet block k's
    output. Projector stage: the image embedding, which for ALIGN is the vision
    tower's pooled output itself (``get_image_features``; no projection).
    Zero-shot logits are cosine similarities divided by the learned
    temperature.
    """

    family = "align"
    model_types = ("align",)
    stages = ("vision", "projector")
    probability = "softmax"
    text_padding = "longest"
    encode_text = CLIPAdapter.encode_text

    def __init__(self, model, processor):
        super().__init__(model, processor)
        # EfficientNet blocks: the first convolution of the first block reads
        # the stem's output, the last convolution of each block writes its own
        self.widths = [_convolutions(self.blocks[0])[0].in_channels] + [
            _convolutions(block)[-1].out_channels for block in self.blocks
        ]

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        outputs = self.tower(pixel_values=batch["pixel_values"])
        return {(0, "pooler"): outputs.pooler_output.float()}

    def logit_params(self):
        return 1.0 / float(self.model.temperature.detach()), 0.0


def _convolutions(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


ADAPTERS = [
    DINOv3ViTAdapter,
    MLCDAdapter,
    Aimv2Adapter,
    MetaClip2Adapter,
    AltCLIPAdapter,
    ChineseCLIPAdapter,
    ConvNextAdapter,
    DINOv3ConvNextAdapter,
    SwinAdapter,
    HieraAdapter,
    AlignAdapter,
]

__all__ = [cls.__name__ for cls in ADAPTERS]
