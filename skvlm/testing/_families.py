"""Tiny random-init checkpoints of the newer image-text-to-text families.

Same recipe as :mod:`skvlm.testing._generative`: the real architecture at toy
size, the family's real processor class with an offline word-level tokenizer,
saved with ``save_pretrained``. Families whose processor owns a video
processor get a stand-in for it (images never need it).
"""

from __future__ import annotations

import transformers
from transformers import PreTrainedTokenizerFast

from ..models import MissingVideoProcessor, without_video_processor
from ._generative import (
    _TEXT,
    _VISION,
    QWEN3_VL_TEMPLATE,
    _add_video_config,
    _builder,
    _merge,
    _qwen_parts,
    _qwen_text,
    _qwen_video_config,
    _save,
    _tokenizer,
)

__all__ = [
    "make_tiny_gemma3",
    "make_tiny_qwen3_5",
    "make_tiny_qwen3_vl_moe",
]


def _named_tokenizer(named, specials=(), **kwargs):
    """The offline tokenizer with named special tokens (``tokenizer.image_token``...)."""
    base = _tokenizer(list(dict.fromkeys([*named.values(), *specials])), **kwargs)
    return PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        bos_token=base.bos_token,
        eos_token=base.eos_token,
        pad_token=base.pad_token,
        unk_token=base.unk_token,
        padding_side=base.padding_side,
        extra_special_tokens=dict(named),
    )


GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "{{ '<start_of_image>' }}{% elif item['type'] == 'text' %}{{ item['text'] | trim }}"
    "{% endif %}{% endfor %}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@_builder("gemma3")
def make_tiny_gemma3(path, *, seed=0, **overrides):
    """Tiny Gemma 3: SigLIP tower, average-pool + linear projector (4 tokens per
    image), Gemma 3 LM with sliding-window layers. One image list per prompt."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
    )

    tokenizer = _named_tokenizer(
        {
            "boi_token": "<start_of_image>",
            "image_token": "<image_soft_token>",
            "eoi_token": "<end_of_image>",
        },
        ["<start_of_turn>", "<end_of_turn>", "model"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        padding_side="left",
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=GEMMA3_TEMPLATE,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(_VISION, model_type="siglip_vision_model"),
            text_config=dict(
                _TEXT,
                vocab_size=len(tokenizer),
                sliding_window=16,
                pad_token_id=tokenizer.pad_token_id,
            ),
            mm_tokens_per_image=4,
            boi_token_index=tokenizer.boi_token_id,
            eoi_token_index=tokenizer.eoi_token_id,
            image_token_index=tokenizer.image_token_id,
        ),
        overrides,
    )
    return _save(
        path,
        Gemma3ForConditionalGeneration,
        Gemma3Config(**kwargs),
        processor,
        seed,
    )


def _qwen3_vision():
    return dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=32,
        patch_size=8,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=64,
        deepstack_visual_indexes=[1],
    )


@_builder("qwen3_vl_moe")
def make_tiny_qwen3_vl_moe(path, *, seed=0, **overrides):
    """Tiny Qwen3-VL-MoE: Qwen3-VL's tower and DeepStack, a mixture-of-experts
    LM (4 experts, 2 per token)."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    tokenizer, processor, ids = _qwen_parts("Qwen3VLProcessor", QWEN3_VL_TEMPLATE)
    text = _qwen_text(
        tokenizer,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        decoder_sparse_step=1,
    )
    kwargs = _merge(
        dict(vision_config=_qwen3_vision(), text_config=text, **ids), overrides
    )
    kwargs.pop("vision_end_token_id", None)
    path = _save(
        path,
        Qwen3VLMoeForConditionalGeneration,
        Qwen3VLMoeConfig(**kwargs),
        processor,
        seed,
    )
    _add_video_config(path, _qwen_video_config("Qwen3VLVideoProcessor"))
    return path


@_builder("qwen3_5")
def make_tiny_qwen3_5(path, *, seed=0, **overrides):
    """Tiny Qwen3.5: Qwen3-VL's tower, a hybrid LM (linear-attention layers
    with a recurrent state, then a full-attention layer)."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    tokenizer, processor, ids = _qwen_parts("Qwen3VLProcessor", QWEN3_VL_TEMPLATE)
    text = _qwen_text(
        tokenizer,
        layer_types=["linear_attention", "linear_attention", "full_attention"],
        linear_conv_kernel_dim=4,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
    )
    vision = _qwen3_vision()
    vision.pop("deepstack_visual_indexes")
    kwargs = _merge(dict(vision_config=vision, text_config=text, **ids), overrides)
    kwargs.pop("vision_end_token_id", None)
    path = _save(
        path,
        Qwen3_5ForConditionalGeneration,
        Qwen3_5Config(**kwargs),
        processor,
        seed,
    )
    _add_video_config(path, _qwen_video_config("Qwen3VLVideoProcessor"))
    return path


_ = (transformers, MissingVideoProcessor, without_video_processor)
