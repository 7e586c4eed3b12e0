"""Fuyu (``FuyuForCausalLM``): no vision tower; a linear patch embedding
written into a Persimmon decoder.

Fuyu's processor puts the image in front of every prompt itself: one
``|SPEAKER|`` token per patch of the image (rows of patches, each closed by
``|NEWLINE|``), then ``<s>``, the prompt, and ``<0x04>`` (the beginning of
the answer). The model writes each patch's embedding at a ``|SPEAKER|``
position (its ``image_token_id``); skvlm reads the image's positions off those
ids, as the model does. Images keep their own aspect ratio (fitted inside the
image processor's ``size``), so images of different sizes give different
numbers of patches, and a batch pads its prompts on the left.

Stages and layers:

- ``vision``: not offered (there is no tower: one linear layer embeds each raw
  pixel patch).
- ``projector``: what ``get_image_features`` returns, one image's patch
  embeddings, row by row (the vectors the decoder reads at its ``|SPEAKER|``
  positions).
- ``language``: the decoder's blocks: entry 0 = the word embeddings with the
  patch embeddings written in (the input of the first block), k = after block
  k, the last entry after the final layer norm (HF's ``hidden_states``).
  ``image_mean`` covers the ``|SPEAKER|`` positions (the patches);
  ``text_mean`` the prompt's words (the ``|NEWLINE|`` markers, ``<s>``,
  ``<0x04>`` and the special tokens left out); ``last`` is ``<0x04>``, the
  token the answer follows.

Prompt format: the prompt as given (Fuyu's processor adds the image before
it); a prompt that opens with ``|SPEAKER|`` is used without it.

transformers 5.25's Fuyu processor works only with torchvision: its PIL image
processor cannot take the tensors the processor hands it. Without torchvision
the model refuses to load, saying so.
"""

from __future__ import annotations

from .._transformers_compat import TRANSFORMERS_VERSION, pil_image_processor_fails
from ._chat import image_first_prompt
from ._generic import GenericImageTextAdapter
from ._tokens import valid_position_ids
from ._vision import _to_device

#: What FuyuProcessor writes after each image (``replace_image_token``) and
#: after each prompt (its beginning-of-answer string).
_MARKERS = ("<s>", "<0x04>")


class FuyuAdapter(GenericImageTextAdapter):
    """Fuyu (``FuyuForCausalLM``): see the module's notes."""

    family = "fuyu"
    model_types = ("fuyu",)
    stages = ("projector", "language")
    fallback = False
    placeholder_in_prompt = False  # the processor puts the image first

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """Fuyu's processor, or an error naming torchvision where it cannot work."""
        reason = pil_image_processor_fails("fuyu")
        if reason is not None:
            raise ImportError(
                f"fuyu: its image processor ({reason}) fails on every image without "
                f"torchvision in transformers {TRANSFORMERS_VERSION}. Install it: "
                "pip install torchvision (the build that matches your torch)."
            )
        return super().load_processor(
            path, revision=revision, model_kwargs=model_kwargs
        )

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = "fuyu"
        tokenizer = processor.tokenizer
        markers = {tokenizer.convert_tokens_to_ids(t) for t in _MARKERS}
        # the row ends are words of the vocabulary, not image positions
        self._special_ids |= {*processor.image_token_ids, *markers}
        self._special_ids.discard(self.image_token_id)

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The prompt as Fuyu's processor takes it (it adds the image); a
        leading ``|SPEAKER|`` is dropped."""
        return image_first_prompt(prompt, self.image_token, "Fuyu")

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        # Fuyu's processor pads on the left itself
        batch = self.processor(
            images=list(images),
            text=self.format_prompts(prompts),
            return_tensors="pt",
            return_legacy_image_output=False,
        )
        batch = dict(batch)
        # the decoder's rotary positions count the valid tokens of each row
        batch["position_ids"] = valid_position_ids(batch["attention_mask"])
        return _to_device(batch, self.device, self.dtype)

    def image_positions(self, batch):
        """(rows, tokens) bool: the positions that hold patch embeddings."""
        return batch["input_ids"] == self.image_token_id

    def image_tokens(self, batch):
        """Each image's patch embeddings: a list of (patches_i, dim)."""
        output = self.base.get_image_features(batch["pixel_values"])
        flat = output.last_hidden_state.reshape(-1, output.last_hidden_state.shape[-1])
        counts = self.image_positions(batch).sum(dim=1).tolist()
        return list(flat.split(counts))


ADAPTERS = [FuyuAdapter]

__all__ = ["FuyuAdapter"]
