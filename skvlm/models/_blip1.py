"""BLIP (v1) captioners and InstructBLIP-Video: the image outside the prompt's
positions, or a video made of the image.

**BLIP** (``BlipForConditionalGeneration``): a ViT tower and a BERT-style text
decoder whose every block cross-attends to the tower's output (its
``last_hidden_state``: the last block's states after the post-layernorm). The
prompt holds no image positions, and there is no projector between tower and
decoder (the cross-attention layers read the tower's output as it is).

- ``vision``: the ViT tower. Entry 0 = the embeddings (CLS + patch tokens
  with position embeddings), entry k = after block k, no post-layernorm on
  any entry (the tower's own ``hidden_states``). Poolings ``cls``, ``mean``
  and ``max`` (patch tokens).
- ``projector``: refused (there is none; see ``Traits.unsupported``).
- ``language``: the text decoder over the prompt, read as HF's ``generate``
  reads it: the tokenizer's ``[CLS] prompt [SEP]`` becomes ``[DEC] prompt``
  (the decoder's BOS first, the closing ``[SEP]`` dropped), every block
  cross-attending to the image. Entry 0 = the embeddings (word and position
  embeddings, layer-normed), entry k = after block k (BERT's blocks end in
  their own layer norm; there is no final norm): HF's ``hidden_states`` of
  the text decoder. Poolings ``last`` (the prompt's last token, the one that
  predicts the caption's first word), ``mean``, ``max``, ``text_mean`` (the
  prompt's words, ``[DEC]`` left out) and positions; ``image_mean`` is
  refused: no position of the prompt holds the image.

The prompt is used as given (a caption's start such as ``"a picture of"``
suits the captioning checkpoints best); a prompt that opens with ``<image>``
is used without it. Rows are padded on the tokenizer's side and carry their
own ``position_ids`` (BLIP's positions are learned and counted from the first
token), so padding never changes a row. Generative scoring encodes the image
once and runs the text decoder again over the prompt for each class
(``Traits.cache="recompute"``: the decoder's cache holds cross-attention
states beside its own keys and values, which the shared-prefix scorer does not
reuse), at the cost of one decoder pass over prompt and class per class and
image; its text-only prior is the decoder without its cross-attention.
Generation is HF's own ``generate``.

**InstructBLIP-Video** (``InstructBlipVideoForConditionalGeneration``):
InstructBLIP for videos. Its processor writes ``num_query_tokens`` x 4
``<video>`` positions in every prompt (4 frames, fixed in the processor),
and the Q-Former reads each frame with the instruction; the language model
reads the frames' query tokens, frame after frame. **An image becomes a still
video of 4 identical frames** (the image repeated), the only frame count its
prompts hold positions for.

- ``vision``: the ViT tower over the image (one frame: the four are the same
  image, so each gives the same states), as for InstructBLIP.
- ``projector``: the Q-Former's query outputs after ``language_projection``
  for the 4 frames, frame after frame (``4 * num_query_tokens`` tokens, what
  the language model receives; the frames' tokens are equal). ``mean`` and
  ``max``; it depends on the prompt, as InstructBLIP's does.
- ``language``: as InstructBLIP's; ``image_mean`` covers the ``<video>``
  positions.
"""

from __future__ import annotations

import torch

from .._transformers_compat import torchvision_available
from ..pooling import TokenMasks
from ._base import Adapter, Stack
from ._blip import InstructBlipAdapter
from ._chat import image_first_prompt, special_token_ids
from ._loading import load_processor
from ._tokens import valid_position_ids
from ._traits import resolve_path
from ._vision import VisionTowerMixin, _to_device

#: Why BLIP's language stage has no ``image_mean``.
NO_IMAGE_POSITIONS = (
    "BLIP's text decoder reads the image through cross-attention, so no "
    "position of its prompt holds the image; use pooling='last', 'mean' or "
    "'text_mean', or stage='vision'"
)


