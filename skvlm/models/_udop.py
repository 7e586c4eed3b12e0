"""UDOP: one T5-style encoder over a document's words and its image patches,
and a T5-style decoder.

UDOP has no vision tower of its own: a convolution cuts the image into
patches straight at the encoder's width, and one encoder reads them beside
the words. Each word carries a box on the page; the patch under the centre
of a word's box is added to that word's embedding and dropped from the
patch sequence. The encoder's sequence is the words (padded), then the
patches left, zero-padded back to the full grid (HF's
``combine_image_text_embeddings``).

What skvlm gives UDOP: the image and the prompt's words. The prompt is split
on white space, each word with the box ``[0, 0, 0, 0]`` (the box UDOP's
tokenizer gives a question put before the page's words: it sits nowhere on
the page, and no patch is added to it). skvlm runs no OCR (transformers'
runs pytesseract): the image processor is called with ``apply_ocr=False``
whatever the checkpoint saved, and a page's own OCR words and boxes are not
an input. As the tokenizer frames a sequence, ``</s>`` closes the words,
with the box ``[1000, 1000, 1000, 1000]``: so the last patch (under that
box's centre) is added to ``</s>``, the first (under ``[0, 0, 0, 0]``) to
no token, and both leave the patch sequence.

Stages and layers:

- ``vision``: the encoder's blocks, read at the image-patch positions only
  (the patches left in the sequence, padding excluded): entry 0 = the
  patch embeddings plus the 2-D cell embeddings of their grid boxes (the
  input of the first block), entry k = after encoder block k, the last
  entry after the encoder's final norm (HF's ``encoder_hidden_states`` at
  those positions). These states attend to the prompt's words too: UDOP's
  image is never encoded alone. ``mean`` and ``max`` pool the patches; no
  CLS.
- ``projector``: none. The patch convolution feeds the encoder directly
  (its output is the vision stage's entry 0, cell embeddings added).
- ``language``: the encoder over the whole sequence, as for BLIP-2 with
  Flan-T5 and Florence-2 (the decoder never runs); the same entries as
  ``vision``. skvlm orders each entry's tokens *image patches first, then
  the words* (HF's order is words first), so that ``last`` is the ``</s>``
  that closes the prompt (words are padded on the left), as the other
  encoder-decoders read it. ``image_mean`` covers the patches,
  ``text_mean`` the prompt's tokens (``</s>`` and padding left out),
  ``mean`` and ``max`` every valid token.

Words are padded on the left: the encoder's 1-D relative positions count
over the padded sequence, so with left padding the distance between a word
and a patch does not depend on the batch.

Generative scoring and the tuner put the answer in the *decoder*, behind
``decoder_start_token_id`` (T5's pad token), as UDOP's ``generate`` does.
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks
from ._base import LANGUAGE_POOLINGS, Adapter, Stack
from ._chat import DEFAULT_PROMPT, special_token_ids
from ._traits import final_norm, language_layers
from ._vision import _to_device

#: The box of a prompt word: on no place of the page (UDOP's tokenizer gives
#: it to a question's tokens, ``pad_token_box``).
PROMPT_BOX = [0, 0, 0, 0]


def kept_patches(bbox, grid):
    """Which slots of the patch part of UDOP's encoder sequence hold a patch.

    HF drops, for each token, the patch under its box's centre (padding
    tokens included) and zero-pads the rest back to ``grid ** 2`` slots.

    Parameters
    ----------
    bbox : torch.Tensor, shape (batch, tokens, 4)
        The tokens' boxes, as the processor gives them.
    grid : int
        Patches per side (``image_size // patch_size``).

    Returns
    -------
    valid : torch.Tensor of bool, shape (batch, grid ** 2)
        True on the slots that hold a patch (they come first).

    Examples
    --------
    >>> import torch
    >>> from skvlm.models._udop import kept_patches
    >>> boxes = torch.tensor([[[0, 0, 0, 0], [1000, 1000, 1000, 1000]]])
    >>> kept_patches(boxes, 2).tolist()  # patches 0 and 3 leave the sequence
    [[True, True, False, False]]
    """
    x = torch.clip(
        torch.floor((bbox[:, :, 0] + bbox[:, :, 2]) / 2.0 * grid).long(), 0, grid - 1
    )
    y = torch.clip(
        torch.floor((bbox[:, :, 1] + bbox[:, :, 3]) / 2.0 * grid).long(), 0, grid - 1
    )
    rows = bbox.shape[0]
    covered = torch.zeros(rows, grid * grid, dtype=torch.bool, device=bbox.device)
    covered.scatter_(1, x + y * grid, True)
    left = grid * grid - covered.sum(dim=1)
    slots = torch.arange(grid * grid, device=bbox.device)
    return slots[None, :] < left[:, None]


class UdopAdapter(Adapter):
    """UDOP (``UdopForConditionalGeneration``): see the module's notes."""

    family = "udop"
    model_types = ("udop",)
    stages = ("vision", "language")
    fallback = False
    auto_class = "AutoModelForImageTextToText"
    encoder_decoder = True
    prompt_stages = ("vision", "language")

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.encoder = model.get_encoder()
        self.blocks = language_layers(self.encoder, self.traits)
        self.norm = final_norm(self.encoder, self.traits.language_norm)
        self.unavailable = dict(self.traits.unsupported)
        self.grid = model.config.image_size // model.config.patch_size
        self.image_token = "<image>"  # a leading one in a prompt is dropped
        self.image_token_id = None  # the patches follow the words, no placeholder
        self._special_ids = special_token_ids(processor.tokenizer)

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        return len(self.blocks) + 1

    def poolings(self, stage, layer):
        return LANGUAGE_POOLINGS if stage == "language" else ("mean", "max")

    def dim(self, stage):
        return self.model.config.d_model

    def default_pooling(self, stage):
        return "last" if stage == "language" else "mean"

    def decoder_start_ids(self):
        """``[decoder_start_token_id]``: where UDOP's answers start (T5's pad).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_udop
        >>> adapter = load_adapter(make_tiny_udop(tempfile.mkdtemp()), device="cpu")
        >>> adapter.decoder_start_ids() == [adapter.processor.tokenizer.pad_token_id]
        True
        >>> adapter.stages
        ('vision', 'language')
        """
        return [int(self.model.config.decoder_start_token_id)]

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The prompt whose words UDOP reads (``None``: the default prompt).

        A leading ``<image>`` is dropped (the patches always follow the words).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_udop
        >>> adapter = load_adapter(make_tiny_udop(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("<image>Question answering. What is it?")
        'Question answering. What is it?'
        """
        prompt = DEFAULT_PROMPT if prompt is None else prompt
        if prompt.startswith(self.image_token):
            prompt = prompt[len(self.image_token) :]
        if self.image_token in prompt:
            raise ValueError(
                f"prompt {prompt!r} holds {self.image_token!r}; UDOP places the "
                "image's patches after the prompt's words itself. Remove it."
            )
        if not prompt.split():
            raise ValueError(
                "UDOP needs a prompt with at least one word (its words are the "
                f"encoder's text); got {prompt!r}. Pass a prompt such as "
                "'Document classification.'."
            )
        return prompt

    def format_prompts(self, prompts):
        return [self.format_prompt(p) for p in prompts]

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        words = [text.split() for text in self.format_prompts(prompts)]
        # what UdopProcessor does, with OCR off whatever the checkpoint saved
        pixels = self.processor.image_processor(
            images=list(images), apply_ocr=False, return_tensors="pt"
        )
        text = self.processor.tokenizer(
            words,
            boxes=[[PROMPT_BOX] * len(w) for w in words],
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        batch = {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "bbox": text["bbox"],
            "pixel_values": pixels["pixel_values"],
        }
        return _to_device(batch, self.device, self.dtype)

    # -- token positions -------------------------------------------------------
    def encoder_outputs(self, batch):
        """The encoder's output, as the model's ``encoder_outputs`` takes it.

        Generative scoring runs the encoder once per image and keeps this:
        UDOP's decoder reads the mask of the encoder's sequence (words, then
        patch slots) off it, not off the words' ``attention_mask``. Without
        ``pixel_values`` (the text-only prior) the word boxes are cast to float
        here, as HF's encoder casts them itself only when it merges the patches.
        """
        if "pixel_values" not in batch:
            batch = {**batch, "bbox": batch["bbox"].float()}
        return self.encoder(**batch)

    def image_positions(self, batch):
        """Image positions among ``input_ids``: none (the patches follow them)."""
        return torch.zeros_like(batch["input_ids"], dtype=torch.bool)

    # -- stacks and forward passes ---------------------------------------------
    def stack(self, stage, batch):
        n_words = batch["input_ids"].shape[1]
        patches = kept_patches(batch["bbox"], self.grid)
        norm = self.norm
        if stage == "vision":
            masks = TokenMasks(valid=patches, pooled=patches, has_cls=False)
            return Stack(
                blocks=self.blocks,
                masks=masks,
                final_norm=norm,
                unpack=lambda hidden: hidden[:, n_words:],
            )
        words = batch["attention_mask"].bool()
        special = torch.isin(
            batch["input_ids"],
            torch.tensor(sorted(self._special_ids), device=words.device),
        )
        valid = torch.cat([patches, words], 1)
        none = torch.zeros_like(patches)
        masks = TokenMasks(
            valid=valid,
            pooled=valid,
            image=torch.cat([patches, torch.zeros_like(words)], 1),
            text=torch.cat([none, words & ~special], 1),
            has_cls=False,
        )

        def patches_first(hidden):
            return torch.cat([hidden[:, n_words:], hidden[:, :n_words]], 1)

        return Stack(
            blocks=self.blocks, masks=masks, final_norm=norm, unpack=patches_first
        )

    def forward(self, stage, batch):
        # the encoder alone: the decoder never runs
        return self.encoder(**batch)


ADAPTERS = [UdopAdapter]

__all__ = ["UdopAdapter", "kept_patches"]
