"""Adapters for Qwen2-VL, Qwen2.5-VL and Qwen3-VL, and processors without torchvision.

Qwen's vision tower packs the patches of a whole batch into one (patches, dim)
tensor, each image's patches in the image processor's order (2x2 merge blocks
contiguous). The adapters split it per image by ``image_grid_thw``, put each
image's patches in raster order (row by row over the patch grid) and pad them into
a (batch, tokens, dim) tensor with a mask, so pooling never sees another image's
patches or padding.

Qwen processors own a video processor, and transformers' video processors need
torchvision; ``load_processor_without_video`` loads the same processor class
without it when torchvision is missing or broken (images never need it).
"""

from __future__ import annotations

import torch

from .._transformers_compat import vision_window_index
from ..pooling import TokenMasks, pad_tokens
from ._base import (
    LANGUAGE_POOLINGS,
    TOKEN_POOLINGS,
    Adapter,
    Stack,
    language_masks,
    pool_token_lists,
)
from ._chat import ChatPromptMixin, special_token_ids
from ._loading import load_processor_without_video
from ._packed import raster_gather
from ._traits import family_traits, final_norm, language_layers, resolve_path
from ._vision import _to_device


# -- Qwen2-VL, Qwen2.5-VL, Qwen3-VL ---------------------------------------------------------
class Qwen2VLAdapter(ChatPromptMixin, Adapter):
    """Qwen2-VL (``Qwen2VLForConditionalGeneration``): dynamic-resolution ViT,
    2x2 patch merger, M-RoPE language model.

    Stages and layers:

    - ``vision``: entry 0 = the patch embeddings (input of the first vision
      block), entry k = after vision block k: the tower's own
      ``output_hidden_states``, split per image and put in raster order over the
      image's patch grid (frames, then rows, then columns; the processor packs
      2x2 merge blocks together), so an int pooling counts patches row by row.
      No entry carries the merger's norm. Poolings ``mean`` and ``max`` (no CLS token, no pooled
      head); images of different sizes give different token counts, masked.
    - ``projector``: one entry, the image tokens after the patch merger, in the
      language model's width and in the order the language model receives them
      (raster order over 2x2 merge blocks). Poolings ``mean`` and ``max``.
    - ``language``: entry 0 = the input embeddings with the image tokens merged
      in, entry k = after decoder block k; the last entry carries the final norm
      (HF's ``hidden_states[-1]``). Poolings ``last``, ``mean``, ``max``,
      ``image_mean`` (``<|image_pad|>`` positions), ``text_mean`` (special tokens
      such as ``<|im_start|>`` and ``<|vision_start|>`` excluded) and int
      positions among the valid tokens.

    The prompt is formatted with the processor's chat template (system prompt,
    then ``<|vision_start|><|image_pad|><|vision_end|>{prompt}`` as the user turn,
    then the assistant header); the processor's ``mm_token_type_ids`` and
    ``image_grid_thw`` reach the model, whose M-RoPE positions skip padding, so
    left or right padding and batch composition do not change a result.
    """

    dynamic_resolution = True

    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    auto_class = "AutoModelForImageTextToText"
    stages = ("vision", "projector", "language")
    processor_class = "Qwen2VLProcessor"
    image_token = "<|image_pad|>"
    fallback_format = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """The checkpoint's processor, without its video processor if torchvision is missing."""
        return load_processor_without_video(
            path, cls.processor_class, revision=revision, model_kwargs=model_kwargs
        )

    def __init__(self, model, processor):
        super().__init__(model, processor)
        traits = family_traits(model)
        self.base = resolve_path(model, traits.base)
        self.tower = resolve_path(model, traits.vision)
        self.vision_blocks = resolve_path(self.tower, traits.vision_blocks)
        self.language = resolve_path(model, traits.language)
        self.language_blocks = language_layers(self.language, traits)
        self.merge = self.tower.spatial_merge_size
        self.image_token_id = model.config.image_token_id
        self._special_ids = special_token_ids(processor.tokenizer) - {
            self.image_token_id
        }

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        if stage == "vision":
            return len(self.vision_blocks) + 1
        if stage == "projector":
            return 1
        return len(self.language_blocks) + 1

    def poolings(self, stage, layer):
        return LANGUAGE_POOLINGS if stage == "language" else TOKEN_POOLINGS

    def dim(self, stage):
        if stage == "vision":
            vision = self.model.config.vision_config
            # Qwen2-VL's vision hidden_size is the merger's output width
            return getattr(vision, "embed_dim", None) or vision.hidden_size
        return self.model.config.get_text_config().hidden_size

    def format_prompt(self, prompt):
        """The text the model sees for ``prompt``; one holding ``<|image_pad|>`` is used as is.

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_qwen2_vl
        >>> adapter = load_adapter(make_tiny_qwen2_vl(tempfile.mkdtemp()), device="cpu")
        >>> print(adapter.format_prompt("What is it?"))
        <|im_start|>system
        You are a helpful assistant.<|im_end|>
        <|im_start|>user
        <|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>
        <|im_start|>assistant
        <BLANKLINE>
        """
        return super().format_prompt(prompt)

    # -- inputs --------------------------------------------------------------------
    def prepare(self, images, prompts=None):
        if prompts is None:
            batch = self.processor.image_processor(images=images, return_tensors="pt")
        else:
            batch = self.processor(
                images=images,
                text=self.format_prompts(prompts),
                padding=True,
                return_tensors="pt",
            )
        return _to_device(dict(batch), self.device, self.dtype)

    def _window_index(self, grid):
        """Merge-block order of the windowed vision blocks (Qwen2.5-VL), or None."""
        return None

    def _raster_gather(self, grid):
        """Index that takes a packed vision tensor to raster order, and per-image lengths.

        The processor packs each image as (frames, rows / m, columns / m, m, m)
        for merge size m; raster order is (frames, rows, columns)
        (:func:`skvlm.models._packed.raster_gather`, shared with the generic
        adapter's packed towers).
        """
        merges = [self.merge] * len(grid)
        gather, lengths, _ = raster_gather(
            grid, merges, window=self._window_index(grid)
        )
        return gather, lengths

    # -- stacks and forward passes ---------------------------------------------------
    def stack(self, stage, batch):
        if stage == "vision":
            gather, lengths = self._raster_gather(batch["image_grid_thw"])

            def unpack(hidden):
                return pad_tokens(torch.split(hidden[gather], lengths))[0]

            counts = torch.tensor(lengths, device=gather.device)
            valid = torch.arange(max(lengths), device=gather.device) < counts[:, None]
            return Stack(
                blocks=self.vision_blocks,
                masks=TokenMasks(valid=valid, pooled=valid),
                unpack=unpack,
            )
        masks = language_masks(
            batch["input_ids"],
            batch["attention_mask"],
            {self.image_token_id},
            self._special_ids,
        )
        return Stack(
            blocks=self.language_blocks,
            masks=masks,
            final_norm=final_norm(self.language, self.traits.language_norm),
        )

    def forward(self, stage, batch):
        if stage == "vision":
            return self.tower(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
        return self.base(**batch, use_cache=False)

    def projector_entries(self, batch):
        """The projector stack: for each entry, a list of per-image (tokens, dim)."""
        out = self.base.get_image_features(
            batch["pixel_values"], batch["image_grid_thw"]
        )
        return [list(out.pooler_output)]

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        return pool_token_lists(self.projector_entries(batch), requests)


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: Qwen2-VL with windowed attention in most vision blocks.

    Stages and layers are those of ``Qwen2VLAdapter``. The tower permutes
    its patches into window order before the first block and restores the order
    only after the merger, so HF's intermediate vision ``hidden_states`` are
    window-permuted; skvlm undoes the permutation, so every vision entry is in
    raster patch order like Qwen2-VL's (``mean``/``max`` are unaffected; int
    positions count patches row by row). The projector and language stages get
    the merger output in the language model's order, as HF's does.
    """

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    processor_class = "Qwen2_5_VLProcessor"

    def _window_index(self, grid):
        return vision_window_index(self.tower, grid)


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL: learned position grid in the tower and DeepStack.

    DeepStack takes the outputs of some vision blocks
    (``vision_config.deepstack_visual_indexes``, D of them), passes each through
    its own merger and adds the result to the language model's hidden states at
    the image positions after decoder blocks 1..D.

    - ``vision``: as Qwen2-VL (raster patch order; ``mean``, ``max``).
    - ``projector``: D + 1 entries. Entries 0..D-1 are the DeepStack mergers'
      tokens (in the order of ``deepstack_visual_indexes``; entry j is what is
      added after decoder block j + 1); the last entry (-1) is the main
      merger's tokens, merged into the input embeddings. ``mean`` and ``max``.
    - ``language``: entry 0 = input embeddings with the image tokens merged in,
      entry k = output of decoder block k as HF's ``output_hidden_states`` gives
      it, that is *before* DeepStack's addition for k <= D: at image positions
      the hidden state block k + 1 reads is entry k plus DeepStack entry k - 1
      (text positions are unchanged by DeepStack). The last entry carries the
      final norm.
    """

    family = "qwen3_vl"
    # Qwen3-VL-MoE (mixture-of-experts LM) and Qwen3.5 (hybrid linear/full
    # attention LM, no DeepStack; Qwen3.5-MoE with experts) share the tower,
    # merger and prompt format.
    model_types = ("qwen3_5", "qwen3_5_moe", "qwen3_vl", "qwen3_vl_moe")
    processor_class = "Qwen3VLProcessor"
    fallback_format = (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{prompt}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = model.config.model_type  # one of model_types

    def n_layers(self, stage):
        if stage == "projector":
            return len(getattr(self.tower, "deepstack_visual_indexes", ())) + 1
        return super().n_layers(stage)

    def projector_entries(self, batch):
        out = self.base.get_image_features(
            batch["pixel_values"], batch["image_grid_thw"]
        )
        deepstack = getattr(out, "deepstack_features", None) or []
        deepstack = [list(features) for features in deepstack]
        return deepstack + [list(out.pooler_output)]


class Glm4vAdapter(Qwen2VLAdapter):
    """GLM-4.1V / GLM-4.5V: Qwen2-VL's packed patches and 2x2 merger (with GLM's
    downsampling), a GLM-4 language model with M-RoPE.

    Stages, layers and poolings are those of ``Qwen2VLAdapter``; ``image_mean``
    covers the ``<|image|>`` positions. The vision stage's last entry is the
    last block's output (HF's own ``hidden_states[-1]`` is the merger's
    output, which is the projector stage here).
    """

    family = "glm4v"
    # GLM-4.5V (an MoE LM) and GLM-4.6V: the same tower and merger
    model_types = ("glm4v", "glm4v_moe", "glm46v")
    processor_class = "Glm4vProcessor"
    image_token = "<|image|>"
    fallback_format = "<|begin_of_image|><|image|><|end_of_image|>{prompt}"
