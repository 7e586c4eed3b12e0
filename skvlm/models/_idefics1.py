"""The adapter of IDEFICS (v1): a CLIP-like tower read by gated cross-attention.

IDEFICS (``IdeficsForVisionText2Text``, HuggingFaceM4/idefics-9b and -80b,
their ``-instruct`` versions) is an open Flamingo. Its tower (a CLIP ViT,
``model.vision_model``) encodes the image; with ``use_resampler`` (every
released checkpoint) a perceiver resampler (``model.perceiver_resampler``)
compresses the tower's tokens to ``resampler_n_latents`` latents. The
language model reads them only through its *gated cross-attention layers*
(``model.gated_cross_attn_layers``), one before every
``cross_layer_interval``-th decoder block: each text token attends to the
image its ``image_attention_mask`` names (the last image before it).

Its processor takes a prompt as a list of text and images: each image becomes
``<fake_token_around_image><image><fake_token_around_image>`` in the text,
one ``<image>`` token per image (whose embedding is a plain word's: the
image's features are never written at prompt positions). skvlm writes the
prompt as a string with one ``<image>`` placeholder, cuts it there and hands
the processor ``[text before, image, text after]``; without a placeholder
the prompt becomes ``"User:<image>{prompt}\\nAssistant:"`` (the format of
HF's IDEFICS examples), or the processor's chat template where it has one.

Stages and layers:

- ``vision``: the tower's blocks (entry 0 = the patch and class embeddings
  after ``pre_layrnorm``, the input of the first block; k = after block k).
  The tower returns no ``hidden_states`` of its own; its last entry is its
  ``last_hidden_state`` (no ``post_layernorm``: what the resampler reads).
  ``cls`` is the class token; ``mean`` and ``max`` pool the patches.
- ``projector``: the image's tokens as the cross-attention layers read them
  (their keys and values): the perceiver resampler's ``resampler_n_latents``
  latents where ``use_resampler``; without the resampler, the tower's
  ``last_hidden_state`` itself, class token included (the cross-attention
  reads every token). ``mean`` and ``max`` pool all of them; its width is
  the tower's.
- ``language``: HF's ``hidden_states``: entry k = the input of decoder block
  k (entry 0 is *not* the word embeddings: it is the first gated
  cross-attention layer's output, where the image first enters; the
  cross-attention layers before later blocks are inside the entries'
  differences), the last entry after the final norm. ``image_mean`` is the
  state at the prompt's one ``<image>`` token: a word position that (like
  every token after it) cross-attends to the image, the first one to do so;
  ``text_mean`` covers the prompt's words (``<s>``, ``<image>``,
  ``<fake_token_around_image>`` and other special tokens left out).

Generative scoring: the cross-attention layers keep nothing in the cache
(transformers refuses one there), so every pass over the cached prompt needs
the image again. The probabilistic scorer caches the prompt once per image
and hands each pass over it the image's states as the cross-attention layers
read them (:meth:`IdeficsAdapter.held_inputs`: the resampler's latents as
``perceiver_embeddings``, or the tower's output as
``image_encoder_embeddings``), as transformers' own ``generate`` does; the
tower runs once more per image for that, not once per class.

Tuning: ``train="projector"`` trains what IDEFICS itself trained between its
frozen tower and language model: the resampler and the gated
cross-attention layers (``Traits.projector``); ``"lora"`` adds LoRA on the
decoder blocks' linear layers to them; ``"full"`` trains the decoder too.
"""

from __future__ import annotations

from ._base import LANGUAGE_POOLINGS, TOKEN_POOLINGS
from ._chat import special_token_ids
from ._generic import GenericImageTextAdapter
from ._traits import resolve_path
from ._vision import _to_device

_FAKE = "<fake_token_around_image>"


class IdeficsAdapter(GenericImageTextAdapter):
    """IDEFICS v1 (``IdeficsForVisionText2Text``); see the module doc.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_idefics
    >>> adapter = load_adapter(make_tiny_idefics(tempfile.mkdtemp()), device="cpu")
    >>> adapter.stages, adapter.n_layers("vision"), adapter.n_layers("language")
    (('vision', 'projector', 'language'), 4, 5)
    >>> adapter.format_prompt("What is it?")
    'User:<image>What is it?\\nAssistant:'
    """

    family = "idefics"
    model_types = ("idefics",)
    fallback = False
    stages = ("vision", "projector", "language")
    fallback_format = "User:{image}{prompt}\nAssistant:"

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        # no image token id in the config: the processor's
        self.image_token_id = processor.image_token_id
        self.image_token = "<image>"
        self._special_ids = special_token_ids(processor.tokenizer) - {
            self.image_token_id
        }
        # the resampler, where the checkpoint has one (use_resampler)
        self.resampler = (
            resolve_path(model, self.traits.projector[-1])
            if model.config.use_resampler
            else None
        )
        # the generic checks (get_image_features) do not apply
        self.unavailable = dict(self.traits.unsupported)
        self.stages = tuple(s for s in type(self).stages if s not in self.unavailable)

    def poolings(self, stage, layer):
        if stage == "language":
            return LANGUAGE_POOLINGS
        if stage == "vision":
            return ("cls", *TOKEN_POOLINGS)
        return TOKEN_POOLINGS

    def dim(self, stage):
        if stage == "language":
            return self.model.config.hidden_size
        return self.model.config.vision_config.embed_dim  # the resampler's too

    # -- inputs ----------------------------------------------------------------
    def _items(self, text, image):
        """``[before, image, after]``: the prompt cut at its placeholder (a
        ``<fake_token_around_image>`` beside it dropped: the processor adds it)."""
        before, _, after = text.partition(self.image_token)
        before = before.removesuffix(_FAKE)
        after = after.removeprefix(_FAKE)
        return [
            part for part in (before, image, after) if not isinstance(part, str) or part
        ]

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        texts = self.format_prompts(prompts)
        batch = self.processor(
            text=[self._items(t, im) for t, im in zip(texts, images, strict=True)],
            return_tensors="pt",
            padding=True,
        )
        return _to_device(dict(batch), self.device, self.dtype)

    def _views(self, batch):
        """One image per prompt: (prompts, 1, C, H, W) -> one row per image."""
        pixels = batch["pixel_values"]
        return [1] * pixels.shape[0], pixels.flatten(0, 1)

    # -- stages ------------------------------------------------------------------
    def _image_states(self, batch):
        """(images, tokens, dim): the image states the cross-attention reads."""
        states = self.tower(pixel_values=self._views(batch)[1]).last_hidden_state
        return states if self.resampler is None else self.resampler(states)

    def image_tokens(self, batch):
        """Each image's tokens as the cross-attention layers read them."""
        return list(self._image_states(batch))

    def held_inputs(self, batch):
        """What a pass over the cached prompt of ``batch`` needs again.

        The cross-attention layers keep nothing in the cache: the image's
        states, under the name IDEFICS's forward takes them (the resampler's
        output is ``perceiver_embeddings``, the tower's
        ``image_encoder_embeddings``), as its ``generate`` passes them.
        """
        name = (
            "image_encoder_embeddings"
            if self.resampler is None
            else "perceiver_embeddings"
        )
        return {name: self._image_states(batch)}


ADAPTERS = [IdeficsAdapter]

__all__ = ["IdeficsAdapter"]
