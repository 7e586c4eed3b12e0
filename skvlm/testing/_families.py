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
    _IDEFICS_BODY,
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
    "make_tiny_aya_vision",
    "make_tiny_gemma3",
    "make_tiny_glm4v",
    "make_tiny_idefics2",
    "make_tiny_internvl",
    "make_tiny_janus",
    "make_tiny_llava_onevision",
    "make_tiny_qwen3_5",
    "make_tiny_qwen3_vl_moe",
    "make_tiny_vipllava",
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


@_builder("janus")
def make_tiny_janus(path, *, seed=0, **overrides):
    """Tiny Janus: SigLIP-style tower, MLP aligner (16 tokens per 32 px image),
    Llama LM; the image-generation VQ model at toy size too."""
    from transformers import (
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessorPil,
        JanusProcessor,
    )

    tokenizer = _named_tokenizer(
        {
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        padding_side="left",
    )
    processor = JanusProcessor(
        image_processor=JanusImageProcessorPil(
            size={"height": 32, "width": 32}, min_size=8
        ),
        tokenizer=tokenizer,
        num_image_tokens=16,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                num_hidden_layers=3,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                mlp_ratio=2.0,
                projection_dim=32,
                num_image_tokens=16,
                depth=2,
            ),
            vq_config=dict(
                embed_dim=8,
                num_embeddings=16,
                latent_channels=32,
                base_channels=32,
                channel_multiplier=[1, 1],
                num_res_blocks=1,
                num_patches=4,
                projection_dim=32,
                image_token_embed_dim=32,
            ),
            text_config=dict(
                _TEXT,
                model_type="llama",
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            image_token_id=tokenizer.image_token_id,
        ),
        overrides,
    )
    return _save(
        path, JanusForConditionalGeneration, JanusConfig(**kwargs), processor, seed
    )


