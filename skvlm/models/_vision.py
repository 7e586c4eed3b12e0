"""Adapters for contrastive and vision-only encoders: CLIP, SigLIP, SigLIP2, ViT-style.

Vision stage: entry 0 is the input of the first encoder block (the patch
embeddings, after CLIP's pre-layernorm), entry k the output of block k, exactly
HF's ``output_hidden_states``; no post-layernorm is applied to any entry.
``pooler`` is the model's own pooled output (CLIP: post-layernormed CLS; SigLIP:
the attention-pooling head), which HF computes from the last block only, so it is
offered at the last layer only. Projector stage: the projected image embedding
(CLIP ``image_embeds``; SigLIP's pooled head, which is its image embedding).
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks
from ._base import Adapter, Stack
from ._traits import extra_prefix_tokens, has_class_token, resolve_path


def _to_device(batch, device, dtype):
    """Move a processor's tensors to the model's device, floats in its dtype.

    To CUDA, tensors go through pinned memory with non-blocking copies: a batch
    prepared in a worker thread is copied while the GPU still runs the previous
    one, and the model's kernels, queued on the same stream, wait for the copy.
    """
    cuda = torch.device(device).type == "cuda"
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                value = value.to(dtype)
            if cuda and value.device.type == "cpu":
                value = value.pin_memory().to(device, non_blocking=True)
            else:
                value = value.to(device)
        out[key] = value
    return out


class VisionTowerMixin:
    """Shared helpers for stacks read off a ViT-style vision tower."""

    def tower_stack(
        self, blocks, *, n_prefix, has_cls, valid=None, final_norm=None, unpack=None
    ):
        """A :class:`Stack` whose masks exclude ``n_prefix`` leading special tokens
        (``unpack``: how a block's output becomes (batch, tokens, dim))."""

        def masks(hidden):
            batch, tokens = hidden.shape[:2]
            if valid is None:
                return TokenMasks.full(
                    batch, tokens, hidden.device, n_prefix=n_prefix, has_cls=has_cls
                )
            pooled = valid.clone()
            pooled[:, :n_prefix] = False
            return TokenMasks(valid=valid, pooled=pooled, has_cls=has_cls)

        if unpack is None:
            return Stack(blocks=blocks, masks=masks, final_norm=final_norm)
        return Stack(blocks=blocks, masks=masks, final_norm=final_norm, unpack=unpack)


class CLIPAdapter(VisionTowerMixin, Adapter):
    """CLIP (and CLIP vision-only checkpoints)."""

    family = "clip"
    model_types = ("clip", "clip_vision_model")
    raster_stages = ("vision",)
    has_cls = True
    probability = "softmax"  # how zero-shot logits become class probabilities

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.tower = encoder_tower(model, self.traits)
        self.vision_config = getattr(model.config, "vision_config", model.config)
        # a vision-only checkpoint (clip_vision_model) has no projection
        self.projection = resolve_path(model, next(iter(self.traits.projector), None))
        has_projection = self.projection is not None
        self.stages = ("vision", "projector") if has_projection else ("vision",)

    def n_layers(self, stage):
        return self.vision_config.num_hidden_layers + 1 if stage == "vision" else 1

    def poolings(self, stage, layer):
        if stage == "projector":
            return ("pooler",)
        names = ("cls", "mean", "max") if self.has_cls else ("mean", "max")
        if layer == self.n_layers(stage) - 1 and self._has_pooler():
            names = names + ("pooler",)
        return names

    def _has_pooler(self):
        return True

    def default_pooling(self, stage):
        return "pooler" if stage == "projector" else ("cls" if self.has_cls else "mean")

    def dim(self, stage):
        if stage == "projector":
            return self.model.config.projection_dim
        return self.vision_config.hidden_size

    def prepare(self, images, prompts=None):
        processor = getattr(self.processor, "image_processor", self.processor)
        batch = processor(images=images, return_tensors="pt")
        return _to_device(dict(batch), self.device, self.dtype)

    def vision_inputs(self, batch):
        return {"pixel_values": batch["pixel_values"]}

    def stack(self, stage, batch):
        return self.tower_stack(
            self.vision_blocks, n_prefix=int(self.has_cls), has_cls=self.has_cls
        )

    @property
    def vision_blocks(self):
        return resolve_path(self.tower, self.traits.vision_blocks)

    def forward(self, stage, batch):
        return self.tower(**self.vision_inputs(batch))

    def pooler(self, stage, batch, outputs):
        return outputs.pooler_output

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        outputs = self.tower(**self.vision_inputs(batch))
        return {(0, "pooler"): self.project(outputs.pooler_output).float()}

    def project(self, pooled):
        return self.projection(pooled)

    # -- the text side, for zero-shot classification --------------------------------
    text_padding = "longest"

    def encode_text(self, texts, batch_size=64):
        """Text embeddings in the joint space (not normalised), float32 (n, dim)."""
        if not hasattr(self.model, "get_text_features"):
            raise ValueError(
                f"The {self.family} model has no text encoder (a vision-only "
                "checkpoint); zero-shot classification needs the full model."
            )
        tokenizer = self.processor.tokenizer
        kwargs = {"padding": self.text_padding, "truncation": True}
        if self.text_padding == "max_length":
            kwargs["max_length"] = self.model.config.text_config.max_position_embeddings
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(
                list(texts[start : start + batch_size]), return_tensors="pt", **kwargs
            )
            tokens = {
                k: v.to(self.device) for k, v in tokens.items() if k != "token_type_ids"
            }
            chunks.append(self.model.get_text_features(**tokens).pooler_output.float())
        return torch.cat(chunks)

    def logit_params(self):
        """(scale, bias) turning cosine similarities into the model's logits."""
        scale = float(self.model.logit_scale.detach().exp())
        bias = getattr(self.model, "logit_bias", None)
        return scale, (0.0 if bias is None else float(bias.detach()))


class SiglipAdapter(CLIPAdapter):
    """SigLIP: no CLS token; the pooled head output is also the image embedding."""

    family = "siglip"
    model_types = ("siglip", "siglip_vision_model")
    has_cls = False

    def __init__(self, model, processor):
        Adapter.__init__(self, model, processor)
        self.tower = encoder_tower(model, self.traits)  # or vision-only
        self.vision_config = getattr(model.config, "vision_config", model.config)
        self.stages = ("vision", "projector") if self._has_pooler() else ("vision",)

    def _has_pooler(self):
        return resolve_path(self.tower, self.traits.vision_head) is not None

    # SigLIP was trained on text padded to the full length; so is its zero-shot use.
    text_padding = "max_length"
    probability = "sigmoid"

    def dim(self, stage):
        return self.vision_config.hidden_size

    def project(self, pooled):
        return pooled


def naflex_inputs(batch):
    """A SigLIP2 (NaFlex) tower's inputs: each image's patch sequence, padded to
    the batch's patch budget, its real patches marked, and its patch grid."""
    return {
        "pixel_values": batch["pixel_values"],
        "pixel_attention_mask": batch["pixel_attention_mask"],
        "spatial_shapes": batch["spatial_shapes"],
    }


def naflex_valid(batch):
    """Which of a NaFlex batch's patch positions hold an image's real patches."""
    return batch["pixel_attention_mask"].bool()


class Siglip2Adapter(SiglipAdapter):
    """SigLIP2 (NaFlex): variable patch grids padded to a fixed budget, masked."""

    family = "siglip2"
    model_types = ("siglip2", "siglip2_vision_model")
    raster_stages = ()  # NaFlex grids vary per image

    def vision_inputs(self, batch):
        return naflex_inputs(batch)

    def stack(self, stage, batch):
        return self.tower_stack(
            self.vision_blocks,
            n_prefix=0,
            has_cls=False,
            valid=naflex_valid(batch),
        )


class GenericVisionAdapter(VisionTowerMixin, Adapter):
    """Any vision encoder ``AutoModel`` loads whose blocks form one ModuleList (ViT, DINOv2...)."""

    family = "vision-encoder"
    model_types = (
        "vit",
        "dinov2",
        "dinov2_with_registers",
        "deit",
        "beit",
        "data2vec-vision",
    )
    stages = ("vision",)
    raster_stages = ("vision",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        config = model.config
        self.blocks = _find_blocks(model, config.num_hidden_layers)
        self.has_cls = has_class_token(model)
        self.n_prefix = int(self.has_cls) + int(
            getattr(config, "num_register_tokens", 0) or 0
        )
        # DeiT's distillation token is not a patch
        self.n_prefix += extra_prefix_tokens(model)
        self.has_pooler = config.model_type.startswith("dinov2") or (
            resolve_path(encoder_tower(model, self.traits), self.traits.vision_head)
            is not None
        )

    def n_layers(self, stage):
        return len(self.blocks) + 1

    def poolings(self, stage, layer):
        names = ("cls", "mean", "max") if self.has_cls else ("mean", "max")
        if layer == self.n_layers(stage) - 1 and self.has_pooler:
            names = names + ("pooler",)
        return names

    def dim(self, stage):
        return self.model.config.hidden_size

    def prepare(self, images, prompts=None):
        batch = self.processor(images=images, return_tensors="pt")
        return _to_device(dict(batch), self.device, self.dtype)

    def stack(self, stage, batch):
        return self.tower_stack(
            self.blocks, n_prefix=self.n_prefix, has_cls=self.has_cls
        )

    def forward(self, stage, batch):
        return self.model(pixel_values=batch["pixel_values"])

    def pooler(self, stage, batch, outputs):
        return outputs.pooler_output


def _find_blocks(model, n_blocks):
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_blocks:
            return module
    raise ValueError(
        f"{type(model).__name__}: no list of {n_blocks} transformer blocks found, so "
        "skvlm cannot read its hidden states layer by layer."
    )


def encoder_tower(model, traits):
    """An encoder's vision tower: its traits' ``vision``, or the model itself
    (a vision-only checkpoint, a ViT)."""
    tower = resolve_path(model, traits.vision)
    return model if tower is None else tower
