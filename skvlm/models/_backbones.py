"""One adapter for the convolutional and hierarchical image backbones.

ResNet, RegNet, BiT, EfficientNet, MobileNet V1/V2, MobileViT (V1, V2),
LeViT, PVT, PoolFormer, FocalNet, SwiftFormer, SegFormer's and GLPN's
encoders, Depth Pro's image tower, Swin2SR's body and timm's models
(``timm_wrapper``):
models whose ``output_hidden_states`` are (batch, C, H, W) feature maps or
(batch, tokens, dim) sequences, one per block or stage. Nothing about them
is written per type: the vision stage is read off the model's own outputs.

Entry k of the vision stage is HF's ``hidden_states[k]`` (whatever the model
puts first: the stem's output for ResNet, the first block's output for
MobileNet V1; for Depth Pro, its DINOv2 image tower's states over the
downscaled image, CLS token first, pooled with its patches). Where the
model's ``last_hidden_state`` is wider than its last hidden state (a final
1x1 convolution: MobileNet V2, MobileViT, EfficientNet), it is one more,
last entry, the map the model's pooled output pools. A map of
C channels on an H x W grid is H*W tokens of width C, row by row; ``mean`` and
``max`` reduce over all of them (global average and max pooling), ``pooler``
(last entry only, where the model has one of that entry's width) is the
model's own pooled output. The number of entries and their widths are learnt
from one forward pass of a blank image, the first time they are asked.

Unlike the other adapters, these do not stop the pass after the deepest
layer asked: the entries are the model's own ``output_hidden_states``, which
each type produces at different points of its forward, with no list of
blocks to hook, so the whole model runs whatever the layers.

DPT's ViT encoder is served as the ViT-like towers are (CLS, then patches).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..pooling import TokenMasks
from ._encoders import HierarchicalAdapter, _as_tokens
from ._vision import GenericVisionAdapter, _to_device

#: The model types served here, every one tested on a tiny checkpoint
#: (``skvlm.testing.make_tiny_backbone``).
BACKBONE_TYPES = (
    "bit",
    "depth_pro",
    "efficientnet",
    "focalnet",
    "glpn",
    "levit",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilevit",
    "mobilevitv2",
    "poolformer",
    "pvt",
    "regnet",
    "resnet",
    "segformer",
    "swiftformer",
    "swin2sr",
    "timm_wrapper",
)


class BackboneAdapter(HierarchicalAdapter):
    """Convolutional and hierarchical backbones (see the module's notes).

    The family is the model type itself. Its ``capture`` runs the whole model
    (no early exit at the deepest layer asked: see the module's notes).

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_backbone
    >>> adapter = load_adapter(
    ...     make_tiny_backbone(tempfile.mkdtemp(), "resnet"), device="cpu"
    ... )
    >>> adapter.family, adapter.stages, adapter.n_layers("vision")
    ('resnet', ('vision',), 5)
    >>> adapter.poolings("vision", 4)
    ('mean', 'max', 'pooler')
    """

    family = "backbone"
    model_types = BACKBONE_TYPES

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = model.config.model_type
        self._layout = None

    # -- the layout, from one pass of a blank image ---------------------------------
    def _entries(self, outputs):
        hidden = outputs.hidden_states
        entries = list(hidden)
        last = getattr(outputs, "last_hidden_state", None)
        if last is not None and _width(last) != _width(entries[-1]):
            entries.append(last)
        return entries

    def _pooled(self, outputs):
        pooled = getattr(outputs, "pooler_output", None)
        return None if pooled is None else pooled.flatten(1)

    @property
    def layout(self):
        """``(widths of the entries, whether a pooler of the last one exists)``."""
        if self._layout is None:
            batch = self.prepare([Image.new("RGB", (64, 64))])
            with torch.no_grad():
                outputs = self.forward("vision", batch)
            widths = [_width(h) for h in self._entries(outputs)]
            pooled = self._pooled(outputs)
            has_pooler = pooled is not None and pooled.shape[-1] == widths[-1]
            self._layout = (widths, has_pooler)
        return self._layout

    @property
    def widths(self):
        return self.layout[0]

    def n_layers(self, stage):
        return len(self.widths)

    def poolings(self, stage, layer):
        last = layer == self.n_layers(stage) - 1
        return ("mean", "max", "pooler") if last and self.layout[1] else ("mean", "max")

    # -- computing -------------------------------------------------------------------
    def prepare(self, images, prompts=None):
        """Pixel values of the batch; one tensor per image where their sizes differ.

        GLPN's and Swin2SR's processors keep each image's size (rounded to a
        multiple of 32, padded to a multiple of 8): such a batch runs image by
        image, so any batch gives the same vectors as each image alone.
        """
        processor = getattr(self.processor, "image_processor", self.processor)
        pixels = processor(images=images)["pixel_values"]
        pixels = [torch.as_tensor(np.ascontiguousarray(p)) for p in pixels]
        if len({tuple(p.shape) for p in pixels}) == 1:
            return _to_device(
                {"pixel_values": torch.stack(pixels)}, self.device, self.dtype
            )
        return {
            "pixel_list": [
                _to_device({"pixel_values": p[None]}, self.device, self.dtype)
                for p in pixels
            ]
        }

    def forward(self, stage, batch):
        return self.tower(pixel_values=batch["pixel_values"], output_hidden_states=True)

    def capture(self, batch, stage, layers, read, *, need_outputs=False):
        if "pixel_list" in batch:  # images of different sizes, one at a time
            parts = [
                self.capture(one, stage, layers, read, need_outputs=need_outputs)
                for one in batch["pixel_list"]
            ]
            results = {
                layer: _concatenate([part[0][layer] for part in parts])
                for layer in parts[0][0]
            }
            return results, [part[1] for part in parts]
        outputs = self.forward(stage, batch)
        entries = self._entries(outputs)
        results = {}
        for layer in sorted(set(layers)):
            hidden = _as_tokens(entries[layer])
            masks = TokenMasks.full(hidden.shape[0], hidden.shape[1], hidden.device)
            results[layer] = read(layer, hidden, masks)
        return results, outputs

    def pooler(self, stage, batch, outputs):
        if isinstance(outputs, list):
            return torch.cat([self._pooled(one) for one in outputs])
        return self._pooled(outputs)


def _concatenate(values):
    """Per-image ``read`` results joined along the batch (tensors, or dicts of them)."""
    if isinstance(values[0], dict):
        return {key: torch.cat([v[key] for v in values]) for key in values[0]}
    return torch.cat(values)


class DPTAdapter(GenericVisionAdapter):
    """DPT: its ViT encoder (CLS, then patches), as the ViT-like towers.

    Entry 0 is the embeddings, entry k the output of ViT block k (HF's
    ``hidden_states``); ``pooler`` is DPT's own pooler over the normed CLS.
    The depth neck and head are not run.
    """

    family = "dpt"
    model_types = ("dpt",)


def _width(hidden):
    return int(hidden.shape[1] if hidden.dim() == 4 else hidden.shape[-1])


ADAPTERS = [BackboneAdapter, DPTAdapter]

__all__ = ["BACKBONE_TYPES", "BackboneAdapter", "DPTAdapter"]
