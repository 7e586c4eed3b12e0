"""Tiny random-init generative VLMs of every supported family, saved in HF layout.

Each ``make_tiny_<family>`` builds the real architecture at toy size (vision
hidden 32, 3 blocks, 32 px images, patch 8; a 3-layer language model of width
32), the family's real processor class with a word-level tokenizer trained
offline, saves both with ``save_pretrained`` and returns the directory, so
tests go through the same ``from_pretrained`` path as a real checkpoint.
"""

import json
from pathlib import Path

import torch
import transformers
from tokenizers import processors

from ..models import MissingVideoProcessor, without_video_processor
from ._tokenizer import make_tokenizer
from ._vision import no_zero_weights

__all__ = [
    "GENERATIVE_FAMILIES",
    "load_processor",
    "make_tiny_blip2",
    "make_tiny_idefics3",
    "make_tiny_instructblip",
    "make_tiny_llava",
    "make_tiny_llava_next",
    "make_tiny_paligemma",
    "make_tiny_qwen2_5_vl",
    "make_tiny_qwen2_vl",
    "make_tiny_qwen3_vl",
    "make_tiny_smolvlm",
]

# Words of the family templates' fixed text (system prompts, role names).
_TEMPLATE_WORDS = (
    "What",
    "You",
    "you",
    "are",
    "helpful",
    "User",
    "Assistant",
    "USER",
    "ASSISTANT",
    "INST",
    "[",
    "]",
    "Question",
    "Answer",
)

_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)
_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=512,
)

# Chat templates of the real checkpoints (llava-hf/llava-1.5-7b-hf,
# llava-hf/llava-v1.6-mistral-7b-hf, Qwen/Qwen2-VL-2B-Instruct,
# HuggingFaceM4/Idefics3-8B-Llama3, HuggingFaceTB/SmolVLM-Instruct); Qwen3-VL's
# is reduced to its image/text part (no tools, no thinking blocks).
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ message['content'][0]['text'] + '</s> '}}{% endif %}{% endfor %}"
)
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_IDEFICS_BODY = (
    "{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_TEMPLATE = "<|begin_of_text|>" + _IDEFICS_BODY
SMOLVLM_TEMPLATE = "<|im_start|>" + _IDEFICS_BODY


def _tokenizer(
    specials,
    *,
    bos=None,
    eos=None,
    pad,
    unk="<unk>",
    add_bos=False,
    padding_side="right",
):
    """The shared offline tokenizer, adding BOS in front where the family's does."""
    tokenizer = make_tokenizer(
        specials,
        extra_words=_TEMPLATE_WORDS,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        padding_side=padding_side,
    )
    if add_bos:
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))],
        )
    return tokenizer


def _merge(base, overrides):
    """Copy ``base`` with ``overrides``; dict values merge one level deep."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _save(path, model_cls, config, processor, seed):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Seeded init without reseeding the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = no_zero_weights(model_cls(config).eval())
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _add_video_config(path, video_config):
    """Record a video processor config, so users with torchvision load the
    full processor through ``AutoProcessor`` (the nested v5 layout)."""
    config_file = Path(path) / "processor_config.json"
    saved = json.loads(config_file.read_text())
    saved["video_processor"] = video_config
    config_file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def load_processor(path, **kwargs):
    """Load the processor saved at ``path`` the way skvlm does, torchvision or not.

    ``AutoProcessor.from_pretrained`` fails without torchvision for processors
    that own a video processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM); skvlm's
    adapters load those with a stand-in video processor. This is the same code.

    Parameters
    ----------
    path : str or Path
        Local directory in ``save_pretrained`` layout (or hub id).
    **kwargs
        ``revision`` is passed on.

    Returns
    -------
    processor : transformers.ProcessorMixin

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.testing._generative import load_processor, make_tiny_qwen2_vl
    >>> path = make_tiny_qwen2_vl(tempfile.mkdtemp())
    >>> type(load_processor(path)).__name__
    'Qwen2VLProcessor'
    """
    from ..models import adapter_class, load_config

    path = str(path)
    cls = adapter_class(load_config(path))
    return cls.load_processor(path, revision=kwargs.get("revision"))


_BUILDER_DOC = """
    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    seed : int, default=0
        Seed of the random init: the same seed gives the same weights.
    **overrides
        Keyword arguments of the family's config class, replacing the tiny
        defaults; ``vision_config``, ``text_config`` and ``qformer_config``
        dicts merge key by key.

    Returns
    -------
    path : Path
        The directory, holding config, weights, processor and tokenizer.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> from skvlm.testing import {name}
    >>> AutoConfig.from_pretrained({name}(tempfile.mkdtemp())).model_type
    '{model_type}'
