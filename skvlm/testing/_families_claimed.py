"""Tiny checkpoints of the image-text-to-text families the generic adapter claims.

One builder, :func:`make_tiny_vlm`, reads a short :class:`Recipe` per model
type: the family's own config class with every sub-config at its defaults,
shrunk to toy sizes (:data:`SMALL`: every size key the sub-config has; a
sub-config's own sub-configs likewise, DeepSeek-OCR-2's SAM and encoder), the
family's processor class over an offline word-level tokenizer that holds the
family's special tokens, and a PIL image processor (the family's own where
transformers has one, else one whose outputs the model takes). A recipe names
only what differs from that common recipe.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, replace

from ._generative import _merge, _save, _tokenizer

__all__ = ["CLAIMED_RECIPES", "Recipe", "builder", "make_tiny_vlm"]

#: Toy sizes; a sub-config takes those of its keys that it has.
SMALL = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=512,
    image_size=32,
    patch_size=8,
    depth=3,
    embed_dim=32,
    num_heads=4,
    out_hidden_size=32,
    projection_dim=32,
    num_experts=4,
    num_local_experts=4,
    n_routed_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    hidden_size_per_layer_input=8,
)


@dataclass(frozen=True)
class Recipe:
    """What a family's tiny checkpoint needs beyond the common recipe.

    Attributes
    ----------
    image_processor : tuple
        ``(class name, kwargs)`` of the PIL image processor.
    named : dict
        ``tokenizer attribute -> token`` (``{"image_token": "<image>"}``):
        special tokens the processor reads off the tokenizer by name.
    specials : tuple of str
        More special tokens (chat markers, image boundaries).
    ids : dict
        ``config key -> token`` whose id the config stores.
    bos, eos, pad : str or None
        The tokenizer's own special tokens.
    processor : dict
        Keyword arguments of the processor class.
    template : str or None
        The chat template (None: prompts are ``"<image>\\n<prompt>"``).
    config : dict
        Overrides of the config; sub-config dicts merge key by key into the
        shrunk defaults.
    video : dict or None
        The video processor's saved config, for processors that own one.
    parts : dict
        ``processor argument -> transformers class name`` of other
        sub-processors (an audio feature extractor), built with defaults.
    stages : tuple of str
        The stages skvlm offers for the family (the others say why in
        :data:`skvlm.models.TRAITS`), all compared with HF by the family tests.
    classifiers : bool
        Whether the family tests run the generative classifier and the tuner.
    processor_class : str or None
        The processor class, where transformers maps none to the model type.
    torchvision : bool
        Whether its image processor exists only with torchvision: the family
        tests run in the torchvision world.
    timm : bool
        Whether its vision tower is a timm model (timm imports only with
        torchvision): the checkpoint builds only where torchvision is.

    Examples
    --------
    >>> from skvlm.testing import CLAIMED_RECIPES
    >>> CLAIMED_RECIPES["deepseek_vl"].image_processor[0]
    'DeepseekVLImageProcessorPil'
    """

    image_processor: tuple
    named: dict = field(default_factory=dict)
    specials: tuple = ()
    ids: dict = field(default_factory=dict)
    bos: str | None = None
    eos: str | None = "</s>"
    pad: str = "<pad>"
    processor: dict = field(default_factory=dict)
    template: str | None = None
    config: dict = field(default_factory=dict)
    video: dict | None = None
    parts: dict = field(default_factory=dict)
    stages: tuple = ("vision", "projector", "language")
    classifiers: bool = True
    processor_class: str | None = None
    torchvision: bool = False
    timm: bool = False


def _chatml(image):
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
        + image
        + "\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


CHATML = ("<|im_start|>", "<|im_end|>")
_SQUARE = {"size": {"height": 32, "width": 32}}

_QWEN_PIXELS = {
    "patch_size": 8,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "size": {"shortest_edge": 32 * 32, "longest_edge": 64 * 64},
}
_QWEN_SPECIALS = (
    *CHATML,
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_QWEN_IDS = dict(
    image_token_id="<|image_pad|>",
    video_token_id="<|video_pad|>",
    vision_start_token_id="<|vision_start|>",
)
_QWEN_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
_GLM_SPECIALS = (
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|video|>",
    "<|user|>",
    "<|assistant|>",
)
GLM_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "{{ BOI }}{% elif item['type'] == 'text' %}{{ item['text'] | trim }}"
    "{% endif %}{% endfor %}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
_LLAVA_TOKENS = dict(
    bos="<s>",
    processor=dict(
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    ),
)
_CLIP_PIXELS = (
    "CLIPImageProcessorPil",
    {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
)
_CLIP_TOWER = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)

_NO_VISION = ("projector", "language")  # TRAITS says why


def _chameleon_codes(n):
    """Chameleon's image-code words: code 12 is ``IMGIMGBCZ`` (digits as A-J)."""
    return tuple(
        "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(k)) + "Z"
        for k in range(n)
    )


def _emu3_codes(n):
    """Emu3's image-code words: code 12 is ``<|visual token 000012|>``."""
    return tuple(f"<|visual token {k:06d}|>" for k in range(n))


_VQ_CODES = 64  # the tiny codebook: one word per code
#: Toy sizes of a language model configured at the config's top level.
_TOP_LEVEL_LM = {
    key: SMALL[key]
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
    )
}
# Qwen2.5-VL's windowed attention at toy size: windows of 2 x 2 merge blocks
# (32 px), which the test images (up to 64 px) exceed, so the blocks see
# their patches permuted; block 2 attends over the whole image.
_WINDOWS = dict(window_size=32, fullatt_block_indexes=[2])


def _qwen_like(
    image_processor="Qwen2VLImageProcessorPil", *, temporal=2, mrope=False, **kwargs
):
    """A family with Qwen2-VL's packed patches and special tokens.

    ``temporal``: frames per patch (1 where the tower has no temporal patch);
    ``mrope``: whether its language model takes M-RoPE positions. Its packed
    tower is read per image (``skvlm.models._packed``): all three stages.
    """
    pixels = dict(_QWEN_PIXELS, temporal_patch_size=temporal)
    config = _merge(
        dict(
            text_config=dict(rope_parameters=_QWEN_ROPE) if mrope else {},
            vision_config=dict(spatial_merge_size=2),
        ),
        kwargs.pop("config", {}),
    )
    if temporal > 1:
        config["vision_config"]["temporal_patch_size"] = temporal
    video = kwargs.pop("video", "Qwen2VLVideoProcessor")  # None: it has none
    return Recipe(
        (image_processor, pixels),
        **{
            "specials": _QWEN_SPECIALS,
            "eos": "<|im_end|>",
            "pad": "<|endoftext|>",
            "ids": dict(_QWEN_IDS, vision_end_token_id="<|vision_end|>"),
            "template": _chatml("<|vision_start|><|image_pad|><|vision_end|>"),
            "video": {"video_processor_type": video, **pixels} if video else None,
            "config": config,
            **kwargs,
        },
    )


_GLM = dict(
    specials=_GLM_SPECIALS,
    eos="<|endoftext|>",
    pad="<|pad|>",
    ids=dict(
        image_token_id="<|image|>",
        video_token_id="<|video|>",
        image_start_token_id="<|begin_of_image|>",
        image_end_token_id="<|end_of_image|>",
        video_start_token_id="<|begin_of_video|>",
        video_end_token_id="<|end_of_video|>",
    ),
    template=GLM_TEMPLATE,
)

_OMNI_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
_OMNI_AUDIO = dict(
    d_model=32,
    encoder_layers=1,
    encoder_attention_heads=4,
    encoder_ffn_dim=64,
    output_dim=32,
)
_TILES = dict(_SQUARE, crop_to_patches=True, min_patches=1, max_patches=4)

_GRANITE_TOKENS = ("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>")


def _granite_chat(image):
    return (
        "{% for message in messages %}<|start_of_role|>{{ message['role'] }}"
        "<|end_of_role|>{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}" + image + "{% elif item['type'] == 'text' %}"
        "{{ item['text'] }}{% endif %}{% endfor %}<|end_of_text|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>"
        "{% endif %}"
    )


