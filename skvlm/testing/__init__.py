"""Tiny offline models of every supported family, for tests and for users' tests.

Each ``make_tiny_*`` builds a random-init model of the real architecture with its
real processor, saves both with ``save_pretrained`` and returns the directory, so
code under test goes through the same ``from_pretrained`` path as a real checkpoint.
Nothing is downloaded.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._callbacks": ["KeyLog"],
        "._encoders": ["TESTED_ENCODER_TYPES", "make_tiny_encoder"],
        "._encoders_backbones1": ["BACKBONE_BUILDERS", "make_tiny_backbone"],
        "._families_encdec": [
            "make_tiny_blip2_t5",
            "make_tiny_florence2",
            "make_tiny_instructblip_t5",
            "make_tiny_t5gemma2",
        ],
        "._families": [
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
        ],
        "._families_claimed": ["CLAIMED_RECIPES", "Recipe", "make_tiny_vlm"],
        "._families_pixtral": [
            "make_tiny_lighton_ocr",
            "make_tiny_llava_pixtral",
            "make_tiny_mistral3",
            "make_tiny_mistral_large4",
        ],
        "._families_kosmos": ["make_tiny_kosmos2", "make_tiny_kosmos2_5"],
        "._families_blip1": ["make_tiny_blip", "make_tiny_instructblipvideo"],
        "._families_itm": [
            "make_tiny_blip2_retrieval",
            "make_tiny_blip_retrieval",
        ],
        "._families_encdec2": [
            "make_tiny_pix2struct",
            "make_tiny_vision_encoder_decoder",
        ],
        "._families_prefix": ["make_tiny_fuyu", "make_tiny_git"],
        "._families_mllama": ["make_tiny_mllama"],
        "._families_idefics1": ["make_tiny_idefics"],
        "._families_tvonly": ["make_tiny_llama4", "make_tiny_phi4_multimodal"],
        "._families_tvworld2": ["make_tiny_gemma3n"],
        "._families_towers1": ["make_tiny_shieldgemma2"],
        "._families_udop": ["make_tiny_pp_formulanet", "make_tiny_udop"],
        "._generative": [
            "GENERATIVE_FAMILIES",
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
        ],
        "._images": ["random_images"],
        "._registry": ["RETRIEVAL_MODELS", "TINY_MODELS", "TinyModel"],
        "._tokenizer": ["make_tokenizer"],
        "._vision": [
            "make_tiny_clip",
            "make_tiny_siglip",
            "make_tiny_siglip2",
            "make_tiny_vit",
        ],
    },
)
