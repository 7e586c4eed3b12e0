"""Florence-2: a DaViT vision tower, a projector and a BART encoder-decoder.

Stages and layers:

- ``vision``: the DaViT tower, a hierarchical encoder of four stages whose
  widths grow as they downsample (each stage opens with a strided
  convolution). Entry 0 = the first convolution's output (the input of the
  first block), entry k = the output of DaViT block k, counted over all
  stages: exactly HF's ``output_hidden_states`` of the tower. As for the
  other hierarchical encoders (ConvNeXt, Swin...), an entry's tokens are the
  positions of its own feature map, flattened row by row, and its width is
  its stage's; ``mean`` and ``max`` reduce over all positions. The tower has
  no CLS token and no pooled output.
- ``projector``: one entry, the image features the language model receives
  (``get_image_features``): the spatial tokens of the last stage plus one
  temporal token, projected and layer-normed, with position embeddings
  added. ``mean`` and ``max``.
- ``language``: the BART *encoder* over the merged sequence (the image
  features, then BOS, the prompt and EOS), as for BLIP-2 with Flan-T5: entry
  0 = the input embeddings (after BART's learned positions and embedding
  layer norm, HF's ``encoder_hidden_states[0]``), entry k = after encoder
  layer k; BART's encoder has no final norm after its last layer. The
  decoder never runs. ``last`` is the EOS that closes the prompt;
  ``image_mean`` covers the image features, ``text_mean`` the prompt's
  words (BOS, EOS and padding left out).

Prompt format: the prompt as given (Florence-2's processor puts the image
tokens and BOS in front, EOS behind, and turns task tokens such as
``"<CAPTION>"`` into their questions). A prompt that opens with ``<image>``
is used without it.

Generative scoring reads the class name as a continuation of the *decoder*:
after the decoder start token, the tokenizer's BOS and the answer prefix,
given the encoder's states over image and prompt
(:mod:`skvlm.classifiers`). The tuner trains on the same reading.
"""

from __future__ import annotations

from ..pooling import TokenMasks
from ._base import Stack, language_masks
from ._chat import image_first_prompt
from ._encoders import _as_tokens
from ._generic import GenericImageTextAdapter
from ._traits import final_norm, language_layers
from ._vision import _to_device


class Florence2Adapter(GenericImageTextAdapter):
    """Florence-2 (``Florence2ForConditionalGeneration``): see the module's notes."""

    family = "florence2"
    model_types = ("florence2",)
    stages = ("vision", "projector", "language")
    fallback = False
    placeholder_in_prompt = False  # the processor puts the image first
    #: The language model is an encoder-decoder: generative scoring and the
    #: tuner put the answer in the decoder, behind ``decoder_start_ids``: its
    #: start token, then BART's ``<s>``, as Florence-2's answers were trained.
    encoder_decoder = True

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = "florence2"
        # The traits' vision blocks are DaViT's stages, each a list of blocks.
        self.vision_blocks = [block for stage in self.vision_blocks for block in stage]
        config = self.tower.config
        widths = [config.embed_dim[0]]
        for stage, depth in enumerate(config.depths):
            widths += [config.embed_dim[stage]] * depth
        self.widths = widths
        self.encoder = self.language.get_encoder()
        self.encoder_blocks = language_layers(self.encoder, self.traits)
        self.stages = type(self).stages
        self.unavailable = {}
        self.has_cls = False

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        if stage == "language":
            return len(self.encoder_blocks) + 1
        return super().n_layers(stage)

    def poolings(self, stage, layer):
        if stage == "vision":
            return ("mean", "max")
        return super().poolings(stage, layer)

    def dims(self, stage):
        if stage == "vision":
            return tuple(self.widths)
        return super().dims(stage)

    def dim(self, stage):
        if stage == "vision":
            return self.widths[-1]
        return self.model.config.get_text_config().hidden_size

    def default_pooling(self, stage):
        return {"vision": "mean", "projector": "mean", "language": "last"}[stage]

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The prompt as Florence-2's processor takes it (it adds the image tokens).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_florence2
        >>> adapter = load_adapter(make_tiny_florence2(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("What is it?")
        'What is it?'
        >>> adapter.format_prompt("<image>What is it?")
        'What is it?'
        """
        return image_first_prompt(prompt, self.image_token, "Florence-2")

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        # Padded on the right whatever the tokenizer says: BART's learned
        # positions count from the first token, padding included.
        batch = self.processor(
            images=list(images),
            text=self.format_prompts(prompts),
            return_tensors="pt",
            padding=True,
            padding_side="right",
        )
        return _to_device(dict(batch), self.device, self.dtype)

    # -- stacks and forward passes ---------------------------------------------
    def stack(self, stage, batch):
        if stage == "vision":

            def masks(hidden):
                return TokenMasks.full(hidden.shape[0], hidden.shape[1], hidden.device)

            return Stack(blocks=self.vision_blocks, masks=masks, unpack=_as_tokens)
        if stage == "language":
            masks = language_masks(
                batch["input_ids"],
                batch["attention_mask"],
                {self.image_token_id},
                self._special_ids,
            )
            norm = final_norm(self.encoder, self.traits.language_norm)
            return Stack(blocks=self.encoder_blocks, masks=masks, final_norm=norm)
        return super().stack(stage, batch)

    def capture(self, batch, stage, layers, read, *, need_outputs=False):
        if stage != "vision":
            return super().capture(
                batch, stage, layers, read, need_outputs=need_outputs
            )

        # Entries differ in width and token count; none is padded.
        def read_entry(layer, hidden, masks):
            full = TokenMasks.full(hidden.shape[0], hidden.shape[1], hidden.device)
            return read(layer, hidden, full)

        return super().capture(
            batch, stage, layers, read_entry, need_outputs=need_outputs
        )

    def forward(self, stage, batch):
        if stage == "vision":
            return self.tower(batch["pixel_values"])
        # The hooks stop the pass in the encoder: the decoder never runs.
        return self.base(**batch, use_cache=False)


ADAPTERS = [Florence2Adapter]

__all__ = ["Florence2Adapter"]