_GRANITE_PINPOINTS = [[32, 64], [64, 32], [64, 64]]
# A SAM tower (GOT-OCR2's) at toy width, patches of 8 px; two stride-2
# convolutions after it bring a side of n patches to n / 4 tokens
_SAM = dict(
    output_channels=16,
    window_size=4,
    global_attn_indexes=[],
    mlp_dim=64,
    patch_size=8,
    initializer_range=0.02,  # SAM's default (1e-10) gives all-zero features
)
_ERNIE_PIXELS = dict(_QWEN_PIXELS, temporal_patch_size=1)
_GLM_OCR = dict(
    _GLM,
    processor_class="Glm46VProcessor",
    config=dict(
        text_config=dict(rope_parameters=dict(_QWEN_ROPE, partial_rotary_factor=1.0)),
        vision_config=dict(spatial_merge_size=2, temporal_patch_size=2),
    ),
)

_MUSE_PIXELS = dict(
    patch_size=8, merge_size=2, temporal_patch_size=2, max_image_tokens=64
)
_MUSE_SPECIALS = (
    *CHATML,
    "<|patch|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|video|>",
    "<|vid_frame_separator|>",
    "<|vid_start|>",
    "<|vid_end|>",
)
_MUSE_CONFIG = dict(
    out_hidden_size=128,  # the tower's width times merge_size**2
    projector_hidden_size=32,
    text_config=dict(
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        layer_rope_theta=[10000.0, 10000.0, 0],
        sliding_window=16,
    ),
    vision_config=dict(
        pos_emb_height=4,
        pos_emb_width=4,
        max_position_embeddings=16,
        layer_types=["window_attention", "window_attention", "full_attention"],
    ),
)


def _inkling(image_processor, *, text=None, vision=None, audio=False, **kwargs):
    """An Inkling family: one image token per image patch of 16 px (2 x 2
    patches of 8 px in Inkling 2), sliding and full attention layers with
    block attention residuals, an MoE MLP."""
    return Recipe(
        (image_processor, dict(size={"height": 16, "width": 16})),
        named={"image_token": "<|image|>", "audio_token": "<|audio|>"},
        specials=(*CHATML, "<|content_image|>", "<|content_audio_input|>"),
        eos="<|im_end|>",
        ids={"image_token_id": "<|image|>"},
        processor=dict(image_token="<|image|>"),
        template=_chatml("<|image|>"),
        config=dict(
            vision_config=dict(text_hidden_size=32, **(vision or {})),
            **({"audio_config": dict(text_hidden_size=32)} if audio else {}),
            text_config=dict(
                swa_num_attention_heads=4,
                swa_num_key_value_heads=2,
                swa_head_dim=8,
                sliding_window_size=16,
                d_rel=4,
                rel_extent=64,
                log_scaling_n_floor=64,
                **{"n_layers_per_attn_res_block": 2, **(text or {})},
            ),
        ),
        **{"stages": _NO_VISION, "torchvision": True, **kwargs},
    )


_INKLING2_VISION = dict(patch_size=8, posemb_grid_size=8, projection_hidden_dim=64)

#: MiniCPM-V's tokens: the image (and video) placeholder and the markers its
#: processor reads off the tokenizer by name.
_MINICPM_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}


def _minicpm(image_processor, *, ids=None, **kwargs):
    """A MiniCPM-V family: a packed SigLIP-style tower of 8 px patches whose
    window-attention merger (after block 1) and final merger each merge 2 x 2
    patches, so a 32 px view gives one image token (four with MiniCPM-OCR's
    "4x" downsampling); an image over 32 px is a global view and up to 4
    slices (the real processors' default slicing); the Qwen3.5 hybrid
    language model (linear-attention layers, then a full-attention one)."""
    return Recipe(
        (
            image_processor,
            dict(patch_size=8, scale_resolution=32, max_slice_nums=4),
        ),
        named=_MINICPM_TOKENS,
        # the image ids' digits; the newline that ends each row of slices
        specials=(*CHATML, "\n", *"0123456789"),
        eos="<|im_end|>",
        ids=dict(
            image_token_id="<|image_pad|>",
            video_token_id="<|video_pad|>",
            **(ids or {}),
        ),
        template=_chatml("<|image_pad|>"),
        config=dict(
            insert_layer_id=1,
            text_config=dict(
                rope_parameters=_QWEN_ROPE,
                layer_types=["linear_attention", "linear_attention", "full_attention"],
                linear_conv_kernel_dim=4,
                linear_key_head_dim=8,
                linear_value_head_dim=8,
                linear_num_key_heads=2,
                linear_num_value_heads=4,
            ),
        ),
        **kwargs,
    )


