"""Tiny random-init checkpoints of the Pixtral-tower families: Mistral 3,
LLaVA with a Pixtral tower, LightOnOCR and Mistral Large 4.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size, the family's processor (``PixtralProcessor``: its torchvision-free
stand-in where torchvision is missing, the same class name on disk) with an
offline word-level tokenizer holding ``[IMG]``, ``[IMG_BREAK]`` and
``[IMG_END]``. Images keep their aspect ratio (longest edge at most 64 px),
rounded to whole patches (of merged patches for Mistral 3), so a batch of
images of different sizes gives the tower patch sequences of different
lengths, packed into one.
"""

from __future__ import annotations

from .._transformers_compat import pixtral_processor_class
from ._families import _chatml, _named_tokenizer
from ._generative import _TEXT, _builder, _merge, _save

__all__ = [
    "make_tiny_lighton_ocr",
    "make_tiny_llava_pixtral",
    "make_tiny_mistral3",
    "make_tiny_mistral_large4",
]

# Mistral's [INST] format, reduced to one user turn with images and text.
PIXTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST]"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}[IMG]"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "[/INST]{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ eos_token }}{% endif %}{% endfor %}"
)

_PIXTRAL_VISION = dict(
    model_type="pixtral",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    head_dim=8,
    image_size=64,
    patch_size=8,
)


def _pixtral_parts(merge):
    from transformers import PixtralImageProcessorPil

    tokenizer = _named_tokenizer(
        {
            "image_token": "[IMG]",
            "image_break_token": "[IMG_BREAK]",
            "image_end_token": "[IMG_END]",
        },
        ["[INST]", "[/INST]"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        padding_side="left",
    )
    processor = pixtral_processor_class()(
        image_processor=PixtralImageProcessorPil(
            size={"longest_edge": 64}, patch_size={"height": 8, "width": 8}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        spatial_merge_size=merge,
        chat_template=PIXTRAL_TEMPLATE,
    )
    text = dict(
        _TEXT,
        model_type="mistral",
        vocab_size=len(tokenizer),
        sliding_window=None,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer, processor, text


@_builder("mistral3")
def make_tiny_mistral3(path, *, seed=0, **overrides):
    """Tiny Mistral 3 (Mistral Small 3.1): Pixtral tower (patch 8, images up to
    64 px at their own aspect ratio), RMS norm + 2x2 patch merger + MLP
    projector, Mistral LM."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer, processor, text = _pixtral_parts(merge=2)
    kwargs = _merge(
        dict(
            vision_config=dict(_PIXTRAL_VISION),
            text_config=text,
            image_token_index=processor.image_token_id,
            spatial_merge_size=2,
            vision_feature_layer=-1,
        ),
        overrides,
    )
    return _save(
        path,
        Mistral3ForConditionalGeneration,
        Mistral3Config(**kwargs),
        processor,
        seed,
    )


@_builder("llava")
def make_tiny_llava_pixtral(path, *, seed=0, **overrides):
    """Tiny LLaVA with a Pixtral tower (the layout of Pixtral-12B): Pixtral
    tower (patch 8, images up to 64 px at their own aspect ratio), MLP
    projector over every patch, Mistral LM."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tokenizer, processor, text = _pixtral_parts(merge=1)
    kwargs = _merge(
        dict(
            vision_config=dict(_PIXTRAL_VISION),
            text_config=text,
            image_token_id=processor.image_token_id,
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            projector_hidden_act="gelu",
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(
        path, LlavaForConditionalGeneration, LlavaConfig(**kwargs), processor, seed
    )


@_builder("lighton_ocr")
def make_tiny_lighton_ocr(path, *, seed=0, **overrides):
    """Tiny LightOnOCR: Pixtral tower (patch 8, images up to 64 px at their own
    aspect ratio), Mistral 3's projector (2x2 patch merger), Qwen3 LM; the
    Qwen tokens stand for the image (``<|image_pad|>``, one per merged patch,
    no row breaks)."""
    from transformers import (
        LightOnOcrConfig,
        LightOnOcrForConditionalGeneration,
        LightOnOcrProcessor,
        PixtralImageProcessorPil,
    )

    tokenizer = _named_tokenizer(
        {
            "image_token": "<|image_pad|>",
            "image_break_token": "<|vision_pad|>",
            "image_end_token": "<|vision_end|>",
        },
        ["<|im_start|>", "<|im_end|>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        padding_side="left",
    )
    processor = LightOnOcrProcessor(
        # its image processor rounds sides to whole merged patches (2 x 8 px)
        image_processor=PixtralImageProcessorPil(
            size={"longest_edge": 64}, patch_size={"height": 16, "width": 16}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        spatial_merge_size=2,
        chat_template=_chatml("<|image_pad|>"),
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                _PIXTRAL_VISION,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            ),
            text_config=dict(
                _TEXT,
                model_type="qwen3",
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            image_token_id=tokenizer.image_token_id,
            spatial_merge_size=2,
        ),
        overrides,
    )
    return _save(
        path,
        LightOnOcrForConditionalGeneration,
        LightOnOcrConfig(**kwargs),
        processor,
        seed,
    )


@_builder("mistral_large4")
def make_tiny_mistral_large4(path, *, seed=0, **overrides):
    """Tiny Mistral Large 4: Mistral 3's Pixtral tower and projector, a
    mixture-of-experts LM (4 routed experts, 2 per token, one shared) with
    latent attention and a sparse-attention indexer.

    The indexer's top-k (256) covers every position of the tests' prompts.
    With a smaller top-k than a padded batch's length, HF's own outputs for a
    padded batch differ from those of each prompt alone (padding enters the
    top-k selection), so no batch could equal the one-at-a-time reference.
    """
    from transformers import MistralLarge4Config, MistralLarge4ForConditionalGeneration

    tokenizer, processor, _ = _pixtral_parts(merge=2)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=8,
        n_routed_experts=4,
        n_shared_experts=1,
        num_experts_per_tok=2,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
        index_topk=256,
        index_head_dim=8,
        index_n_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(_PIXTRAL_VISION),
            text_config=text,
            image_token_index=processor.image_token_id,
            spatial_merge_size=2,
        ),
        overrides,
    )
    return _save(
        path,
        MistralLarge4ForConditionalGeneration,
        MistralLarge4Config(**kwargs),
        processor,
        seed,
    )