class BlipAdapter(VisionTowerMixin, Adapter):
    """BLIP (v1) (``BlipForConditionalGeneration``): see the module's notes.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_blip, random_images
    >>> adapter = load_adapter(make_tiny_blip(tempfile.mkdtemp()), device="cpu")
    >>> adapter.stages, adapter.n_layers("language")
    (('vision', 'language'), 4)
    >>> batch = adapter.prepare(random_images(1), ["a picture of"])
    >>> adapter.processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    ['[DEC]', 'a', 'picture', 'of']
    """

    family = "blip"
    model_types = ("blip",)
    auto_class = "AutoModelForImageTextToText"
    stages = ("vision", "language")
    image_token = "<image>"  # a prompt may open with it; it is dropped
    image_token_id = None
    #: poolings the stages cannot give, and why
    refused_poolings = {"image_mean": NO_IMAGE_POSITIONS}

    def __init__(self, model, processor):
        super().__init__(model, processor)
        traits = self.traits
        self.unavailable = dict(traits.unsupported)
        self.stages = tuple(s for s in type(self).stages if s not in self.unavailable)
        self.tower = resolve_path(model, traits.vision)
        self.vision_blocks = resolve_path(self.tower, traits.vision_blocks)
        self.has_cls = True  # BLIP's tower always puts a class token first
        self.language = resolve_path(model, traits.language)
        self.language_blocks = resolve_path(self.language, traits.language_blocks[0])
        # the text decoder: the scorer's text-only prior runs it without image
        self.language_call = resolve_path(model, traits.lm_head.rpartition(".")[0])
        text = model.config.text_config
        self.bos_id, self.sep_id = text.bos_token_id, text.sep_token_id
        self._special_ids = special_token_ids(processor.tokenizer) | {self.bos_id}

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        blocks = self.vision_blocks if stage == "vision" else self.language_blocks
        return len(blocks) + 1

    def poolings(self, stage, layer):
        if stage == "vision":
            return ("cls", "mean", "max")
        return ("last", "mean", "max", "text_mean")

    def dim(self, stage):
        if stage == "vision":
            return self.model.config.vision_config.hidden_size
        return self.model.config.text_config.hidden_size

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The prompt as BLIP's processor takes it (the image is not in it).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_blip
        >>> adapter = load_adapter(make_tiny_blip(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("<image>a picture of")
        'a picture of'
        """
        return image_first_prompt(prompt, self.image_token, "BLIP")

    def prepare(self, images, prompts=None):
        if prompts is None:
            batch = self.processor.image_processor(images=images, return_tensors="pt")
            return _to_device(dict(batch), self.device, self.dtype)
        texts = [self.format_prompt(p) for p in prompts]
        batch = dict(
            self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        )
        # HF's generate reads [DEC] and the prompt: it replaces the first token
        # ([CLS]) with the BOS and drops the last ([SEP])
        rows = [
            [self.bos_id, *ids[mask.bool()][1:-1].tolist()]
            for ids, mask in zip(
                batch["input_ids"], batch["attention_mask"], strict=True
            )
        ]
        batch.update(self._padded(rows))
        return _to_device(batch, self.device, self.dtype)

    def _padded(self, rows):
        """``input_ids``, ``attention_mask`` and ``position_ids`` of token rows,
        padded on the tokenizer's side; positions count each row's own tokens."""
        tokenizer = self.processor.tokenizer
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = (
                slice(width - len(row), width)
                if tokenizer.padding_side == "left"
                else slice(0, len(row))
            )
            ids[i, span] = torch.tensor(row)
            mask[i, span] = 1
        positions = valid_position_ids(mask)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}

    def image_positions(self, batch):
        """(rows, tokens) bool: the positions that hold image features (none)."""
        return torch.zeros_like(batch["input_ids"], dtype=torch.bool)

    # -- stacks and forward passes ---------------------------------------------
    def stack(self, stage, batch):
        if stage == "vision":
            return self.tower_stack(self.vision_blocks, n_prefix=1, has_cls=True)
        ids = batch["input_ids"]
        valid = batch["attention_mask"].bool()
        special = torch.isin(
            ids, torch.tensor(sorted(self._special_ids), device=ids.device)
        )
        masks = TokenMasks(
            valid=valid, pooled=valid, image=None, text=valid & ~special, has_cls=False
        )
        return Stack(blocks=self.language_blocks, masks=masks)

    def forward(self, stage, batch):
        if stage == "vision":
            return self.tower(pixel_values=batch["pixel_values"])
        return self.model(**batch, use_cache=False)

    def replay_inputs(self, batch):
        """What the generative scorer runs again for each class: the text
        decoder, given the tower's output computed once.

        Returns
        -------
        module : torch.nn.Module
            The text decoder (with its LM head).
        inputs : dict
            ``input_ids``, ``attention_mask`` and the image's
            ``encoder_hidden_states`` (the tower's ``last_hidden_state``, as
            BLIP's forward hands it over).
        """
        states = self.tower(pixel_values=batch["pixel_values"]).last_hidden_state
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
        return self.language_call, dict(inputs, encoder_hidden_states=states)

    def generate(self, *, input_ids, attention_mask, pixel_values, **kwargs):
        """HF's ``generate`` on prepared rows (left-padded): the prompt, then
        the new tokens.

        HF's BLIP ``generate`` replaces a row's first token with the BOS and
        drops its last (the tokenizer's ``[SEP]``): the rows, which already
        start with the BOS, get a ``[SEP]`` appended for it to drop.
        """
        kwargs.pop("position_ids", None)  # generate derives them from the mask
        kwargs.pop("pad_token_id", None)  # BLIP's generate passes its own
        tail = input_ids.new_full((input_ids.shape[0], 1), self.sep_id)
        out = self.model.generate(
            pixel_values=pixel_values,
            input_ids=torch.cat([input_ids, tail], dim=1),
            attention_mask=torch.cat([attention_mask, torch.ones_like(tail)], dim=1),
            **kwargs,
        )
        return torch.cat([input_ids, out[:, input_ids.shape[1] :]], dim=1)


#: Frames per video in InstructBLIP-Video's prompts: its processor writes
#: ``num_query_tokens * 4`` ``<video>`` positions, whatever the video.
FRAMES = 4


class InstructBlipVideoAdapter(InstructBlipAdapter):
    """InstructBLIP-Video (``InstructBlipVideoForConditionalGeneration``): each
    image a still video of 4 identical frames; see the module's notes."""

    family = "instructblipvideo"
    model_types = ("instructblipvideo",)
    token_id_name = "video_token_id"

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """``AutoProcessor``; without torchvision, an error saying to install it."""
        try:
            processor = load_processor(
                path, revision=revision, model_kwargs=model_kwargs
            )
        except (ImportError, ValueError, OSError) as exc:
            if torchvision_available():
                raise
            raise ImportError(_NEEDS_TORCHVISION) from exc
        if getattr(processor, "video_processor", None) is None:
            raise ImportError(_NEEDS_TORCHVISION)
        return processor

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        texts = [self.format_prompt(p) for p in prompts]
        videos = [[image] * FRAMES for image in images]
        batch = dict(
            self.processor(images=videos, text=texts, return_tensors="pt", padding=True)
        )
        positions = int((batch["input_ids"][0] == self.image_token_id).sum())
        if positions != FRAMES * self.model.config.num_query_tokens:
            raise ValueError(
                f"instructblipvideo: its processor wrote {positions} <video> "
                f"positions per prompt, not {FRAMES} frames of "
                f"{self.model.config.num_query_tokens} query tokens; skvlm reads "
                "each image as 4 frames. Please report the model id."
            )
        return _to_device(batch, self.device, self.dtype)

    def forward(self, stage, batch):
        if stage == "vision":  # one frame: the four are the same image
            return self.tower(pixel_values=batch["pixel_values"][:, 0])
        return super().forward(stage, batch)

    def image_tokens(self, batch):
        features = self.model.get_video_features(**self._qformer_inputs(batch))
        return list(features.pooler_output)


_NEEDS_TORCHVISION = (
    "instructblipvideo: its image processor (InstructBlipVideoVideoProcessor, "
    "a video processor: skvlm reads each image as a video) exists only with "
    "torchvision in transformers, and torchvision is not installed (or does not "
    "import beside this torch). Install it: pip install torchvision (the build "
    "that matches your torch)."
)

ADAPTERS = [BlipAdapter, InstructBlipVideoAdapter]

__all__ = ["BlipAdapter", "InstructBlipVideoAdapter"]
