"""Encoder-decoders whose encoder reads the image alone: Pix2Struct and
``vision-encoder-decoder`` (TrOCR, Donut, ViT + GPT-2...); PP-FormulaNet's
adapter (:mod:`skvlm.models._formulanet`) builds on the same base.

No prompt holds the image: the encoder reads its pixels (or patches) and
nothing else, and the decoder cross-attends to what it gives. The prompt is
the **decoder's prefix**: the decoder start token, then the prompt's tokens
(the tokenizer's, without its special tokens), exactly the sequence HF's
``generate`` continues when a processor hands it the prompt as
``decoder_input_ids`` (Pix2Struct's processor does so for captioning
checkpoints; TrOCR and Donut are prompted the same way). A prompt that
already opens with the start token is not given a second one; the default
prompt is skvlm's, ``prompt=""`` leaves the start token alone.

Stages and layers:

- ``vision``: the encoder's blocks (entry 0 = the embeddings, the input of
  the first block; entry k = after block k: HF's encoder ``hidden_states``).
  Pix2Struct: over each image's real patches only (its flattened patches are
  padded with zero rows, which the encoder masks), no class token, as
  Kosmos-2.5's tower (:class:`~skvlm.models._kosmos2.FlattenedPatchesMixin`).
  ``vision-encoder-decoder``: the encoder's own vision adapter (ViT, DeiT,
  Swin...; Donut's Swin as a Swin), with the poolings it offers alone
  (``cls`` for a ViT); an encoder skvlm has no adapter for refuses it.
- ``projector``: ``vision-encoder-decoder`` with an ``enc_to_dec_proj`` (an
  encoder and a decoder of different widths, and no
  ``cross_attention_hidden_size``): one entry, the encoder's last hidden
  state projected to the decoder's width, the sequence the decoder
  cross-attends to; ``mean`` and ``max`` over its tokens. Without one, and
  for Pix2Struct, refused: nothing stands between encoder and decoder.
- ``language``: the decoder's blocks over the prefix (entry 0 = the decoder's
  input embeddings, entry k = after block k, the last entry after the
  decoder's final norm where it has one: HF's ``decoder_hidden_states``),
  reading the image through cross-attention. Batches are padded on the right
  (causal: padding never reaches a real token). ``last`` is the prompt's last
  token, the one whose state predicts the answer; ``mean``/``max`` cover the
  whole prefix, ``text_mean`` the prompt's words (the start token and other
  special tokens left out). No position holds the image, so there is no
  ``image_mean``.

Pix2Struct's VQA checkpoints (``is_vqa``) render the prompt as a header onto
the image: the encoder reads it with the image, so the vision stage depends
on the prompt too, and the decoder's prefix is its start token alone.

Generative scoring reads a class name as a continuation of the prefix
(start token, prompt, answer prefix) in the decoder, given the encoder's
states over the image, kept once per image; the tuner trains on the same
reading, the answer in the decoder behind the prompt. ``calibration=
"text_prior"`` is refused: the model cannot run without its image.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import torch

from ..pooling import TokenMasks
from ._base import Adapter, Stack, pool_token_lists
from ._chat import image_first_prompt, special_token_ids, text_ids
from ._kosmos2 import FlattenedPatchesMixin
from ._traits import decoder_stack, family_traits, final_norm, resolve_path
from ._vision import _to_device

#: Encoder types read by the vision adapter of another type, whose layout and
#: ``hidden_states`` they copy (Donut's Swin is Swin's code).
SAME_LAYOUT = {"donut-swin": "swin"}

#: The language stage's poolings: no position of the decoder holds the image.
PREFIX_POOLINGS = ("last", "mean", "max", "text_mean")


class DecoderPrefixAdapter(Adapter):
    """Base of the encoder-decoders whose prompt is the decoder's prefix
    (see the module's notes)."""

    family = "decoder-prefix"
    model_types = ()
    stages = ("vision", "language")
    fallback = False
    auto_class = "AutoModelForImageTextToText"
    encoder_decoder = True
    #: The prompt is the decoder's input, not the encoder's: generative
    #: scoring and the tuner continue each row's ``decoder_input_ids``.
    decoder_prefix = True
    image_token = "<image>"

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = model.config.model_type
        traits = self.traits
        self.tower = resolve_path(model, traits.vision)
        self.vision_blocks = resolve_path(self.tower, traits.vision_blocks)
        self.decoder = resolve_path(model, traits.language)
        owner, self.decoder_blocks = decoder_stack(self.decoder, traits.language_blocks)
        self.decoder_norm = final_norm(owner, traits.language_norm)
        self.tokenizer = processor.tokenizer
        self._special_ids = special_token_ids(self.tokenizer)
        self.unavailable = dict(traits.unsupported)
        self.stages = tuple(
            s for s in ("vision", "projector", "language") if s not in self.unavailable
        )

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        if stage == "language":
            return len(self.decoder_blocks) + 1
        if stage == "projector":
            return 1
        return len(self.vision_blocks) + 1

    def poolings(self, stage, layer):
        if stage == "language":
            return PREFIX_POOLINGS
        return ("mean", "max")

    def dim(self, stage):
        if stage == "vision":
            return self.tower.config.hidden_size
        return self.model.config.get_text_config(decoder=True).hidden_size

    def default_pooling(self, stage):
        return "last" if stage == "language" else super().default_pooling(stage)

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The prompt as given (the decoder's prefix, after its start token).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_pix2struct
        >>> adapter = load_adapter(make_tiny_pix2struct(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("<image>a photo of")
        'a photo of'
        >>> adapter.decoder_prefix_ids(["a photo of"])[0][0] == adapter.decoder_start_ids()[0]
        True
        """
        return image_first_prompt(prompt, self.image_token, self.family)

    def format_prompts(self, prompts):
        return [self.format_prompt(p) for p in prompts]

    def decoder_start_ids(self):
        """``[decoder_start_token_id]``: where the decoder's every sequence starts."""
        config = self.model.config
        start = getattr(config, "decoder_start_token_id", None)
        if start is None:
            start = config.get_text_config(decoder=True).decoder_start_token_id
        return [int(start)]

    def decoder_prefix_ids(self, texts):
        """Each formatted prompt as the decoder reads it: the start token, then
        its tokens without special tokens (as HF's ``generate`` prepends the
        start token to a processor's ``decoder_input_ids``)."""
        start = self.decoder_start_ids()
        rows = []
        for text in texts:
            ids = text_ids(self.tokenizer, text)
            rows.append(ids if ids[:1] == start else start + ids)
        return rows

    def encoder_inputs(self, images, texts):
        """The encoder's inputs of ``images`` (Pix2Struct's VQA: with headers)."""
        processor = getattr(self.processor, "image_processor", self.processor)
        return dict(processor(images=list(images), return_tensors="pt"))

    def prefix_texts(self, texts):
        """The prompts the decoder reads (Pix2Struct's VQA: none, the header is
        in the image)."""
        return texts

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        texts = self.format_prompts(prompts)
        batch = self.encoder_inputs(images, texts)
        rows = self.decoder_prefix_ids(self.prefix_texts(texts))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # right padding: the decoder is causal
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        batch["decoder_input_ids"] = ids
        batch["decoder_attention_mask"] = mask
        return _to_device(batch, self.device, self.dtype)

    # -- stacks and forward passes ---------------------------------------------
    def stack(self, stage, batch):
        if stage != "language":
            raise ValueError(f"{self.family}: no stack for stage {stage!r}.")
        ids = batch["decoder_input_ids"]
        valid = batch["decoder_attention_mask"].bool()
        special = torch.isin(
            ids, torch.tensor(sorted(self._special_ids), device=ids.device)
        )
        masks = TokenMasks(
            valid=valid,
            pooled=valid,
            image=torch.zeros_like(valid),
            text=valid & ~special,
            has_cls=False,
        )
        return Stack(
            blocks=self.decoder_blocks, masks=masks, final_norm=self.decoder_norm
        )

    def forward(self, stage, batch):
        # The hooks stop the pass in the decoder: the LM head never runs.
        return self.model(**batch, use_cache=False)


class Pix2StructAdapter(FlattenedPatchesMixin, DecoderPrefixAdapter):
    """Pix2Struct (``Pix2StructForConditionalGeneration``): see the module's notes."""

    family = "pix2struct"
    model_types = ("pix2struct",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.is_vqa = bool(getattr(processor.image_processor, "is_vqa", False))
        if self.is_vqa:  # the prompt is rendered onto the image
            self.prompt_stages = ("vision", "language")

    def encoder_inputs(self, images, texts):
        # Its processor fills max_patches with its own default, not the image
        # processor's; a VQA checkpoint's processor renders ``text`` as a header.
        batch = self.processor(
            images=list(images),
            text=texts if self.is_vqa else None,
            return_tensors="pt",
            max_patches=self.processor.image_processor.max_patches,
        )
        return {k: batch[k] for k in ("flattened_patches", "attention_mask")}

    def prefix_texts(self, texts):
        return [""] * len(texts) if self.is_vqa else texts

    def stack(self, stage, batch):
        if stage == "vision":
            return self.flattened_stack(batch)
        return super().stack(stage, batch)

    def forward(self, stage, batch):
        if stage == "vision":
            return self.flattened_forward(batch)
        return super().forward(stage, batch)


class VisionEncoderDecoderAdapter(DecoderPrefixAdapter):
    """``VisionEncoderDecoderModel``: see the module's notes.

    The vision stage is the encoder's own adapter's (the one skvlm would load
    for the encoder alone: ViT, DeiT, Swin...).
    """

    family = "vision-encoder-decoder"
    model_types = ("vision-encoder-decoder",)

    def __init__(self, model, processor):
        super().__init__(model, processor)
        from ._registry import adapter_class

        image_processor = getattr(processor, "image_processor", processor)
        encoder_type = self.tower.config.model_type
        layout = SimpleNamespace(model_type=SAME_LAYOUT.get(encoder_type, encoder_type))
        try:
            self.vision = adapter_class(layout)(self.tower, image_processor)
        except ValueError:
            self.vision = None
        if self.vision is None or "vision" not in self.vision.stages:
            self.unavailable["vision"] = (
                f"skvlm has no vision adapter for its encoder ({encoder_type!r}, "
                f"{type(self.tower).__name__}); the language stage still reads "
                "the decoder"
            )
        self.projector = resolve_path(model, (self.traits.projector or (None,))[0])
        self.stages = tuple(
            s for s in ("vision", "projector", "language") if s not in self.unavailable
        )
        self.has_cls = getattr(self.vision, "has_cls", False)

    @property
    def traits(self):
        """The family's traits; the projector refused where the checkpoint has none."""
        traits = family_traits(self.model)
        path = (traits.projector or (None,))[0]
        if resolve_path(self.model, path) is not None:
            return traits
        reason = (
            "its encoder's width is the decoder's (or the decoder's "
            "cross_attention_hidden_size), so the checkpoint has no enc_to_dec_proj: "
            "the decoder cross-attends to the encoder's last hidden state itself "
            "(stage='vision', layer=-1 after the encoder's final norm)"
        )
        unsupported = {**traits.unsupported, "projector": reason}
        unsupported["tuner:projector"] = reason
        return replace(traits, projector=(), unsupported=unsupported)

    def n_layers(self, stage):
        if stage == "vision":
            return self.vision.n_layers(stage)
        return super().n_layers(stage)

    def poolings(self, stage, layer):
        if stage == "vision":
            return self.vision.poolings(stage, layer)
        return super().poolings(stage, layer)

    def dims(self, stage):
        if stage == "vision":
            return self.vision.dims(stage)
        return super().dims(stage)

    def dim(self, stage):
        if stage == "vision":
            return self.vision.dim(stage)
        return super().dim(stage)

    def default_pooling(self, stage):
        if stage == "vision":
            return self.vision.default_pooling(stage)
        return super().default_pooling(stage)

    def encoder_inputs(self, images, texts):
        batch = super().encoder_inputs(images, texts)
        return {"pixel_values": batch["pixel_values"]}

    def stack(self, stage, batch):
        if stage == "vision":
            return self.vision.stack(stage, batch)
        return super().stack(stage, batch)

    def capture(self, batch, stage, layers, read, *, need_outputs=False):
        if stage == "vision":
            return self.vision.capture(
                batch, stage, layers, read, need_outputs=need_outputs
            )
        return super().capture(batch, stage, layers, read, need_outputs=need_outputs)

    def forward(self, stage, batch):
        if stage == "vision":
            return self.vision.forward(stage, batch)
        return super().forward(stage, batch)

    def pooler(self, stage, batch, outputs):
        if stage == "vision":
            return self.vision.pooler(stage, batch, outputs)
        return super().pooler(stage, batch, outputs)

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        states = self.tower(pixel_values=batch["pixel_values"]).last_hidden_state
        states = self.projector(states)
        return pool_token_lists([list(states)], requests)


ADAPTERS = [Pix2StructAdapter, VisionEncoderDecoderAdapter]

__all__ = ["DecoderPrefixAdapter", "Pix2StructAdapter", "VisionEncoderDecoderAdapter"]