#: One recipe per model type, sorted.
CLAIMED_RECIPES = {
    # Cohere's own image processor needs torchvision: GOT-OCR2's PIL one cuts
    # the same tiles (32 px, up to 4, plus a thumbnail)
    "cohere2_vision": Recipe(
        # patch_size: Cohere's image processor's name for tokens per tile side
        ("GotOcr2ImageProcessorPil", dict(_TILES, patch_size=2)),
        named={
            "boi_token": "<|START_OF_IMG|>",
            "eoi_token": "<|END_OF_IMG|>",
            "image_token": "<|IMG_PATCH|>",
            "img_line_break_token": "<|IMG_LINE_BREAK|>",
        },
        specials=("<image>",),
        bos="<BOS_TOKEN>",
        eos="<EOS_TOKEN>",
        ids={"image_token_id": "<|IMG_PATCH|>"},
        config=dict(
            downsample_factor=2,
            vision_config=dict(model_type="siglip_vision_model"),
            text_config=dict(sliding_window=16),
        ),
    ),
    "glm46v": Recipe(
        ("Glm46VImageProcessorPil", _QWEN_PIXELS),
        config=dict(
            text_config=dict(
                rope_parameters=dict(_QWEN_ROPE, partial_rotary_factor=1.0)
            ),
            vision_config=dict(spatial_merge_size=2, temporal_patch_size=2),
        ),
        video={"video_processor_type": "Glm46VVideoProcessor", **_QWEN_PIXELS},
        **_GLM,
        stages=("vision", "projector", "language"),
    ),
    "deepseek_vl_hybrid": Recipe(
        (
            "DeepseekVLHybridImageProcessorPil",
            dict(_SQUARE, min_size=8, high_res_size={"height": 64, "width": 64}),
        ),
        named={"image_token": "<image_placeholder>"},
        bos="<s>",
        ids={"image_token_id": "<image_placeholder>"},
        processor=dict(num_image_tokens=16),
        config=dict(
            high_res_vision_config=dict(
                output_channels=16,
                window_size=4,
                global_attn_indexes=[1],
                mlp_dim=64,
                image_size=64,
                patch_size=4,
            ),
        ),
    ),
    "qianfan_ocr": Recipe(
        ("GotOcr2ImageProcessorPil", dict(_SQUARE, crop_to_patches=False)),
        named={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
        },
        specials=(*CHATML, "<image>"),
        eos="<|im_end|>",
        ids={"image_token_id": "<IMG_CONTEXT>"},
        processor=dict(image_seq_length=4),
        template=_chatml("<image>"),
    ),
    "ovis2_5": _qwen_like(
        "Ovis2_5ImageProcessorPil",
        temporal=1,
        config=dict(
            vision_config=dict(
                window_size=32,
                layer_types=["window_attention", "window_attention", "full_attention"],
            )
        ),
        template=_chatml("<|image_pad|>"),  # the processor adds the boundaries
        named={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "image_start_token": "<|vision_start|>",
            "image_end_token": "<|vision_end|>",
            "video_start_token": "<|video_start|>",
            "video_end_token": "<|video_end|>",
        },
        ids=dict(
            _QWEN_IDS,
            image_start_token_id="<|vision_start|>",
            image_end_token_id="<|vision_end|>",
        ),
    ),
    # the thinkers (text out) of Qwen2.5-Omni and Qwen3-Omni, audio encoder at toy size
    "qwen2_5_omni_thinker": _qwen_like(
        processor_class="Qwen2_5OmniProcessor",
        parts={"feature_extractor": "WhisperFeatureExtractor"},
        named=_OMNI_TOKENS,
        ids=dict(
            image_token_index="<|IMAGE|>",
            video_token_index="<|VIDEO|>",
            audio_token_index="<|AUDIO|>",
            vision_start_token_id="<|vision_bos|>",
            vision_end_token_id="<|vision_eos|>",
            audio_start_token_id="<|audio_bos|>",
            audio_end_token_id="<|audio_eos|>",
        ),
        template=_chatml("<|vision_bos|><|IMAGE|><|vision_eos|>"),
        mrope=True,
        config=dict(
            vision_config=_WINDOWS,
            audio_config=_OMNI_AUDIO,
        ),
    ),
    "qwen3_omni_moe_thinker": _qwen_like(
        processor_class="Qwen3OmniMoeProcessor",
        parts={"feature_extractor": "WhisperFeatureExtractor"},
        named=_OMNI_TOKENS,
        ids=dict(
            image_token_id="<|IMAGE|>",
            video_token_id="<|VIDEO|>",
            audio_token_id="<|AUDIO|>",
            vision_start_token_id="<|vision_bos|>",
            audio_start_token_id="<|audio_bos|>",
        ),
        template=_chatml("<|vision_bos|><|IMAGE|><|vision_eos|>"),
        mrope=True,
        config=dict(
            vision_config=dict(
                num_position_embeddings=64, deepstack_visual_indexes=[1]
            ),
            audio_config=dict(_OMNI_AUDIO, downsample_hidden_size=16),
        ),
    ),
    "lfm2_vl": Recipe(
        (
            "Lfm2VlImageProcessor",
            dict(
                do_image_splitting=False,
                encoder_patch_size=8,
                tile_size=32,
                min_image_tokens=4,
                max_image_tokens=16,
            ),
        ),
        named={"image_token": "<image>"},
        specials=(*CHATML, "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>"),
        eos="<|im_end|>",
        ids={"image_token_id": "<image>"},
        template=_chatml("<image>"),
        config=dict(projector_hidden_size=32),
        torchvision=True,
    ),
    "cosmos3_edge": _qwen_like("Cosmos3EdgeImageProcessorPil", temporal=1, mrope=True),
    "exaone4_5": _qwen_like(config=dict(vision_config=_WINDOWS)),
    "hyperclovax_vision_v2": _qwen_like(config=dict(vision_config=_WINDOWS)),
    "llava_onevision1_5": _qwen_like(temporal=1),
    # hyper-connections (hc_count residual streams); one attention layer
    # (without one, HF's generate finds no attention layer in its cache)
    "qwen4_exp": _qwen_like(
        video="Qwen3VLVideoProcessor",
        config=dict(
            text_config=dict(
                layer_types=[
                    "linear_attention",
                    "linear_attention",
                    "indexed_attention",
                ],
                indexer_n_heads=2,
                indexer_kv_heads=1,
                indexer_head_dim=8,
                indexer_compress_ratio=4,
                indexer_budget=512,  # above any prompt's length: every key kept
            )
        ),
    ),
    "video_llama_3": _qwen_like("VideoLlama3ImageProcessorPil", temporal=1),
    "aria": Recipe(
        # Aria's processor resizes to 980 px: patches of 140 px give 7 x 7
        ("AriaImageProcessorPil", dict(split_image=False)),
        named={"image_token": "<|img|>"},
        specials=CHATML,
        ids={"image_token_id": "<|img|>"},
        processor=dict(size_conversion={980: 4}),
        template=_chatml("<|img|>"),
        config=dict(
            projector_patch_to_query_dict={49: 4},
            vision_config=dict(image_size=980, patch_size=140),
            text_config=dict(
                moe_num_experts=4,
                moe_topk=2,
                moe_num_shared_experts=1,
                moe_intermediate_size=32,
            ),
        ),
    ),
    "deepseek_vl": Recipe(
        ("DeepseekVLImageProcessorPil", dict(_SQUARE, min_size=8)),
        named={"image_token": "<image_placeholder>"},
        bos="<s>",
        ids={"image_token_id": "<image_placeholder>"},
        processor=dict(num_image_tokens=16),
    ),
    "gemma4": Recipe(
        # 70 soft tokens (its fewest), each pooled from 3 x 3 patches of 4 px
        (
            "Gemma4ImageProcessorPil",
            dict(patch_size=4, max_soft_tokens=70, pooling_kernel_size=3),
        ),
        processor=dict(image_seq_length=70),
        parts={"feature_extractor": "Gemma4AudioFeatureExtractor"},
        config=dict(
            vision_config=dict(
                model_type="gemma4_vision",
                patch_size=4,
                pooling_kernel_size=3,
                position_embedding_size=64,
            ),
            text_config=dict(sliding_window=16),
        ),
        named={
            "boi_token": "<start_of_image>",
            "image_token": "<image_soft_token>",
            "eoi_token": "<end_of_image>",
            "audio_token": "<audio_soft_token>",
            "boa_token": "<start_of_audio>",
            "eoa_token": "<end_of_audio>",
        },
        specials=("<start_of_turn>", "<end_of_turn>", "model"),
        bos="<bos>",
        eos="<eos>",
        ids={
            "image_token_id": "<image_soft_token>",
            "boi_token_id": "<start_of_image>",
            "eoi_token_id": "<end_of_image>",
        },
        template=GEMMA_TEMPLATE.replace("BOI", "'<image_soft_token>'"),
    ),
    "glm4v_moe": Recipe(
        ("Glm4vImageProcessorPil", _QWEN_PIXELS),
        specials=_GLM_SPECIALS,
        eos="<|endoftext|>",
        pad="<|pad|>",
        ids=dict(
            image_token_id="<|image|>",
            video_token_id="<|video|>",
            image_start_token_id="<|begin_of_image|>",
            image_end_token_id="<|end_of_image|>",
            video_start_token_id="<|begin_of_video|>",
            video_end_token_id="<|end_of_video|>",
        ),
        template=GLM_TEMPLATE,
        config=dict(
            text_config=dict(
                rope_parameters=dict(_QWEN_ROPE, partial_rotary_factor=1.0),
                n_shared_experts=1,
                first_k_dense_replace=1,
                n_group=1,
                topk_group=1,
            ),
            vision_config=dict(spatial_merge_size=2, temporal_patch_size=2),
        ),
        video={"video_processor_type": "Glm4vVideoProcessor", **_QWEN_PIXELS},
        stages=("vision", "projector", "language"),
    ),
    "got_ocr2": Recipe(
        # 256 image tokens per image, fixed by its processor: a 32 x 32 patch
        # grid that its two stride-2 convolutions bring to 16 x 16
        ("GotOcr2ImageProcessorPil", {"size": {"height": 512, "width": 512}}),
        specials=(*CHATML, "<img>", "</img>", "<imgpad>"),
        eos="<|im_end|>",
        pad="<|endoftext|>",
        ids={"image_token_id": "<imgpad>"},
        config=dict(vision_config=dict(_SAM, image_size=512)),
    ),
    "llava_next_video": Recipe(
        (
            "LlavaNextImageProcessorPil",
            dict(_CLIP_PIXELS[1], image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]]),
        ),
        specials=("<image>", "<video>"),
        ids={"image_token_id": "<image>", "video_token_id": "<video>"},
        config=dict(
            vision_config=_CLIP_TOWER,
            image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]],
            vision_feature_layer=-2,
        ),
        video={"video_processor_type": "LlavaNextVideoVideoProcessor"},
        **_LLAVA_TOKENS,
    ),
    "ovis2": Recipe(
        # a global view, then up to 4 tiles (crop_to_patches)
        ("Ovis2ImageProcessorPil", dict(_SQUARE, crop_to_patches=True, max_patches=4)),
        specials=(
            *CHATML,
            "<image>",
            "<IMG_START>",
            "<IMG_ATOM>",
            "<IMG_GRID>",
            "<IMG_COL>",
            "<IMG_ROW>",
            "<IMG_END>",
        ),
        eos="<|im_end|>",
        ids={
            "image_token_id": "<IMG_ATOM>",
            "visual_indicator_token_ids": [
                "<IMG_START>",
                "<IMG_GRID>",
                "<IMG_COL>",
                "<IMG_ROW>",
                "<IMG_END>",
            ],
        },
        processor=dict(image_seq_length=4),
        template=_chatml("<image>"),
        config=dict(hidden_size=32, vision_config=dict(vocab_size=64, hidden_stride=2)),
    ),
    "paddleocr_vl": Recipe(
        ("PaddleOCRVLImageProcessorPil", dict(_QWEN_PIXELS, temporal_patch_size=1)),
        named={"image_token": "<|IMAGE_PLACEHOLDER|>"},
        specials=("<|IMAGE_START|>", "<|IMAGE_END|>"),
        bos="<s>",
        ids={
            "image_token_id": "<|IMAGE_PLACEHOLDER|>",
            "vision_start_token_id": "<|IMAGE_START|>",
        },
        config=dict(text_config=dict(rope_parameters=_QWEN_ROPE)),
    ),
    "qwen3_5_moe": Recipe(
        ("Qwen2VLImageProcessorPil", _QWEN_PIXELS),
        specials=_QWEN_SPECIALS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        ids=_QWEN_IDS,
        template=_chatml("<|vision_start|><|image_pad|><|vision_end|>"),
        config=dict(
            text_config=dict(
                rope_parameters=_QWEN_ROPE,
                layer_types=["linear_attention", "linear_attention", "full_attention"],
                linear_conv_kernel_dim=4,
                linear_key_head_dim=8,
                linear_value_head_dim=8,
                linear_num_key_heads=2,
                linear_num_value_heads=4,
                shared_expert_intermediate_size=32,
            ),
            vision_config=dict(
                spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64
            ),
        ),
        video={"video_processor_type": "Qwen3VLVideoProcessor", **_QWEN_PIXELS},
        stages=("vision", "projector", "language"),
    ),
    "video_llava": Recipe(
        (
            "VideoLlavaImageProcessor",
            dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ),
        specials=("<image>", "<video>"),
        ids={"image_token_id": "<image>", "video_token_id": "<video>"},
        config=dict(vision_config=_CLIP_TOWER, vision_feature_layer=-2),
        **_LLAVA_TOKENS,
    ),
    # Cosmos 3's vision-language part is Qwen3-VL's, and its checkpoints use
    # Qwen/Qwen3-VL-8B-Instruct's processor files: Qwen3VLProcessor
    "cosmos3_omni": _qwen_like(
        processor_class="Qwen3VLProcessor",
        video="Qwen3VLVideoProcessor",
        mrope=True,
        config=dict(
            vision_config=dict(num_position_embeddings=64, deepstack_visual_indexes=[1])
        ),
    ),
    # SAM at 384 px: 48 x 48 patches, 12 x 12 tokens, the count of its
    # learned queries for that size (144), then the view separator; no crops
    "deepseek_ocr2": Recipe(
        (
            "DeepseekOcr2ImageProcessorPil",
            dict(
                size={"height": 384, "width": 384}, tile_size=384, crop_to_patches=False
            ),
        ),
        named={"image_token": "<image>"},
        bos="<s>",
        ids={"image_token_id": "<image>"},
        processor=dict(patch_size=8, downsample_ratio=4),
        config=dict(
            text_config=dict(
                mlp_layer_types=["dense", "sparse", "sparse"], n_shared_experts=1
            ),
            vision_config=dict(
                sam_config=dict(_SAM, image_size=384, downsample_channels=[16, 32])
            ),
        ),
    ),
    "ernie4_5_vl_moe": Recipe(
        ("Ernie4_5_VLMoeImageProcessorPil", _ERNIE_PIXELS),
        named={
            "image_token": "<|IMAGE_PLACEHOLDER|>",
            "image_start_token": "<|IMAGE_START|>",
            "image_end_token": "<|IMAGE_END|>",
            "video_token": "<|VIDEO_PLACEHOLDER|>",
            "video_start_token": "<|VIDEO_START|>",
            "video_end_token": "<|VIDEO_END|>",
        },
        bos="<s>",
        ids=dict(
            image_token_id="<|IMAGE_PLACEHOLDER|>",
            image_start_token_id="<|IMAGE_START|>",
            image_end_token_id="<|IMAGE_END|>",
            video_token_id="<|VIDEO_PLACEHOLDER|>",
            video_start_token_id="<|VIDEO_START|>",
            video_end_token_id="<|VIDEO_END|>",
        ),
        template=_chatml("<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"),
        config=dict(
            text_config=dict(
                moe_intermediate_size=[32, 16],
                moe_k=2,
                moe_num_experts=4,
                moe_num_shared_experts=1,
                mlp_layer_types=["dense", "sparse", "sparse"],
                # height and width sections equal (its pre-rotated layout)
                rope_parameters=dict(_QWEN_ROPE, mrope_section=[1, 1, 2]),
            ),
            vision_config=dict(spatial_merge_size=2),
        ),
        specials=CHATML,
        video={
            "video_processor_type": "Ernie4_5_VLMoeVideoProcessor",
            **_ERNIE_PIXELS,
            # its video processor refuses any other (baidu's checkpoints: 2)
            "temporal_patch_size": 2,
            "draw_on_frames": False,
        },
    ),
    # zai-org/GLM-OCR's preprocessor_config names Glm46VProcessor (with
    # Glm46VImageProcessor); GLM-GA's model is GLM-4.6V's, with its own image
    # processor under the same processor class
    "glm_ocr": Recipe(("Glm46VImageProcessorPil", _QWEN_PIXELS), **_GLM_OCR),
    "glmga": Recipe(("GlmgaImageProcessorPil", _QWEN_PIXELS), **_GLM_OCR),
    # LLaVA-NeXT tiles; Q-Formers over fixed vision layers feed chosen decoder
    # layers (one deepstack pair, four spatial groups); Q-Former heads are the
    # tower's width // 64, so the tower is 64 wide
    "granite4_vision": Recipe(
        (
            "LlavaNextImageProcessorPil",
            dict(_CLIP_PIXELS[1], image_grid_pinpoints=_GRANITE_PINPOINTS),
        ),
        specials=("<image>", *_GRANITE_TOKENS),
        eos="<|end_of_text|>",
        ids={"image_token_index": "<image>"},
        processor=dict(_LLAVA_TOKENS["processor"], downsample_rate="1/2"),
        template=_granite_chat("<image>\n"),
        config=dict(
            vision_config=dict(_CLIP_TOWER, hidden_size=64),
            text_config=dict(num_hidden_layers=5),
            image_grid_pinpoints=_GRANITE_PINPOINTS,
            downsample_rate="1/2",
            deepstack_layer_map=[[-2, 0]],
            spatial_target_layers=[1, 2, 3, 4],
            projector_dropout=0.0,
            vision_feature_layer=-2,
        ),
        stages=("vision", "language"),
    ),
    # up to 4 tiles of 32 px and a global view; 4 tokens per tile (coarse route)
    "granite_docling": Recipe(
        (
            "GraniteDoclingImageProcessorPil",
            dict(size={"height": 32, "width": 32}, max_patches=4),
        ),
        named={"image_token": "<image>"},
        specials=(
            *_GRANITE_TOKENS,
            "<fake_token_around_image>",
            "<global-img>",
            *(f"<row_{i}_col_{j}>" for i in range(1, 5) for j in range(1, 5)),
        ),
        eos="<|end_of_text|>",
        ids={"image_token_id": "<image>"},
        processor=dict(image_seq_len=4),
        template=_granite_chat("<image>"),
        config=dict(vision_config=dict(scale_factor=2, deepstack_visual_indexes=[1])),
    ),
    # its processor does not expand the image: the chat template writes
    # <img>, 64 <imgpad> and </img> (SAM at 256 px: 32 x 32 patches, 8 x 8
    # tokens; the real one writes 256 for 1024 px)
    "pp_chart2table": Recipe(
        ("PPChart2TableImageProcessorPil", {"size": {"height": 256, "width": 256}}),
        specials=(*CHATML, "<img>", "</img>", "<imgpad>"),
        eos="<|im_end|>",
        pad="<|endoftext|>",
        ids={"image_token_id": "<imgpad>"},
        template=_chatml("<img>{{ '<imgpad>' * 64 }}</img>"),
        config=dict(vision_config=dict(_SAM, image_size=256)),
    ),
    # its merger turns each image's 2 x 2 blocks into a grid with a newline
    # token per row, framed by a begin and an end token; M-RoPE over
    # (width, height, image index)
    "hunyuan_vl": Recipe(
        (
            "HunYuanVLImageProcessorPil",
            dict(patch_size=8, merge_size=2, min_pixels=32 * 32, max_pixels=64 * 64),
        ),
        named={
            "image_token": "<|hy_image|>",
            "image_start_token": "<|hy_image_start|>",
            "image_end_token": "<|hy_image_end|>",
        },
        specials=(*CHATML, "<|hy_image_newline|>"),
        eos="<|im_end|>",
        ids={
            "image_token_id": "<|hy_image|>",
            "im_start_id": "<|hy_image_start|>",
            "im_end_id": "<|hy_image_end|>",
            "im_newline_id": "<|hy_image_newline|>",
        },
        template=_chatml("<|hy_image_start|><|hy_image|><|hy_image_end|>"),
        config=dict(
            text_config=dict(
                # HunyuanOCR's layout: (position, width, height, image index)
                rope_parameters=dict(_QWEN_ROPE, mrope_section=[1, 1, 1, 1])
            ),
            vision_config=dict(max_image_size=64, min_image_size=32),
        ),
    ),
    # Qwen3-VL-like (DeepStack, M-RoPE), its RoPE parameters keyed by layer type
    "cohere_compass": Recipe(
        ("CohereCompassImageProcessorPil", _QWEN_PIXELS),
        specials=(
            *CHATML,
            "<|IMAGE_PAD|>",
            "<|VIDEO_PAD|>",
            "<|VISION_START|>",
            "<|VISION_END|>",
        ),
        eos="<|im_end|>",
        ids=dict(
            image_token_id="<|IMAGE_PAD|>",
            video_token_id="<|VIDEO_PAD|>",
            vision_start_token_id="<|VISION_START|>",
            vision_end_token_id="<|VISION_END|>",
        ),
        template=_chatml("<|VISION_START|><|IMAGE_PAD|><|VISION_END|>"),
        config=dict(
            text_config=dict(rope_parameters=_QWEN_ROPE),
            vision_config=dict(
                spatial_merge_size=2,
                temporal_patch_size=2,
                num_position_embeddings=64,
                deepstack_visual_indexes=[1],
            ),
        ),
    ),
    # LFM3 language model (convolution and attention layers, RoPE per layer type)
    "lfm3_vl": _qwen_like(),
    # multi-head latent attention: M-RoPE over its rope slice (qk_rope_head_dim);
    # hyper-connections (hc_mult streams); index_topk above any prompt's length,
    # so the sparse indexer keeps every key and padding changes nothing
    "hy_v4_vl": _qwen_like(
        "HYV4VLImageProcessorPil",
        temporal=1,
        mrope=True,
        video=None,
        config=dict(
            text_config=dict(
                q_lora_rank=16,
                kv_lora_rank=16,
                qk_nope_head_dim=8,
                qk_rope_head_dim=8,
                v_head_dim=8,
                index_topk=512,
                index_head_dim=8,
                index_n_heads=2,
                hc_mult=2,
            ),
            vision_config=dict(max_image_size=64),
        ),
    ),
    # multi-head latent attention with a sparse-attention indexer, MoE in the
    # language model and in the vision tower (mlp_layer_types), an audio encoder;
    # every layer one latent-attention type (no sliding-window layers, whose
    # sizes its config takes from a separate per-layer table). index_topk
    # exceeds the test prompts: HF's indexer breaks ties among keys scored 0
    # (after its ReLU) by position, so with fewer keys kept than a prompt has,
    # a left-padded row keeps other keys than the same prompt alone
    "dots3_note": _qwen_like(
        temporal=1,
        video=None,
        specials=(
            *CHATML,
            "<|imgpad|>",
            "<|video_pad|>",
            "<|audio_comp_pad|>",
            "<|img|>",
            "<|endofimg|>",
        ),
        ids=dict(
            image_token_id="<|imgpad|>",
            video_token_id="<|video_pad|>",
            audio_token_id="<|audio_comp_pad|>",
        ),
        template=_chatml("<|img|><|imgpad|><|endofimg|>"),
        parts={"feature_extractor": "Dots3NoteFeatureExtractor"},
        config=dict(
            text_config=dict(
                use_sliding_window=False,
                num_key_value_heads=4,  # latent attention: one per query head
                q_lora_rank=16,
                kv_lora_rank=16,
                qk_rope_head_dim=4,
                qk_nope_head_dim=4,
                v_head_dim=8,
                index_topk=512,
                index_head_dim=8,
                index_n_heads=2,
                shared_experts_intermediate_size=32,
            ),
            vision_config=dict(
                mlp_layer_types=["dense", "dense", "sparse"],
                adapter_in_dim=32,
                adapter_out_dim=32,
            ),
            audio_config=dict(
                adapter_input_size=32, adapter_out_dim=32, downsample_hidden_size=16
            ),
        ),
    ),
    # latent attention without RoPE (NoPE) beside linear (KDA) attention, its
    # indexer pooling keys by index_kpool (index_topk above any prompt's
    # length); hyper-connections (hc_mult streams)
    "glm5_next": Recipe(
        ("Glm5NextImageProcessorPil", _QWEN_PIXELS),
        config=dict(
            text_config=dict(
                num_key_value_heads=4,  # latent attention: one per query head
                q_lora_rank=16,
                kv_lora_rank=16,
                qk_nope_head_dim=8,
                qk_rope_head_dim=0,
                v_head_dim=8,
                index_topk=512,
                index_kpool=4,
                index_head_dim=8,
                index_n_heads=2,
                hc_mult=2,
                linear_head_dim=8,
                linear_num_heads=4,
                layer_types=[
                    "linear_attention",
                    "linear_attention",
                    "indexed_attention",
                ],
                mlp_layer_types=["dense", "dense", "sparse"],
            ),
            vision_config=dict(
                spatial_merge_size=2,
                temporal_patch_size=2,
                projection_intermediate_size=64,
            ),
        ),
        **_GLM,
    ),
    # image processors that exist only with torchvision: the processor's files
    # are written from its config (_written_processor)
    "minimax_m3_vl": Recipe(
        ("MiniMaxM3VLImageProcessor", _QWEN_PIXELS),
        specials=(
            *CHATML,
            "]<]image[>[",
            "]<]video[>[",
            "]<]start of image[>[",
            "]<]end of image[>[",
        ),
        eos="<|im_end|>",
        ids={"image_token_index": "]<]image[>[", "video_token_index": "]<]video[>["},
        template=_chatml("]<]image[>["),
        config=dict(
            projector_hidden_size=32,
            merged_hidden_size=128,
            text_config=dict(
                rotary_dim=4,
                index_head_dim=8,
                index_n_heads=2,
                dense_intermediate_size=64,
                shared_intermediate_size=32,
            ),
            vision_config=dict(temporal_patch_size=2, spatial_merge_size=2),
        ),
        video={"video_processor_type": "MiniMaxM3VLVideoProcessor", **_QWEN_PIXELS},
        torchvision=True,
    ),
    "muse_glimmer": Recipe(
        ("MuseGlimmerImageProcessor", _MUSE_PIXELS),
        specials=_MUSE_SPECIALS,
        eos="<|im_end|>",
        ids={"image_token_id": "<|patch|>", "video_token_id": "<|video|>"},
        template=_chatml("<|patch|>"),
        config=_MUSE_CONFIG,
        video={"video_processor_type": "MuseGlimmerVideoProcessor", **_MUSE_PIXELS},
        torchvision=True,
    ),
    "muse_spark": Recipe(
        ("MuseGlimmerImageProcessor", _MUSE_PIXELS),
        specials=(
            *_MUSE_SPECIALS,
            "<|audio|>",
            "<|soft_audio_start|>",
            "<|soft_audio_end|>",
        ),
        eos="<|im_end|>",
        ids={
            "image_token_id": "<|patch|>",
            "video_token_id": "<|video|>",
            "audio_token_id": "<|audio|>",
        },
        template=_chatml("<|patch|>"),
        config=_merge(
            _MUSE_CONFIG,
            dict(
                text_config=dict(
                    mlp_layer_types=["dense", "sparse", "sparse"],
                    moe_hidden_size=32,
                ),
                audio_config=dict(
                    hidden_sizes=[8, 8, 16, 16],
                    depths=[1, 1, 1, 1],
                    num_hidden_layers=4,
                    out_hidden_size=32,
                ),
            ),
        ),
        video={"video_processor_type": "MuseGlimmerVideoProcessor", **_MUSE_PIXELS},
        parts={"feature_extractor": "MuseSparkFeatureExtractor"},
        torchvision=True,
    ),
    "step3p7": Recipe(
        # a 64 px global view (4 tokens after the tower's two stride-2
        # convolutions) and 32 px local crops (1 token each)
        (
            "Step3p7ImageProcessor",
            dict(
                size={"height": 64, "width": 64},
                patch_size=32,
                max_image_size=128,
                vision_patch_size=8,
            ),
        ),
        specials=(
            *CHATML,
            "<im_patch>",
            "<im_start>",
            "<im_end>",
            "<patch_start>",
            "<patch_end>",
            "<patch_newline>",
        ),
        eos="<|im_end|>",
        ids={"image_token_id": "<im_patch>"},
        template=_chatml("<im_patch>"),
        config=dict(
            vision_config=dict(
                image_size=64, max_position_embeddings=64, mlp_ratio=2.0
            ),
            text_config=dict(
                mlp_layer_types=["dense", "sparse", "sparse"],
                layer_types=["full_attention", "sliding_attention", "full_attention"],
                sliding_window=16,
                num_sliding_attention_heads=4,
                query_pre_attn_scalar=8,
                share_expert_dim=32,
            ),
        ),
        torchvision=True,
    ),
    "unlimited_ocr": Recipe(
        # a 64 px global view and 32 px local tiles: SAM (8 px patches) then
        # two stride-2 convolutions give 2 x 2 and 1 x 1 token grids
        (
            "UnlimitedOcrImageProcessor",
            dict(
                size={"height": 64, "width": 64},
                tile_size=32,
                min_patches=2,
                max_patches=4,
                maximum_pad_value=32,
            ),
        ),
        named={"image_token": "<image>"},
        specials=CHATML,
        bos="<s>",
        eos="<|im_end|>",
        ids={"image_token_id": "<image>"},
        processor=dict(patch_size=8, downsample_ratio=4),
        template=_chatml("<image>"),
        config=dict(
            vision_config=dict(
                sam_config=dict(
                    hidden_size=32,
                    output_channels=16,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    image_size=64,
                    patch_size=8,
                    window_size=4,
                    global_attn_indexes=[1],
                    mlp_dim=64,
                    downsample_channels=[32, 32],
                ),
                encoder_config=dict(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    image_size=16,
                    patch_size=8,
                ),
            ),
            text_config=dict(
                mlp_layer_types=["dense", "sparse", "sparse"],
                layer_types=["reference_sliding_attention"] * 3,
                sliding_window=16,
                n_shared_experts=1,
            ),
        ),
        torchvision=True,
    ),
    "molmo2": Recipe(
        # 32 px crops of 8 px patches pooled 2 x 2: a low-res view and up to 4
        # overlapping high-res crops per image
        (
            "Molmo2ImageProcessor",
            dict(
                _SQUARE,
                patch_size=8,
                pooling_size=[2, 2],
                max_crops=4,
                overlap_margins=[1, 1],
            ),
        ),
        named={"image_token": "<|image|>", "video_token": "<|video|>"},
        specials=(
            *CHATML,
            "<im_patch>",
            "<im_col>",
            "<im_start>",
            "<low_res_im_start>",
            "<frame_start>",
            "<im_end>",
            "<frame_end>",
            "<im_low>",
        ),
        eos="<|im_end|>",
        ids=dict(
            image_start_token_id="<im_start>",
            low_res_image_start_token_id="<low_res_im_start>",
            image_end_token_id="<im_end>",
            image_patch_id="<im_patch>",
            frame_start_token_id="<frame_start>",
            frame_end_token_id="<frame_end>",
        ),
        template=_chatml("<|image|>"),
        config=dict(
            vision_config=dict(image_size=[32, 32], num_position_embeddings=16),
            adapter_config=dict(vision_feature_layer=[-1, -3], text_hidden_size=32),
            text_config=dict(additional_vocab_size=8),
        ),
        video={
            "video_processor_type": "Molmo2VideoProcessor",
            **_SQUARE,
            "patch_size": 8,
            "pooling_size": [2, 2],
        },
        torchvision=True,
    ),
    # a timm tower (timm imports only with torchvision): a Perception Encoder
    # ViT at toy size, built without pretrained weights. One 32 px view per
    # image ("vanilla"): with "thumb+tile" the processor cannot stack a batch
    # of images that give different tile counts
    "perception_lm": Recipe(
        (
            "PerceptionLMImageProcessor",
            dict(_SQUARE, tile_size=32, max_num_tiles=1, vision_input_type="vanilla"),
        ),
        named={"image_token": "<|image|>", "video_token": "<|video|>"},
        specials=CHATML,
        eos="<|im_end|>",
        ids={"image_token_id": "<|image|>", "video_token_id": "<|video|>"},
        processor=dict(patch_size=8, pooling_ratio=2),
        template=_chatml("<|image|>"),
        config=dict(
            projector_pooling_ratio=2,
            vision_config=dict(
                architecture="vit_pe_core_tiny_patch16_384",
                do_pooling=False,
                model_args=dict(
                    img_size=32,
                    patch_size=8,
                    embed_dim=32,
                    depth=3,
                    num_heads=4,
                ),
            ),
        ),
        video={"video_processor_type": "PerceptionLMVideoProcessor", **_SQUARE},
        torchvision=True,
        timm=True,
    ),
    # a timm FastViT tower (stride 64) at toy size: 2 x 2 tokens per 128 px image
    "fast_vlm": Recipe(
        (
            "CLIPImageProcessor",
            {
                "size": {"shortest_edge": 128},
                "crop_size": {"height": 128, "width": 128},
            },
        ),
        specials=("<image>",),
        bos="<s>",
        ids={"image_token_index": "<image>"},
        processor=dict(
            patch_size=64,
            vision_feature_select_strategy="full",
            num_additional_image_tokens=0,
        ),
        processor_class="LlavaProcessor",
        config=dict(
            image_seq_length=4,
            vision_config=dict(
                architecture="fastvit_mci3",
                hidden_size=64,  # the tower's final convolution: 2 x 32
                model_args=dict(
                    inference_mode=True,
                    layers=(1, 1, 1, 1, 1),
                    embed_dims=(8, 16, 16, 32, 32),
                ),
            ),
        ),
        torchvision=True,
        timm=True,
    ),
    # Apertus 1.5: a VQ image tokenizer (convolutions) turns 16 x 16 px into one
    # discrete code, read as an extra token of the language model's vocabulary
    "apertus1p5": Recipe(
        (
            "Apertus1p5ImageProcessor",
            dict(
                size={"min_pixels": 32 * 32, "max_pixels": 64 * 64}, spatial_factor=16
            ),
        ),
        named={
            "image_token": "<|image|>",
            "audio_token": "<|audio|>",
            "boi_token": "<|image_start|>",
            "eoi_token": "<|image_end|>",
            "image_wrapper_token": "<|image_wrapper|>",
            "eol_token": "<|image_eol|>",
            "boa_token": "<|audio_start|>",
            "eoa_token": "<|audio_end|>",
        },
        specials=CHATML,
        eos="<|im_end|>",
        ids={"image_token_id": "<|image|>", "audio_token_id": "<|audio|>"},
        template=_chatml("<|image|>"),
        parts={"feature_extractor": "WavTokenizerFeatureExtractor"},
        config=dict(
            vision_config=dict(
                base_channels=32,  # its group norms take 32 groups
                channel_multiplier=[1, 1, 1, 1, 1],
                num_res_blocks=1,
                latent_channels=32,
                embed_dim=8,
                codebook_size=64,
            ),
            audio_config=dict(codebook_size=64, codebook_dim=32, num_lstm_layers=1),
        ),
        stages=_NO_VISION,
        torchvision=True,
    ),
    # Gemma 4 unified: no vision tower, raw pixel patches embedded into the LM
    "gemma4_unified": Recipe(
        (
            "Gemma4UnifiedImageProcessor",
            dict(patch_size=4, max_soft_tokens=70, pooling_kernel_size=3),
        ),
        processor=dict(image_seq_length=70),
        parts={"feature_extractor": "Gemma4UnifiedAudioFeatureExtractor"},
        config=dict(
            vision_config=dict(
                model_type="gemma4_unified_vision",
                patch_size=4,
                pooling_kernel_size=3,
                mm_embed_dim=32,
                mm_posemb_size=64,
                output_proj_dims=32,
            ),
            # one block: from the second on, HF's own left-padded batch drifts
            # 2e-5 from one prompt alone (rotary positions counted from the
            # padding, SDPA's masked kernel), past the family tests' 1e-5
            text_config=dict(sliding_window=16, num_hidden_layers=1),
        ),
        named={
            "boi_token": "<start_of_image>",
            "image_token": "<image_soft_token>",
            "eoi_token": "<end_of_image>",
            "audio_token": "<audio_soft_token>",
            "boa_token": "<start_of_audio>",
            "eoa_token": "<end_of_audio>",
        },
        specials=("<start_of_turn>", "<end_of_turn>", "model", "<|video|>"),
        bos="<bos>",
        eos="<eos>",
        ids={
            "image_token_id": "<image_soft_token>",
            "boi_token_id": "<start_of_image>",
            "eoi_token_id": "<end_of_image>",
            "video_token_id": "<|video|>",
        },
        template=GEMMA_TEMPLATE.replace("BOI", "'<image_soft_token>'"),
        video={"video_processor_type": "Gemma4UnifiedVideoProcessor"},
        stages=_NO_VISION,
        torchvision=True,
    ),
    "inkling2": _inkling(
        "Inkling2ImageProcessor",
        vision=_INKLING2_VISION,
        stages=("vision", "projector", "language"),
    ),
    "inkling2_loop": _inkling(
        "Inkling2ImageProcessor",
        vision=_INKLING2_VISION,
        text=dict(
            n_layers_per_attn_res_block=1,
            loop_layer_index_start=1,
            loop_layer_index_end=2,
            loop_num_passes=2,
            loop_gate_rank=4,
        ),
        processor_class="Inkling2Processor",
        # its language stage: one entry per block execution (loop blocks
        # run loop_num_passes times), as HF's hidden_states
        stages=("vision", "projector", "language"),
    ),
    "inkling_mm_model": _inkling(
        "InklingImageProcessor",
        vision=dict(patch_size=16, n_layers=3),
        text=dict(n_shared_experts=1, logits_mup_width_multiplier=1.0),
        parts={"feature_extractor": "InklingFeatureExtractor"},
        audio=True,
    ),
    # Kimi K2.5: packed patches (MoonViT), a DeepSeek-V3 language model
    "kimi_k25": Recipe(
        (
            "Kimi_K25ImageProcessor",
            dict(
                patch_size=8,
                merge_size=2,
                size={"max_height": 64, "max_width": 64},
                max_patches=64,
            ),
        ),
        specials=(
            *CHATML,
            "<|media_pad|>",
            "<|kimi_k25_video_placeholder|>",
            "<|media_begin|>",
            "<|media_content|>",
            "<|media_end|>",
        ),
        eos="<|im_end|>",
        ids={
            "image_token_id": "<|media_pad|>",
            "video_token_id": "<|kimi_k25_video_placeholder|>",
            "vision_start_token_id": "<|media_begin|>",
            "vision_end_token_id": "<|media_end|>",
        },
        template=_chatml("<|media_begin|><|media_pad|><|media_end|>"),
        config=dict(
            projection_hidden_size=32,
            vision_config=dict(patch_size=8),
            text_config=dict(
                num_key_value_heads=4,
                kv_lora_rank=16,
                q_lora_rank=16,
                qk_rope_head_dim=8,
                qk_nope_head_dim=8,
                v_head_dim=8,
                n_group=1,
                topk_group=1,
                first_k_dense_replace=1,
            ),
        ),
        video={"video_processor_type": "Kimi_K25VideoProcessor"},
        torchvision=True,
    ),
    # Nemotron 3 Nano Omni: a packed RADIO tower (patches of every image in one
    # sequence, class and register tokens first), a hybrid Mamba-2 / attention
    # language model (NemotronH)
    "nemotron_h_omni": Recipe(
        (
            "NemotronH_Omni_Reasoning_V3ImageProcessor",
            dict(patch_size=8, min_num_patches=16, max_num_patches=64),
        ),
        named={
            "image_token": "<image>",
            "image_start_token": "<img>",
            "image_end_token": "</img>",
            "video_token": "<video>",
            "audio_token": "<so_embedding>",
        },
        specials=(*CHATML, "<so_start>", "<so_end>"),
        eos="<|im_end|>",
        ids={
            "image_token_id": "<image>",
            "video_token_id": "<video>",
            "audio_token_id": "<so_embedding>",
        },
        template=_chatml("<image>"),
        parts={"feature_extractor": "ParakeetFeatureExtractor"},
        config=dict(
            vision_hidden_size=32,
            projector_hidden_size=32,
            vision_config=dict(
                patch_size=8,
                max_img_size=128,
                num_cls_tokens=1,
                num_registers=2,
                video_temporal_patch_size=2,
            ),
            text_config=dict(
                layers_block_type=["mamba", "attention", "moe"],
                ssm_state_size=8,
                mamba_num_heads=4,
                mamba_head_dim=8,
                n_groups=1,
                chunk_size=16,
                moe_shared_expert_intermediate_size=32,
            ),
        ),
        video={"video_processor_type": "NemotronH_Omni_Reasoning_V3VideoProcessor"},
        torchvision=True,
    ),
    # Chameleon: a VQ-GAN (convolutions) turns each 8 x 8 px cell of a 32 px
    # image into a discrete code, read as a word of the language model
    "chameleon": Recipe(
        (
            "ChameleonImageProcessorPil",
            {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
        ),
        named={
            "image_token": "<image>",
            "boi_token": "<racm3:break>",
            "eoi_token": "<eoss>",
            "sep_token": "<reserved08706>",  # ends each prompt
        },
        specials=_chameleon_codes(_VQ_CODES),
        bos="<s>",
        ids={"image_token_id": "<image>"},
        processor=dict(image_seq_length=16),
        config=dict(
            **_TOP_LEVEL_LM,
            vq_config=dict(
                resolution=32,
                base_channels=32,  # its group norms take 32 groups
                channel_multiplier=[1, 1, 1, 1],
                num_res_blocks=1,
                latent_channels=8,
                embed_dim=8,
                num_embeddings=_VQ_CODES,
            ),
        ),
        stages=_NO_VISION,
    ),
    # Emu3: a VQ-VAE turns each 8 x 8 px cell into a discrete code, read as a
    # word; each row of codes ends with an end-of-line word
    "emu3": Recipe(
        (
            "Emu3ImageProcessor",
            dict(min_pixels=32 * 32, max_pixels=64 * 64, spatial_factor=8),
        ),
        named={
            "image_token": "<image>",
            "boi_token": "<|image start|>",
            "eoi_token": "<|image end|>",
            "image_wrapper_token": "<|image token|>",
            "eof_token": "<|extra_201|>",
        },
        specials=("<|extra_200|>", *_emu3_codes(_VQ_CODES)),
        bos="<|extra_203|>",
        eos="<|extra_204|>",
        ids={"image_token_id": "<image>"},
        config=dict(
            vq_config=dict(
                codebook_size=_VQ_CODES,
                base_channels=32,  # its group norms take 32 groups
                channel_multiplier=[1, 1, 1, 1],
                num_res_blocks=1,
                embed_dim=4,
                latent_channels=4,
            ),
        ),
        stages=_NO_VISION,
    ),
    "minicpm_ocr": _minicpm("MiniCPMOcrImageProcessor", torchvision=True),
    "minicpmv4_6": _minicpm("MiniCPMV4_6ImageProcessorPil"),
    "minicpmv4_7": _minicpm(
        "MiniCPMV4_6ImageProcessorPil",
        ids=dict(
            image_start_id="<image>",
            image_end_id="</image>",
            slice_start_id="<slice>",
            slice_end_id="</slice>",
            newline_id="\n",
        ),
    ),
}
# DiffusionGemma: Gemma 4's processor and tower; the auto-regressive encoder's
# text stack is the language stage (its block-diffusion decoder is no stage).
_GEMMA4 = CLAIMED_RECIPES["gemma4"]
CLAIMED_RECIPES["diffusion_gemma"] = replace(
    _GEMMA4,
    config=dict(
        _GEMMA4.config,
        text_config=dict(
            _GEMMA4.config["text_config"],
            num_experts=4,
            top_k_experts=2,
            moe_intermediate_size=32,
        ),
    ),
    classifiers=False,
)


