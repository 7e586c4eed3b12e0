"""VideoPrism: a video encoder read on still images, and its video-text model.

An image is a still video of ``config.num_frames`` identical frames (the
number the model's temporal position embeddings are built for), made by the
family's video processor. VideoPrism's tower runs a spatial encoder over each
frame's patches, then a temporal encoder over each patch's frames; HF returns
only the last state of each. The vision stage reads every block of both, in
one layer index space (as :mod:`skvlm.models._chained` does for chained
towers), with ``S`` spatial and ``E`` temporal blocks:

- entry 0: the input of the first spatial block (patch embeddings plus
  spatial positions);
- entries 1 to S: the outputs of the spatial blocks (entry S is HF's
  ``last_spatial_hidden_state``, before the tower's ``layernorm1``);
- entries S + 1 to S + E: the outputs of the temporal blocks (entry S + E is
  HF's ``last_temporal_hidden_state``, before ``layernorm2``).

The temporal encoder's input (``layernorm1``'s output plus time positions)
is no entry. Every entry holds the same ``num_frames * patches`` tokens, frame
by frame, each frame's patches row by row (the order of HF's
``last_hidden_state``); there is no class token and no pooler: ``mean`` and
``max`` pool every token. ``videoprism`` (the video-text model): the
projector stage is its video embedding (HF's ``get_video_features``: the
auxiliary blocks, attention pooling, layernorm and L2 norm), and zero-shot
logits are the cosine similarities with the text embeddings (scale 1, no
bias; their softmax over the classes is HF's ``logits_per_text``, transposed,
with no temperature).

Its video processor (transformers' ``LlavaOnevisionVideoProcessor``) exists
only with torchvision.
"""

from __future__ import annotations

import threading

from .._transformers_compat import torchvision_available
from ..pooling import TokenMasks
from ._base import Adapter, Stack
from ._loading import load_processor
from ._traits import resolve_path
from ._vision import CLIPAdapter, _to_device, encoder_tower

__all__ = ["VideoPrismAdapter"]

_NEEDS_TORCHVISION = (
    "{family}: its video processor (VideoPrism reads each image as a still "
    "video) exists only with torchvision in transformers, and torchvision is "
    "not installed (or does not import). Install torchvision (pip install "
    "torchvision) to load it."
)


class VideoPrismAdapter(CLIPAdapter):
    """VideoPrism (video-text) and its vision model: spatial then temporal blocks."""

    family = "videoprism"
    model_types = ("videoprism", "videoprism_vision_model")
    raster_stages = ()
    has_cls = False
    text_padding = "max_length"

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """The family's processor; without torchvision, an error naming the fix."""
        try:
            return load_processor(path, revision=revision, model_kwargs=model_kwargs)
        except (ImportError, ValueError, OSError) as exc:
            if torchvision_available():
                raise
            raise ImportError(_NEEDS_TORCHVISION.format(family=cls.family)) from exc

    def __init__(self, model, processor):
        Adapter.__init__(self, model, processor)
        self.tower = encoder_tower(model, self.traits)
        self.vision_config = self.tower.config
        spatial, temporal = (
            resolve_path(self.tower, path) for path in self.traits.vision_blocks
        )
        self.spatial, self.temporal = list(spatial), list(temporal)
        self.projection = resolve_path(model, next(iter(self.traits.projector), None))
        has_projection = self.projection is not None
        self.stages = ("vision", "projector") if has_projection else ("vision",)
        self._local = threading.local()

    def n_layers(self, stage):
        if stage == "projector":
            return 1
        return len(self.spatial) + len(self.temporal) + 1

    def _has_pooler(self):
        return False

    def dim(self, stage):
        return self.vision_config.hidden_size

    def prepare(self, images, prompts=None):
        frames = int(self.vision_config.num_frames)
        videos = [[image] * frames for image in images]
        # the video-text processor applies its own defaults (no
        # normalization); a vision-only checkpoint has the video processor
        batch = self.processor(videos=videos, return_tensors="pt")
        keep = {"pixel_values_videos": batch["pixel_values_videos"]}
        return _to_device(keep, self.device, self.dtype)

    def vision_inputs(self, batch):
        return {"pixel_values_videos": batch["pixel_values_videos"]}

    def stack(self, stage, batch):
        shape = batch["pixel_values_videos"].shape
        n_images, frames = int(shape[0]), int(shape[1])
        local = self._local

        def unpack(hidden):
            if not getattr(local, "temporal", False):
                # (images * frames, patches, dim): frame by frame
                return hidden.reshape(n_images, -1, hidden.shape[-1])
            # (images * patches, frames, dim): back to frame by frame
            dim = hidden.shape[-1]
            hidden = hidden.reshape(n_images, -1, frames, dim).transpose(1, 2)
            return hidden.reshape(n_images, -1, dim)

        def masks(hidden):
            return TokenMasks.full(hidden.shape[0], hidden.shape[1], hidden.device)

        return Stack(blocks=self.spatial + self.temporal, masks=masks, unpack=unpack)

    def forward(self, stage, batch):
        local = self._local
        local.temporal = False

        def enter_temporal(module, args):
            local.temporal = True

        handle = self.temporal[0].register_forward_pre_hook(enter_temporal)
        try:
            return self.tower(**self.vision_inputs(batch))
        finally:
            handle.remove()
            local.temporal = False

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        outputs = self.model.get_video_features(**self.vision_inputs(batch))
        # (videos, 1, dim): the attention pooling's one query
        pooled = outputs.pooler_output
        return {(0, "pooler"): pooled.reshape(pooled.shape[0], -1).float()}

    def logit_params(self):
        """Cosine similarities are the logits: scale 1, no bias."""
        return 1.0, 0.0


ADAPTERS = [VideoPrismAdapter]
