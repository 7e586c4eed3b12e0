"""T5Gemma 2: a SigLIP tower, Gemma 3's projector and a Gemma encoder-decoder.

Stages and layers:

- ``vision``: the SigLIP tower, as for Gemma 3 (entry 0 = the patch
  embeddings, entry k = after block k, no post-layernorm).
- ``projector``: one entry, the image tokens the encoder receives
  (``get_image_features``: average-pooled, RMS-normed and projected).
  ``mean`` and ``max``.
- ``language``: the *encoder*'s text stack over the merged sequence (the
  image tokens between their begin and end markers, and the prompt), as for
  Florence-2 and BLIP-2 with Flan-T5: entry 0 = the input embeddings with the
  image tokens merged in, entry k = after encoder layer k, the last entry
  after the encoder's final norm (HF's ``encoder_hidden_states``). The
  encoder attends both ways and counts positions from the first token, so
  batches are padded on the right whatever the tokenizer says. The decoder
  never runs.

Prompt format: the processor's chat template when the checkpoint ships one,
otherwise ``"<start_of_image>\\n{prompt}"``; the processor expands the
placeholder into the image tokens.

Generative scoring and the tuner put the answer in the *decoder*, right
behind its start token (the decoder's ``bos_token_id``: T5Gemma 2 shifts
labels right behind it, and its ``generate`` starts there).
"""

from __future__ import annotations

import torch

from ._base import Stack, language_masks
from ._generic import GenericImageTextAdapter
from ._traits import final_norm, language_layers
from ._vision import _to_device


class T5Gemma2Adapter(GenericImageTextAdapter):
    """T5Gemma 2 (``T5Gemma2ForConditionalGeneration``): see the module's notes."""

    family = "t5gemma2"
    model_types = ("t5gemma2",)
    stages = ("vision", "projector", "language")
    fallback = False
    encoder_decoder = True

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = "t5gemma2"
        # get_image_features is the full model's (and its encoder's), not the
        # encoder-decoder core's; the full model's forward runs the encoder first
        self.base = model
        self.unavailable.pop("projector", None)
        tower = self.tower
        # the encoder's text stack: its child with a list of layers (not the tower)
        self.encoder = next(
            module
            for module in model.get_encoder().children()
            if module is not tower
            and isinstance(language_layers(module, self.traits), torch.nn.ModuleList)
        )
        self.encoder_blocks = language_layers(self.encoder, self.traits)
        self.stages = tuple(
            s for s in ("vision", "projector", "language") if s not in self.unavailable
        )

    def n_layers(self, stage):
        if stage == "language":
            return len(self.encoder_blocks) + 1
        return super().n_layers(stage)

    def dim(self, stage):
        if stage == "vision":  # its config sits in the encoder's
            return self.tower.config.hidden_size
        return super().dim(stage)

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        images = [[image] for image in images]  # Gemma 3's processor: one list each
        batch = self.processor(
            images=images,
            text=self.format_prompts(prompts),
            return_tensors="pt",
            padding=True,
            padding_side="right",
        )
        return _to_device(dict(batch), self.device, self.dtype)

    def stack(self, stage, batch):
        if stage != "language":
            return super().stack(stage, batch)
        masks = language_masks(
            batch["input_ids"],
            batch["attention_mask"],
            {self.image_token_id},
            self._special_ids,
        )
        return Stack(
            blocks=self.encoder_blocks,
            masks=masks,
            final_norm=final_norm(self.encoder, self.traits.language_norm),
        )

    def decoder_start_ids(self):
        """``[bos_token_id]`` of the decoder: where T5Gemma 2's answers start.

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_t5gemma2
        >>> adapter = load_adapter(make_tiny_t5gemma2(tempfile.mkdtemp()), device="cpu")
        >>> adapter.decoder_start_ids() == [adapter.processor.tokenizer.bos_token_id]
        True
        >>> adapter.stages
        ('vision', 'projector', 'language')
        """
        return [int(self.model.config.get_text_config(decoder=True).bos_token_id)]


ADAPTERS = [T5Gemma2Adapter]

__all__ = ["T5Gemma2Adapter"]