def _tokenizer_for(recipe):
    from transformers import PreTrainedTokenizerFast

    tokens = list(dict.fromkeys([*recipe.named.values(), *recipe.specials]))
    base = _tokenizer(
        tokens,
        bos=recipe.bos,
        eos=recipe.eos,
        pad=recipe.pad,
        padding_side="left",
    )
    if not recipe.named:
        return base
    return PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        bos_token=base.bos_token,
        eos_token=base.eos_token,
        pad_token=base.pad_token,
        unk_token=base.unk_token,
        padding_side=base.padding_side,
        extra_special_tokens=dict(recipe.named),
    )


def _processor_for(model_type, recipe, tokenizer):
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    from ..models import MissingVideoProcessor, without_video_processor

    name, kwargs = recipe.image_processor
    image_processor = getattr(transformers, name)(**kwargs)
    cls = getattr(
        transformers, recipe.processor_class or PROCESSOR_MAPPING_NAMES[model_type]
    )
    parameters = inspect.signature(cls.__init__).parameters
    extra = dict(recipe.processor)
    extra.update(
        {key: getattr(transformers, name)() for key, name in recipe.parts.items()}
    )
    if "video_processor" in parameters:
        cls = without_video_processor(cls)
        extra["video_processor"] = MissingVideoProcessor()
    if recipe.template is not None:
        extra["chat_template"] = recipe.template
    return cls(image_processor=image_processor, tokenizer=tokenizer, **extra)