GLM4V_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@_builder("glm4v")
def make_tiny_glm4v(path, *, seed=0, **overrides):
    """Tiny GLM-4.1V: Qwen-style packed patches with a 2x2 merger, GLM-4 LM with
    M-RoPE."""
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm4vImageProcessorPil,
    )

    specials = [
        "<|begin_of_image|>",
        "<|end_of_image|>",
        "<|image|>",
        "<|begin_of_video|>",
        "<|end_of_video|>",
        "<|video|>",
        "<|user|>",
        "<|assistant|>",
    ]
    tokenizer = _tokenizer(
        specials, eos="<|endoftext|>", pad="<|pad|>", padding_side="left"
    )
    image_processor = Glm4vImageProcessorPil(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64},
    )
    processor = without_video_processor(transformers.Glm4vProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=MissingVideoProcessor(),
        chat_template=GLM4V_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    kwargs = _merge(
        dict(
            vision_config=dict(
                depth=3,
                hidden_size=32,
                intermediate_size=64,
                num_heads=4,
                out_hidden_size=32,
                patch_size=8,
                image_size=32,
                spatial_merge_size=2,
                temporal_patch_size=2,
            ),
            text_config=dict(
                _TEXT,
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                rope_parameters={
                    "rope_type": "default",
                    "rope_theta": 10000.0,
                    "mrope_section": [2, 1, 1],
                    "partial_rotary_factor": 1.0,
                },
            ),
            image_token_id=ids("<|image|>"),
            video_token_id=ids("<|video|>"),
            image_start_token_id=ids("<|begin_of_image|>"),
            image_end_token_id=ids("<|end_of_image|>"),
            video_start_token_id=ids("<|begin_of_video|>"),
            video_end_token_id=ids("<|end_of_video|>"),
        ),
        overrides,
    )
    path = _save(
        path, Glm4vForConditionalGeneration, Glm4vConfig(**kwargs), processor, seed
    )
    _add_video_config(
        path,
        {
            "video_processor_type": "Glm4vVideoProcessor",
            "patch_size": 8,
            "merge_size": 2,
            "temporal_patch_size": 2,
        },
    )
    return path


def _llama_text(tokenizer, **kwargs):
    return dict(
        _TEXT,
        model_type="llama",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **kwargs,
    )


def _got_ocr2_tiles(**kwargs):
    """32 px tiles of an image (up to 4) plus its thumbnail, as InternVL/Aya crop."""
    from transformers import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(
        size={"height": 32, "width": 32},
        crop_to_patches=True,
        min_patches=1,
        max_patches=4,
        **kwargs,
    )


def _chatml(image):
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
        + image
        + "\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


@_builder("internvl")
def make_tiny_internvl(path, *, seed=0, **overrides):
    """Tiny InternVL: InternViT tower, pixel-shuffle MLP projector (4 tokens per
    32 px tile); an image is cut into up to 4 tiles plus a thumbnail."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    tokenizer = _named_tokenizer(
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        ["<image>", "<|im_start|>", "<|im_end|>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        padding_side="left",
    )
    processor = without_video_processor(transformers.InternVLProcessor)(
        image_processor=_got_ocr2_tiles(),
        tokenizer=tokenizer,
        video_processor=MissingVideoProcessor(),
        image_seq_length=4,
        chat_template=_chatml("<IMG_CONTEXT>"),
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                image_size=[32, 32],
                patch_size=[8, 8],
            ),
            text_config=dict(
                _TEXT,
                model_type="qwen2",
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            image_token_id=tokenizer.context_image_token_id,
            image_seq_length=4,
            downsample_ratio=0.5,
            vision_feature_layer=-1,
        ),
        overrides,
    )
    path = _save(
        path,
        InternVLForConditionalGeneration,
        InternVLConfig(**kwargs),
        processor,
        seed,
    )
    _add_video_config(path, {"video_processor_type": "InternVLVideoProcessor"})
    return path


@_builder("aya_vision")
def make_tiny_aya_vision(path, *, seed=0, **overrides):
    """Tiny Aya Vision: SigLIP tower, pixel-shuffle + SwiGLU projector (4 tokens
    per 32 px tile), Cohere2 LM; tiles plus a global view per image."""
    from transformers import (
        AyaVisionConfig,
        AyaVisionForConditionalGeneration,
        AyaVisionProcessor,
    )

    specials = [
        "<image>",
        "<|START_OF_IMG|>",
        "<|END_OF_IMG|>",
        "<|IMG_PATCH|>",
        "<|IMG_LINE_BREAK|>",
        "TILE",
        "TILE_GLOBAL",
        "<|START_OF_TURN_TOKEN|>",
        "<|END_OF_TURN_TOKEN|>",
        "<|USER_TOKEN|>",
        "<|CHATBOT_TOKEN|>",
    ]
    tokenizer = _tokenizer(
        specials, bos="<BOS_TOKEN>", eos="<EOS_TOKEN>", pad="<PAD>", padding_side="left"
    )
    processor = AyaVisionProcessor(
        image_processor=_got_ocr2_tiles(),
        tokenizer=tokenizer,
        patch_size=8,
        img_size=32,
        downsample_factor=2,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(_VISION, model_type="siglip_vision_model"),
            text_config=dict(
                _TEXT,
                model_type="cohere2",
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                sliding_window=16,
                layer_types=[
                    "sliding_attention",
                    "sliding_attention",
                    "full_attention",
                ],
            ),
            image_token_index=processor.image_token_id,
            downsample_factor=2,
            vision_feature_layer=-1,
        ),
        overrides,
    )
    return _save(
        path,
        AyaVisionForConditionalGeneration,
        AyaVisionConfig(**kwargs),
        processor,
        seed,
    )


@_builder("idefics2")
def make_tiny_idefics2(path, *, seed=0, **overrides):
    """Tiny Idefics2: SigLIP-style tower, perceiver resampler (4 latents per
    image), Mistral-style LM. One image list per prompt."""
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessorPil,
        Idefics2Processor,
    )

    tokenizer = _tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        bos="<s>",
        eos="</s>",
        pad="<unk>",
        unk="<unk>",
        padding_side="left",
    )
    processor = Idefics2Processor(
        image_processor=Idefics2ImageProcessorPil(
            size={"longest_edge": 32, "shortest_edge": 32}, do_image_splitting=False
        ),
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=_IDEFICS_BODY,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(_VISION),
            perceiver_config=dict(
                hidden_act="silu",
                resampler_n_latents=4,
                resampler_depth=1,
                resampler_n_heads=2,
                resampler_head_dim=8,
                num_key_value_heads=1,
            ),
            text_config=dict(
                _llama_text(tokenizer), model_type="mistral", sliding_window=None
            ),
            image_token_id=processor.image_token_id,
        ),
        overrides,
    )
    return _save(
        path,
        Idefics2ForConditionalGeneration,
        Idefics2Config(**kwargs),
        processor,
        seed,
    )


@_builder("llava_onevision")
def make_tiny_llava_onevision(path, *, seed=0, **overrides):
    """Tiny LLaVA-OneVision: SigLIP tower, anyres views over 32 px crops (a base
    view plus 2-4 tiles), learned image-newline tokens, Qwen2 LM."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    pinpoints = [[32, 64], [64, 32], [64, 64]]
    tokenizer = _tokenizer(
        ["<image>", "<video>", "<|im_start|>", "<|im_end|>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        padding_side="left",
    )
    processor = without_video_processor(transformers.LlavaOnevisionProcessor)(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        video_processor=MissingVideoProcessor(),
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=_chatml("<image>"),
    )
    kwargs = _merge(
        dict(
            vision_config=dict(_VISION, model_type="siglip_vision_model"),
            text_config=dict(
                _TEXT,
                model_type="qwen2",
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            image_token_index=processor.image_token_id,
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            image_grid_pinpoints=pinpoints,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        ),
        overrides,
    )
    path = _save(
        path,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionConfig(**kwargs),
        processor,
        seed,
    )
    _add_video_config(path, {"video_processor_type": "LlavaOnevisionVideoProcessor"})
    return path


@_builder("vipllava")
def make_tiny_vipllava(path, *, seed=0, **overrides):
    """Tiny VipLLaVA: LLaVA's CLIP tower and processor, features of two tower
    layers concatenated into a layer-normed projector."""
    from transformers import (
        LlavaConfig,
        VipLlavaConfig,
        VipLlavaForConditionalGeneration,
    )

    from ._generative import make_tiny_llava

    make_tiny_llava(path)  # the processor and tokenizer
    llava = LlavaConfig.from_pretrained(path)
    kwargs = _merge(
        dict(
            vision_config=llava.vision_config.to_dict(),
            text_config=llava.text_config.to_dict(),
            image_token_id=llava.image_token_id,
            vision_feature_layers=[-2, -1],
            pad_token_id=llava.pad_token_id,
        ),
        overrides,
    )
    model_path = _save(
        path,
        VipLlavaForConditionalGeneration,
        VipLlavaConfig(**kwargs),
        _NoSave(),
        seed,
    )
    return model_path


class _NoSave:
    """The processor of an already written directory: nothing more to save."""

    def save_pretrained(self, path):
        return path
