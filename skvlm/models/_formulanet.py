"""PP-FormulaNet: an image encoder, a projector, and a text decoder that
cross-attends to the projected image.

PP-FormulaNet reads a formula's image and writes its LaTeX. Its encoder
reads the image alone (its processor takes no text), so no prompt holds the
image: the prompt is the *decoder's*, the tokens it has read before the
answer.

Prompt format: the decoder's start tokens, then the prompt's tokens (the
tokenizer's, without special tokens). The start tokens are
``decoder_start_token_id`` (``</s>``) and the tokenizer's ``<s>``: HF's
``shift_tokens_right`` turns a labelled ``<s> ... </s>`` into that
beginning (see :meth:`~skvlm.models.Adapter.decoder_start_ids`).
PP-FormulaNet was trained with no prompt, so the default prompt is empty:
the decoder reads its start tokens alone (a prompt of ``None`` or ``""``).
Any other prompt is a forced beginning of the answer, as ``generate`` would
continue it. Decoder rows are padded on the right (the decoder's learned
positions count from its first token).

Stages and layers:

- ``vision``: the SAM-style encoder's blocks (windowed attention, a few
  global blocks). Entry 0 = the patch embeddings plus the absolute position
  embeddings (the input of the first block), entry k = after block k:
  exactly HF's encoder ``hidden_states``. Each entry is a (height, width)
  map of patches, read row by row as tokens; ``mean`` and ``max`` pool them.
  The neck (two convolutions and layer norms after the last block) is not an
  entry: it is the first part of what the projector gets.
- ``projector``: one entry, what the decoder cross-attends to (the encoder's
  ``pooler_output``: the neck, two stride-2 convolutions and two linear
  layers; a 1/16 of the patches). ``mean`` and ``max``.
- ``language``: the decoder over the prompt, cross-attending to the
  projector's tokens: entry 0 = the scaled token embeddings plus the learned
  positions after the embedding layer norm (the input of the first block),
  entry k = after decoder block k, the last entry after the final layer norm
  (HF's ``decoder_hidden_states``). ``last`` is the prompt's last token
  (``<s>``, with the default prompt), ``text_mean`` the prompt's tokens
  (the start tokens left out). No image positions: the image reaches every
  position through cross-attention.

Generative scoring and the tuner read the class name as a continuation of
the decoder, after the start tokens and the prompt.
"""

from __future__ import annotations

from ..pooling import TokenMasks
from ._base import Adapter, Stack, pool_token_lists
from ._decoder_prefix import DecoderPrefixAdapter
from ._generic import GenericImageTextAdapter
from ._tokens import raster_tokens


class PPFormulaNetAdapter(DecoderPrefixAdapter):
    """PP-FormulaNet (``PPFormulaNetForConditionalGeneration``): see the module's notes.

    A decoder-prefix model (:mod:`skvlm.models._decoder_prefix`: the prompt
    rows, the decoder's stack and poolings are theirs) whose decoder starts
    with ``</s> <s>``, whose default prompt is empty, and whose vision and
    projector stages are its SAM-style encoder's.
    """

    family = "pp_formulanet"
    model_types = ("pp_formulanet",)
    stages = ("vision", "projector", "language")

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """The processor; without torchvision, an error that names it and the fix."""
        return GenericImageTextAdapter.load_processor(
            path, revision=revision, model_kwargs=model_kwargs
        )

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.image_token_id = None  # the image is cross-attended to

    def decoder_start_ids(self):
        """``decoder_start_token_id`` (``</s>``), then the tokenizer's ``<s>``."""
        return Adapter.decoder_start_ids(self)

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The text the decoder reads after its start tokens (``None``: none).

        A leading ``<image>`` is dropped (the encoder reads the image alone).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_config
        >>> from skvlm.models._formulanet import PPFormulaNetAdapter
        >>> from skvlm.testing import make_tiny_pp_formulanet
        >>> config = load_config(make_tiny_pp_formulanet(tempfile.mkdtemp()))
        >>> config.text_config.decoder_start_token_id  # </s>, then <s>
        2
        >>> PPFormulaNetAdapter.stages
        ('vision', 'projector', 'language')
        """
        prompt = "" if prompt is None else prompt
        if prompt.startswith(self.image_token):
            prompt = prompt[len(self.image_token) :]
        if self.image_token in prompt:
            raise ValueError(
                f"prompt {prompt!r} holds {self.image_token!r}; PP-FormulaNet's "
                "encoder reads the image alone and its prompt is the decoder's "
                "text. Remove it."
            )
        return prompt

    def encoder_inputs(self, images, texts):
        """The encoder's inputs: the image processor's pixels (no text)."""
        pixels = self.processor.image_processor(
            images=list(images), return_tensors="pt"
        )
        return {"pixel_values": pixels["pixel_values"]}

    # -- stacks and forward passes ---------------------------------------------
    def stack(self, stage, batch):
        if stage == "vision":

            def masks(hidden):
                return TokenMasks.full(hidden.shape[0], hidden.shape[1], hidden.device)

            return Stack(blocks=self.vision_blocks, masks=masks, unpack=raster_tokens)
        return super().stack(stage, batch)

    def forward(self, stage, batch):
        if stage == "vision":
            return self.tower(pixel_values=batch["pixel_values"])
        return super().forward(stage, batch)

    def encoder_outputs(self, batch):
        """The encoder's output, as the model's ``encoder_outputs`` takes it
        (the decoder cross-attends to its ``pooler_output``)."""
        return self.tower(pixel_values=batch["pixel_values"])

    def image_tokens(self, batch):
        """Each image's projector tokens: a list of (tokens, dim)."""
        features = self.encoder_outputs(batch).pooler_output
        return list(features)

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        return pool_token_lists([self.image_tokens(batch)], requests)


ADAPTERS = [PPFormulaNetAdapter]

__all__ = ["PPFormulaNetAdapter"]
