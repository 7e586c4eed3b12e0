"""DiffusionGemma: an auto-regressive Gemma 4 encoder and a block-diffusion decoder.

The encoder reads the image and the prompt left to right, as Gemma 4 does,
and hands only its KV cache to the decoder, which denoises blocks of masked
answer tokens in parallel. skvlm reads the encoder:

- ``vision``: the tower's blocks over each image's real patches, in the
  processor's row-by-row order (:mod:`skvlm.models._patches`, as Gemma 4's).
  ``mean`` and ``max``.
- ``projector``: one entry, the image tokens the encoder receives
  (``get_image_features``: Gemma 4's tower, pooled, then ``embed_vision``).
  ``mean`` and ``max``.
- ``language``: the encoder's text stack over the merged sequence: entry 0 =
  the input embeddings with the image tokens merged in, entry k = after
  layer k, the last entry after the final norm (HF's ``hidden_states`` of
  the encoder). The decoder never runs.

Refused, with the reasons in :data:`skvlm.models.TRAITS`: generative
scoring and the tuner (a block-diffusion decoder gives no left-to-right
probability of an answer to score or to train on).
"""

from __future__ import annotations

from ._generic import GenericImageTextAdapter


class DiffusionGemmaAdapter(GenericImageTextAdapter):
    """DiffusionGemma (``DiffusionGemmaForBlockDiffusion``): see the module's notes.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_vlm
    >>> path = make_tiny_vlm(tempfile.mkdtemp(), "diffusion_gemma")
    >>> load_adapter(path, device="cpu").stages
    ('vision', 'projector', 'language')
    """

    family = "diffusion_gemma"
    model_types = ("diffusion_gemma",)
    stages = ("projector", "language")
    fallback = False

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = "diffusion_gemma"
        # The encoder alone: it embeds the image tokens (get_image_features)
        # and runs the text stack; the block-diffusion decoder is never called.
        self.base = model.get_encoder()
        self.unavailable.pop("projector", None)
        self.stages = tuple(
            s for s in ("vision", "projector", "language") if s not in self.unavailable
        )


ADAPTERS = [DiffusionGemmaAdapter]

__all__ = ["DiffusionGemmaAdapter"]