def _written_processor(path, model_type, recipe, tokenizer):
    """The processor's files written from its config, for an image processor
    that exists only with torchvision (so the build needs none)."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    from ._families_tvonly import _write_processor, _Written

    name, kwargs = recipe.image_processor
    config = {
        "processor_class": recipe.processor_class
        or PROCESSOR_MAPPING_NAMES[model_type],
        **recipe.processor,
        "image_processor": {"image_processor_type": name, **kwargs},
        **{key: {f"{key}_type": part} for key, part in recipe.parts.items()},
    }
    for key, part in recipe.parts.items():  # other sub-processors, at defaults
        saved = getattr(transformers, part)().to_dict()
        saved.pop("processor_class", None)
        config[key] = saved
    _write_processor(path, tokenizer, config, recipe.template)
    return _Written()


def _shrunk(sub):
    """The sub-config's type and the toy sizes of the keys it has; its own
    sub-configs (DeepSeek-OCR-2's SAM and encoder) shrunk the same way."""
    out = {"model_type": sub.model_type}
    for key, value in SMALL.items():
        if key in sub.to_dict():
            out[key] = value
    for key in getattr(type(sub), "sub_configs", {}):
        nested = getattr(sub, key, None)
        if hasattr(nested, "to_dict"):
            out[key] = _shrunk(nested)
    return out


def _deep_merge(base, overrides):
    """Copy ``base`` with ``overrides``; dict values merge key by key, at any depth."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _config_kwargs(config_cls, recipe, tokenizer, overrides):
    from transformers import CONFIG_MAPPING

    default = config_cls()
    kwargs = {}
    for key in getattr(config_cls, "sub_configs", {}):
        sub = getattr(default, key, None)
        wanted = recipe.config.get(key, {}).get("model_type")
        if wanted is not None and getattr(sub, "model_type", None) != wanted:
            sub = CONFIG_MAPPING[wanted]()  # another tower than the default's
        if sub is not None and hasattr(sub, "to_dict"):
            kwargs[key] = _shrunk(sub)
    text = kwargs.get("text_config")
    specials = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if text is not None:
        text.update(specials)
        if "vocab_size_per_layer_input" in default.text_config.to_dict():
            text["vocab_size_per_layer_input"] = len(tokenizer)
        if "unpadded_vocab_size" in default.text_config.to_dict():
            text["unpadded_vocab_size"] = len(tokenizer)  # the LM head's size
    else:
        kwargs.update(specials)
    ids = tokenizer.convert_tokens_to_ids
    kwargs.update({key: ids(token) for key, token in recipe.ids.items()})
    if "vocab_size" in config_cls().to_dict():
        kwargs["vocab_size"] = len(tokenizer)
    out = _rope_per_layer_type(
        config_cls, _deep_merge(_deep_merge(kwargs, recipe.config), overrides)
    )
    if "image_token_offset" in default.to_dict():
        out = _code_offsets(out, len(tokenizer))
    if "vocabulary_map" in default.to_dict():  # Chameleon, Emu3
        out["vocabulary_map"] = tokenizer.get_vocab()  # image codes -> words
    return out


def _code_offsets(kwargs, n_words):
    """Discrete image (and audio) codes as token ids after the tokenizer's
    words (Apertus 1.5): the vocabulary grows by each codebook."""
    image = kwargs["vision_config"]["codebook_size"]
    audio = kwargs.get("audio_config", {}).get("codebook_size", 0)
    text = dict(kwargs["text_config"], vocab_size=n_words + image + audio)
    return dict(
        kwargs,
        text_config=text,
        image_token_offset=n_words,
        audio_token_offset=n_words + image,
    )


def _rope_per_layer_type(config_cls, kwargs):
    """The text config's flat RoPE parameters given once per layer type, where
    its language model reads them per layer type (its default config keys them
    by layer type, or holds none beside its ``layer_types``)."""
    text = kwargs.get("text_config") or {}
    rope = text.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_type" not in rope:
        return kwargs
    default = config_cls().get_text_config()
    types = getattr(default, "layer_types", None)
    keyed = getattr(default, "rope_parameters", None)
    if not types or not isinstance(keyed, dict) or not set(keyed) <= set(types):
        return kwargs
    others = {
        k: v for k, v in text.items() if k not in ("rope_parameters", "model_type")
    }
    tiny = type(default)(**others).layer_types  # those of the tiny depth
    text["rope_parameters"] = {kind: dict(rope) for kind in dict.fromkeys(tiny)}
    return kwargs


def make_tiny_vlm(path, model_type, *, seed=0, **overrides):
    """Build the tiny checkpoint of an image-text-to-text family from its recipe.

    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    model_type : str
        A key of :data:`CLAIMED_RECIPES`.
    seed : int, default=0
        Seed of the random init: the same seed gives the same weights.
    **overrides
        Keyword arguments of the family's config class, replacing the tiny
        defaults; sub-config dicts merge key by key.

    Returns
    -------
    path : Path
        The directory, holding config, weights, processor and tokenizer.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> from skvlm.testing import make_tiny_vlm
    >>> path = make_tiny_vlm(tempfile.mkdtemp(), "deepseek_vl")
    >>> AutoConfig.from_pretrained(path).text_config.hidden_size
    32
    """
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    if model_type not in CLAIMED_RECIPES:
        raise ValueError(
            f"model_type={model_type!r} has no tiny recipe; choose one of "
            f"{sorted(CLAIMED_RECIPES)}."
        )
    recipe = CLAIMED_RECIPES[model_type]
    if recipe.timm:
        from transformers.utils import is_timm_available

        if not is_timm_available():
            raise ImportError(
                f"{model_type}: its vision tower is a timm model, and timm is not "
                "importable here (it needs torchvision): pip install torchvision timm."
            )
    tokenizer = _tokenizer_for(recipe)
    if recipe.torchvision:
        processor = _written_processor(path, model_type, recipe, tokenizer)
    else:
        processor = _processor_for(model_type, recipe, tokenizer)
    config_cls = CONFIG_MAPPING[model_type]
    config = config_cls(**_config_kwargs(config_cls, recipe, tokenizer, overrides))
    model_cls = getattr(
        transformers, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]
    )
    path = _save(path, model_cls, config, processor, seed)
    if recipe.video is not None:
        from ._generative import _add_video_config

        _add_video_config(path, recipe.video)
    return path


@functools.cache
def builder(model_type):
    """``build(path) -> path`` of ``model_type``'s tiny checkpoint (one object per type).

    Examples
    --------
    >>> from skvlm.testing._families_claimed import builder
    >>> builder("aria") is builder("aria")
    True
    """
    return functools.partial(make_tiny_vlm, model_type=model_type)


# -- vision encoders the vision adapters claim ---------------------------------------
#: model type -> (PIL image processor, config overrides) of a tiny vision encoder:
#: the type's own config class at :data:`SMALL` sizes, saved with ``AutoModel``.
CLAIMED_ENCODERS = {
    "beit": ("BeitImageProcessorPil", {}),
    "chinese_clip_vision_model": ("ChineseCLIPImageProcessorPil", {}),
    "clip_vision_model": ("CLIPImageProcessorPil", {}),
    "data2vec-vision": ("BeitImageProcessorPil", {"use_mean_pooling": True}),
    "deit": ("DeiTImageProcessorPil", {}),
    "dinov2_with_registers": ("BitImageProcessorPil", {"num_register_tokens": 2}),
    "siglip_vision_model": ("SiglipImageProcessorPil", {}),
    # not here: siglip2_vision_model, whose NaFlex processor gives patch
    # sequences with spatial shapes (skvlm.testing.make_tiny_encoder builds it)
}
_CROP = {"height": 32, "width": 32}


def make_tiny_vision_encoder(model_type):
    """``(model, image processor)`` of a :data:`CLAIMED_ENCODERS` type.

    Examples
    --------
    >>> from skvlm.testing._families_claimed import make_tiny_vision_encoder
    >>> model, processor = make_tiny_vision_encoder("deit")
    >>> type(model).__name__, model.config.hidden_size
    ('DeiTModel', 32)
    """
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name, overrides = CLAIMED_ENCODERS[model_type]
    config_cls = CONFIG_MAPPING[model_type]
    config = config_cls(**{**_shrunk(config_cls()), **overrides})
    model = getattr(transformers, MODEL_MAPPING_NAMES[model_type])(config)
    kwargs = {"size": dict(_CROP)}
    processor_cls = getattr(transformers, name)
    if "crop_size" in processor_cls().to_dict():
        kwargs["crop_size"] = dict(_CROP)
    return model.eval(), processor_cls(**kwargs)


#: The claimed image-text-to-text types with no tiny recipe yet, and why: they
#: stay "claimed" in ``support_matrix()`` (untested). Families other work owns
#: (mistral3, llava with Pixtral, mllama, llama4, phi4_multimodal, florence2)
#: are not listed.
NOT_BUILT = {}