"""


def _builder(model_type):
    """Append the shared numpydoc sections to a builder's docstring."""

    def decorate(func):
        func.__doc__ = (
            func.__doc__.rstrip()
            + "\n"
            + _BUILDER_DOC.format(name=func.__name__, model_type=model_type)
        )
        return func

    return decorate


def _llama_tokenizer(specials, **kwargs):
    return _tokenizer(
        specials, bos="<s>", eos="</s>", pad="<pad>", add_bos=True, **kwargs
    )


def _llama_text(tokenizer, **kwargs):
    return dict(
        _TEXT,
        model_type="llama",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


@_builder("llava")
def make_tiny_llava(path, *, seed=0, **overrides):
    """Tiny LLaVA-1.5: CLIP tower, 2-layer MLP projector, Llama LM.

    Feature layer -2, "default" selection (CLS dropped): 16 image tokens per
    32 px image.
    """
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _llama_tokenizer(["<image>"], padding_side="left")
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                _VISION, model_type="clip_vision_model", projection_dim=32
            ),
            text_config=_llama_text(tokenizer),
            image_token_id=processor.image_token_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            projector_hidden_act="gelu",
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(
        path, LlavaForConditionalGeneration, LlavaConfig(**kwargs), processor, seed
    )


@_builder("llava_next")
def make_tiny_llava_next(path, *, seed=0, **overrides):
    """Tiny LLaVA-NeXT: anyres tiling over ``image_grid_pinpoints``.

    A 32 px base crop and pinpoints up to 64 px: an image gives the base
    crop plus 2-4 tiles, so token counts vary with the image's aspect.
    """
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    pinpoints = [[32, 64], [64, 32], [64, 64]]
    tokenizer = _llama_tokenizer(["<image>"], padding_side="left")
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_TEMPLATE,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                _VISION, model_type="clip_vision_model", projection_dim=32
            ),
            text_config=_llama_text(tokenizer),
            image_token_id=processor.image_token_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            image_grid_pinpoints=pinpoints,
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(
        path,
        LlavaNextForConditionalGeneration,
        LlavaNextConfig(**kwargs),
        processor,
        seed,
    )


_QWEN_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen_parts(processor_name, template, image_processor_kwargs=None):
    from transformers import Qwen2VLImageProcessorPil

    tokenizer = _tokenizer(
        _QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>", padding_side="left"
    )
    # Sizes between 32x32 and 64x64 px, in multiples of patch 8 x merge 2.
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64},
        **(image_processor_kwargs or {}),
    )
    processor = without_video_processor(getattr(transformers, processor_name))(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=MissingVideoProcessor(),
        chat_template=template,
    )
    ids = dict(
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    return tokenizer, processor, ids


def _qwen_video_config(name):
    return {
        "video_processor_type": name,
        "patch_size": 8,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "size": {"shortest_edge": 32 * 32, "longest_edge": 64 * 64},
    }


def _qwen_text(tokenizer, mrope_section=(2, 1, 1), **kwargs):
    text = dict(
        _TEXT,
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": list(mrope_section),
        },
    )
    text.update(kwargs)
    return text


@_builder("qwen2_vl")
def make_tiny_qwen2_vl(path, *, seed=0, **overrides):
    """Tiny Qwen2-VL: patch 8, 2x2 merger, M-RoPE (sections 2/1/1 of head dim 8).

    A 32 px image is a 4x4 patch grid, 4 visual tokens after the merger.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer, processor, ids = _qwen_parts("Qwen2VLProcessor", QWEN2_VL_TEMPLATE)
    kwargs = _merge(
        dict(
            vision_config=dict(
                depth=3,
                embed_dim=32,
                hidden_size=32,
                num_heads=4,
                mlp_ratio=2,
                patch_size=8,
                spatial_merge_size=2,
                temporal_patch_size=2,
            ),
            text_config=_qwen_text(tokenizer),
            **ids,
        ),
        overrides,
    )
    path = _save(
        path, Qwen2VLForConditionalGeneration, Qwen2VLConfig(**kwargs), processor, seed
    )
    _add_video_config(path, _qwen_video_config("Qwen2VLVideoProcessor"))
    return path


@_builder("qwen2_5_vl")
def make_tiny_qwen2_5_vl(path, *, seed=0, **overrides):
    """Tiny Qwen2.5-VL: windowed vision attention (window 32 px = 2x2 merge
    units; block 2 is full attention), so images over 32 px are window-permuted.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer, processor, ids = _qwen_parts("Qwen2_5_VLProcessor", QWEN2_VL_TEMPLATE)
    kwargs = _merge(
        dict(
            vision_config=dict(
                depth=3,
                hidden_size=32,
                intermediate_size=64,
                num_heads=4,
                out_hidden_size=32,
                patch_size=8,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=32,
                fullatt_block_indexes=[2],
            ),
            text_config=_qwen_text(tokenizer),
            **ids,
        ),
        overrides,
    )
    path = _save(
        path,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLConfig(**kwargs),
        processor,
        seed,
    )
    _add_video_config(path, _qwen_video_config("Qwen2VLVideoProcessor"))
    return path


@_builder("qwen3_vl")
def make_tiny_qwen3_vl(path, *, seed=0, **overrides):
    """Tiny Qwen3-VL: learned 8x8 position grid, DeepStack from vision block 1
    (its merged features are added to the LM's hidden states after layer 0).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer, processor, ids = _qwen_parts("Qwen3VLProcessor", QWEN3_VL_TEMPLATE)
    kwargs = _merge(
        dict(
            vision_config=dict(
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
            ),
            text_config=_qwen_text(tokenizer, mrope_section=(2, 1, 1)),
            **ids,
        ),
        overrides,
    )
    kwargs.pop("vision_end_token_id", None)
    path = _save(
        path, Qwen3VLForConditionalGeneration, Qwen3VLConfig(**kwargs), processor, seed
    )
    _add_video_config(path, _qwen_video_config("Qwen3VLVideoProcessor"))
    return path


@_builder("paligemma")
def make_tiny_paligemma(path, *, seed=0, **overrides):
    """Tiny PaliGemma: SigLIP tower (16 patch tokens, no CLS), linear projector,
    Gemma LM. No chat template: the processor writes ``<image>*16 <bos> prompt\\n``.
    """
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    tokenizer = _tokenizer(
        [], bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True, padding_side="right"
    )
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = dict(
        _TEXT,
        model_type="gemma",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                _VISION,
                model_type="siglip_vision_model",
                projection_dim=32,
                vision_use_head=False,
            ),  # as PaliGemma's own default
            text_config=text,
            projection_dim=32,
            image_token_id=processor.image_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(
        path,
        PaliGemmaForConditionalGeneration,
        PaliGemmaConfig(**kwargs),
        processor,
        seed,
    )


_IDEFICS_SPECIALS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def _idefics_kwargs(tokenizer, processor, overrides, vision_type):
    return _merge(
        dict(
            vision_config=dict(_VISION, model_type=vision_type),
            text_config=_llama_text(tokenizer),
            scale_factor=2,
            image_token_id=processor.image_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )


@_builder("idefics3")
def make_tiny_idefics3(path, *, seed=0, **overrides):
    """Tiny Idefics3: SigLIP-style tower, pixel-shuffle connector (scale 2: 4
    tokens per 32 px tile), image splitting into 32 px tiles + a global view.
    """
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = _tokenizer(
        _IDEFICS_SPECIALS + ["<|begin_of_text|>"],
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad="<|reserved_special_token_0|>",
        padding_side="left",
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 64},
        max_image_size={"longest_edge": 32},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=IDEFICS3_TEMPLATE,
    )
    kwargs = _idefics_kwargs(tokenizer, processor, overrides, "idefics3_vision")
    return _save(
        path,
        Idefics3ForConditionalGeneration,
        Idefics3Config(**kwargs),
        processor,
        seed,
    )


@_builder("smolvlm")
def make_tiny_smolvlm(path, *, seed=0, **overrides):
    """Tiny SmolVLM: Idefics3 architecture with SmolVLM's processor (needs
    ``num2words``) and chat template."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessorPil,
    )

    tokenizer = _tokenizer(
        _IDEFICS_SPECIALS + ["<|im_start|>"],
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|im_end|>",
        padding_side="left",
    )
    image_processor = SmolVLMImageProcessorPil(
        size={"longest_edge": 64},
        max_image_size={"longest_edge": 32},
        do_image_splitting=True,
    )
    processor = without_video_processor(transformers.SmolVLMProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=MissingVideoProcessor(),
        image_seq_len=4,
        chat_template=SMOLVLM_TEMPLATE,
    )
    kwargs = _idefics_kwargs(tokenizer, processor, overrides, "smolvlm_vision")
    path = _save(
        path, SmolVLMForConditionalGeneration, SmolVLMConfig(**kwargs), processor, seed
    )
    _add_video_config(
        path,
        {
            "video_processor_type": "SmolVLMVideoProcessor",
            "size": {"longest_edge": 64},
            "max_image_size": {"longest_edge": 32},
        },
    )
    return path


_QFORMER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    encoder_hidden_size=32,
    max_position_embeddings=64,
)


@_builder("blip-2")
def make_tiny_blip2(path, *, seed=0, **overrides):
    """Tiny BLIP-2: ViT tower, 2-layer Q-Former with 4 queries, OPT LM. No chat
    template; the family's format is ``"Question: {prompt} Answer:"``."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessorPil,
    )

    tokenizer = _tokenizer(
        [], bos="</s>", eos="</s>", pad="<pad>", add_bos=True, padding_side="right"
    )
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    processor = Blip2Processor(
        image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=4
    )
    text = dict(
        model_type="opt",
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=512,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs = _merge(
        dict(
            # The family's default init std (1e-10) makes every vision token ~0.
            vision_config=dict(
                _VISION, model_type="blip_2_vision_model", initializer_range=0.02
            ),
            qformer_config=dict(_QFORMER, vocab_size=64),
            text_config=text,
            num_query_tokens=4,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        ),
        overrides,
    )
    return _save(
        path, Blip2ForConditionalGeneration, Blip2Config(**kwargs), processor, seed
    )


@_builder("instructblip")
def make_tiny_instructblip(path, *, seed=0, **overrides):
    """Tiny InstructBLIP: BLIP-2 with an instruction-aware Q-Former (its own
    BERT-style tokenizer in ``qformer_tokenizer/``) and a Llama (Vicuna) LM."""
    tokenizer = _llama_tokenizer([], padding_side="right")
    return instructblip(path, tokenizer, _llama_text, seed, overrides)


def instructblip(path, tokenizer, text_config, seed, overrides):
    """Save a tiny InstructBLIP over ``tokenizer``; ``text_config(tokenizer)``
    gives its language model's config (Vicuna's or Flan-T5's), sized once the
    processor has added its image token to the tokenizer."""
    from transformers import (
        BlipImageProcessorPil,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    qformer_tokenizer = _tokenizer(
        ["[CLS]", "[SEP]", "[MASK]"], pad="[PAD]", unk="[UNK]", padding_side="right"
    )
    # BERT's "[CLS] text [SEP]" framing, as the real Q-Former tokenizer does.
    qformer_tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[
            (t, qformer_tokenizer.convert_tokens_to_ids(t)) for t in ("[CLS]", "[SEP]")
        ],
    )
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=4,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                _VISION, model_type="instructblip_vision_model", initializer_range=0.02
            ),
            qformer_config=dict(
                _QFORMER,
                vocab_size=len(qformer_tokenizer),
                pad_token_id=qformer_tokenizer.pad_token_id,
            ),
            text_config=text_config(tokenizer),
            num_query_tokens=4,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        ),
        overrides,
    )
    return _save(
        path,
        InstructBlipForConditionalGeneration,
        InstructBlipConfig(**kwargs),
        processor,
        seed,
    )


GENERATIVE_FAMILIES = {
    "llava": make_tiny_llava,
    "llava_next": make_tiny_llava_next,
    "qwen2_vl": make_tiny_qwen2_vl,
    "qwen2_5_vl": make_tiny_qwen2_5_vl,
    "qwen3_vl": make_tiny_qwen3_vl,
    "paligemma": make_tiny_paligemma,
    "idefics3": make_tiny_idefics3,
    "smolvlm": make_tiny_smolvlm,
    "blip2": make_tiny_blip2,
    "instructblip": make_tiny_instructblip,
}
