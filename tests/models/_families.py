"""The rows of the family matrix: what ``test_family_matrix.py`` runs per family.

Each :class:`Family` names the tiny builder, the HF reference (``_references``),
the test images and prompts (sizes chosen so that batches pad), and the poolings
each stage offers. Adding a family to skvlm means adding a row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import pytest
from transformers.utils import is_torchvision_available

from skvlm.testing import (
    make_tiny_aya_vision,
    make_tiny_blip,
    make_tiny_blip2,
    make_tiny_blip2_t5,
    make_tiny_clip,
    make_tiny_florence2,
    make_tiny_fuyu,
    make_tiny_gemma3,
    make_tiny_git,
    make_tiny_glm4v,
    make_tiny_idefics,
    make_tiny_idefics2,
    make_tiny_idefics3,
    make_tiny_instructblip,
    make_tiny_instructblip_t5,
    make_tiny_instructblipvideo,
    make_tiny_internvl,
    make_tiny_janus,
    make_tiny_kosmos2,
    make_tiny_kosmos2_5,
    make_tiny_lighton_ocr,
    make_tiny_llama4,
    make_tiny_llava,
    make_tiny_llava_next,
    make_tiny_llava_onevision,
    make_tiny_llava_pixtral,
    make_tiny_mistral3,
    make_tiny_mistral_large4,
    make_tiny_mllama,
    make_tiny_paligemma,
    make_tiny_phi4_multimodal,
    make_tiny_pix2struct,
    make_tiny_pp_formulanet,
    make_tiny_qwen2_5_vl,
    make_tiny_qwen2_vl,
    make_tiny_qwen3_5,
    make_tiny_qwen3_vl,
    make_tiny_qwen3_vl_moe,
    make_tiny_shieldgemma2,
    make_tiny_siglip,
    make_tiny_siglip2,
    make_tiny_smolvlm,
    make_tiny_t5gemma2,
    make_tiny_udop,
    make_tiny_vipllava,
    make_tiny_vision_encoder_decoder,
    make_tiny_vit,
    random_images,
)

from ._families_claimed import CLAIMED_ROWS
from ._references import (
    CHAT_PROMPTS,
    PROMPTS,
    blip2_reference,
    blip2_t5_reference,
    florence2_reference,
    generic_reference,
    idefics_reference,
    instructblip_reference,
    instructblip_t5_reference,
    llava_next_reference,
    llava_reference,
    paligemma_reference,
    pixtral_reference,
    qwen_reference,
    t5gemma2_reference,
    vision_tower_reference,
)
from ._references_blip1 import blip_reference, instructblipvideo_reference
from ._references_encdec2 import (
    pix2struct_reference,
    vision_encoder_decoder_reference,
)
from ._references_idefics1 import idefics1_reference
from ._references_kosmos import kosmos2_5_reference, kosmos2_reference
from ._references_mllama import mllama_reference
from ._references_prefix import fuyu_reference, git_reference
from ._references_towers1 import shieldgemma2_reference
from ._references_tvonly import llama4_reference, phi4_multimodal_reference
from ._references_udop import pp_formulanet_reference, udop_reference

LANGUAGE = ("last", "mean", "max", "image_mean", "text_mean", 0, 3, -2)


# -- the families -------------------------------------------------------------------------
def _first(*path):
    """An accessor ``model -> module`` following attribute names."""

    def get(model):
        for name in path:
            model = getattr(model, name)
        return model

    return get


@dataclass(frozen=True)
class Family:
    """One row of the matrix.

    Attributes
    ----------
    name : str
        The test id.
    family : str
        What ``VLMEmbeddingTransformer.family_`` reads for it.
    build : callable
        ``build(directory) -> path`` of the tiny checkpoint.
    reference : callable
        ``reference(path, images, prompts) -> list[Example]``.
    images : callable
        ``images() -> list`` of the test images (sizes chosen to pad batches).
    prompts : list of str or None
        One per image for the language stage; None when there is none.
    batch_size : int
        The padded batches skvlm runs (references run unpadded or unpad).
    poolings : dict
        ``stage -> poolings`` tested there (``pooler`` at the last entry only).
    blocks : dict
        ``stage -> accessor(model) -> the stage's blocks`` (the early-exit test).
    language_model : callable or None
        ``model -> the language model``, which vision and projector never run.
    marks : tuple
        pytest marks of every case of the family.
    model_type : str or None
        The config's model type, when it is not ``name``.
    """

    name: str
    family: str
    build: Callable
    reference: Callable
    images: Callable
    prompts: list | None
    batch_size: int
    poolings: dict
    blocks: dict
    language_model: Callable | None = None
    marks: tuple = ()
    model_type: str | None = None

    @property
    def type(self):
        """The config's ``model_type`` (the support matrix's row)."""
        return self.model_type or self.name


def _llava_like(name, family, build, reference, **extra):
    poolings = {
        "vision": ("cls", "mean", "max", 0, 2, -1, "pooler"),
        "projector": ("mean", "max"),
        "language": LANGUAGE,
    }
    poolings.update(extra.pop("poolings", {}))
    return Family(
        name=name,
        family=family,
        build=build,
        reference=reference,
        images=lambda: random_images(3, seed=0),  # LLaVA-NeXT: different view counts
        prompts=PROMPTS,
        batch_size=3,
        poolings=poolings,
        blocks={
            "vision": _first("model", "vision_tower", "encoder", "layers"),
            "language": _first("model", "language_model", "layers"),
        },
        language_model=_first("model", "language_model"),
        **extra,
    )


def _vision_tower(name, build, *, cls, projector, blocks):
    return Family(
        name=name,
        family=name if name not in ("vit", "dinov2") else "vision-encoder",
        build=build,
        reference=vision_tower_reference,
        images=lambda: random_images(5, seed=1),
        prompts=None,
        batch_size=2,
        poolings={
            "vision": (("cls",) if cls else ()) + ("mean", "max", 0, -1, 2, "pooler"),
            **({"projector": ("pooler",)} if projector else {}),
        },
        blocks={"vision": blocks},
    )


def _qwen(name, build):
    return Family(
        name=name,
        family=name,
        build=build,
        reference=qwen_reference,
        # grids that differ, and exceed one 2x2-merge-block window (Qwen2.5-VL)
        images=lambda: random_images(
            4, seed=3, sizes=((48, 48), (64, 32), (40, 56), (32, 32))
        ),
        prompts=CHAT_PROMPTS,
        batch_size=4,
        poolings={
            "vision": ("mean", "max", 0, 3, 4, -1),
            "projector": ("mean", "max", 0, -1),
            "language": LANGUAGE,
        },
        blocks={
            "vision": _first("model", "visual", "blocks"),
            "language": _first("model", "language_model", "layers"),
        },
        language_model=_first("model", "language_model"),
    )


def _idefics(name, build):
    return Family(
        name=name,
        family=name,
        build=build,
        reference=idefics_reference,
        images=lambda: random_images(4, seed=5),  # 5, 3, 3 and 5 tiles
        prompts=CHAT_PROMPTS,
        batch_size=4,
        poolings={
            "vision": ("mean", "max", 0, 20, -1),
            "projector": ("mean", "max", 0, 5, -1),
            "language": LANGUAGE,
        },
        blocks={
            "vision": _first("model", "vision_model", "encoder", "layers"),
            "language": _first("model", "text_model", "layers"),
        },
        language_model=_first("model", "text_model"),
    )


def _blip(name, family, build, reference, language_blocks):
    return Family(
        model_type=family,
        name=name,
        family=family,
        build=build,
        reference=reference,
        images=lambda: random_images(3, seed=0),
        prompts=PROMPTS,
        batch_size=3,
        poolings={
            "vision": ("cls", "mean", "max", 0, 2, -1, "pooler"),
            "projector": ("mean", "max"),
            "language": LANGUAGE,
        },
        blocks={
            "vision": _first("vision_model", "encoder", "layers"),
            "language": language_blocks,
        },
        language_model=_first("language_model"),
    )


FAMILIES = [
    _vision_tower(
        "clip",
        make_tiny_clip,
        cls=True,
        projector=True,
        blocks=_first("vision_model", "encoder", "layers"),
    ),
    _vision_tower(
        "siglip",
        make_tiny_siglip,
        cls=False,
        projector=True,
        blocks=_first("vision_model", "encoder", "layers"),
    ),
    _vision_tower(
        "siglip2",
        make_tiny_siglip2,
        cls=False,
        projector=True,
        blocks=_first("vision_model", "encoder", "layers"),
    ),
    _vision_tower(
        "vit", make_tiny_vit, cls=True, projector=False, blocks=_first("layers")
    ),
    _vision_tower(
        "dinov2",
        lambda path: make_tiny_vit(path, kind="dinov2"),
        cls=True,
        projector=False,
        blocks=_first("encoder", "layer"),
    ),
    _llava_like("llava", "llava", make_tiny_llava, llava_reference),
    _llava_like("llava_next", "llava_next", make_tiny_llava_next, llava_next_reference),
    _llava_like(
        "vipllava",
        "vipllava",
        make_tiny_vipllava,
        llava_reference,
        poolings={"vision": ("cls", "mean", "max", 0, 2, -1)},
    ),
    _blip(
        "blip2",
        "blip-2",
        make_tiny_blip2,
        blip2_reference,
        _first("language_model", "model", "decoder", "layers"),
    ),
    _blip(
        "blip2_t5",
        "blip-2",
        make_tiny_blip2_t5,
        blip2_t5_reference,
        _first("language_model", "encoder", "block"),
    ),
    _blip(
        "instructblip",
        "instructblip",
        make_tiny_instructblip,
        instructblip_reference,
        _first("language_model", "model", "layers"),
    ),
    _blip(
        "instructblip_t5",
        "instructblip",
        make_tiny_instructblip_t5,
        instructblip_t5_reference,
        _first("language_model", "encoder", "block"),
    ),
    Family(
        name="paligemma",
        family="paligemma",
        build=make_tiny_paligemma,
        reference=paligemma_reference,
        images=lambda: random_images(3, seed=0),
        prompts=PROMPTS,
        batch_size=3,
        poolings={
            "vision": ("mean", "max", 0, 2, -1),
            "projector": ("mean", "max"),
            "language": LANGUAGE,
        },
        blocks={
            "vision": _first("model", "vision_tower", "encoder", "layers"),
            "language": _first("model", "language_model", "layers"),
        },
        language_model=_first("model", "language_model"),
        # PaliGemma's processor builds training labels with a numpy call that warns.
        marks=(
            pytest.mark.filterwarnings(
                "ignore:__array__ implementation:DeprecationWarning"
            ),
        ),
    ),
    _qwen("qwen2_vl", make_tiny_qwen2_vl),
    _qwen("qwen2_5_vl", make_tiny_qwen2_5_vl),
    _qwen("qwen3_vl", make_tiny_qwen3_vl),
    _idefics("idefics3", make_tiny_idefics3),
    _idefics("smolvlm", make_tiny_smolvlm),
]

# -- the families of the traits-driven adapters: a lean matrix ----------------------
# (test_vlm_families.py: every stage at layers 0, 1, -1, all poolings in one pass,
# batch 4 padded and batch 1, against HF one example at a time)
VISION = ("mean", "max", 0, -1)
PROJECTOR = ("mean", "max", 0, -1)


def _new(
    name,
    build,
    *,
    tower,
    nested=False,
    has_cls=False,
    placeholder="<image>",
    stages=("vision", "projector", "language"),
    reference=None,
    images=None,
    marks=(),
    vision=VISION,
):
    poolings = {
        "vision": (("cls",) if has_cls else ()) + vision,
        "projector": PROJECTOR,
        "language": LANGUAGE,
    }
    return Family(
        name=name,
        family=name,
        build=build,
        reference=reference
        or partial(
            generic_reference,
            tower=tower,
            nested=nested,
            has_cls=has_cls,
            placeholder=placeholder,
            projector="projector" in stages,
        ),
        images=images or (lambda: random_images(4, seed=5)),
        marks=marks,
        prompts=CHAT_PROMPTS,
        batch_size=4,
        poolings={stage: poolings[stage] for stage in stages},
        blocks={},
    )


# GLM-4V's and PaliGemma's processors call numpy in a way numpy 2 warns about.
NUMPY_COPY_WARNING = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)
QWEN_IMAGES = _qwen("qwen3_vl", None).images
NEW_FAMILIES = [
    _new("aya_vision", make_tiny_aya_vision, tower=_first("model", "vision_tower")),
    _new(
        "gemma3",
        make_tiny_gemma3,
        tower=_first("model", "vision_tower"),
        nested=True,
    ),
    _new(
        "glm4v",
        make_tiny_glm4v,
        tower=None,
        reference=partial(qwen_reference, tokenizer_specials=True),
        images=QWEN_IMAGES,
        marks=(NUMPY_COPY_WARNING,),
    ),
    _new(
        "idefics2",
        make_tiny_idefics2,
        tower=None,
        reference=idefics_reference,
    ),
    _new(
        "internvl",
        make_tiny_internvl,
        tower=_first("model", "vision_tower"),
        has_cls=True,
    ),
    _new(
        "janus",
        make_tiny_janus,
        tower=_first("model", "vision_model"),
        placeholder="<image_placeholder>",
    ),
    _new(
        "llava_onevision",
        make_tiny_llava_onevision,
        tower=_first("model", "vision_tower"),
        images=lambda: random_images(4, seed=0),
    ),
    _new(
        "mllama",
        make_tiny_mllama,
        tower=None,
        has_cls=True,
        reference=mllama_reference,
        # 1, 2, 2 and 1 tiles of 2 (aspect ratios 1:1, 2:1, 1:2, 1:1)
        images=lambda: random_images(
            4, seed=5, sizes=((32, 32), (32, 64), (64, 32), (40, 40))
        ),
    ),
    _new(
        "qwen3_5",
        make_tiny_qwen3_5,
        tower=None,
        reference=qwen_reference,
        images=QWEN_IMAGES,
    ),
    _new(
        "qwen3_vl_moe",
        make_tiny_qwen3_vl_moe,
        tower=None,
        reference=qwen_reference,
        images=QWEN_IMAGES,
    ),
]


# Pixtral towers: images at their own sizes (patch grids of 6x6, 8x4, 5x7 or,
# merged 2x2 in Mistral 3 and LightOnOCR, 6x8, and 4x4), packed into one
# sequence per batch.
PIXTRAL_IMAGES = QWEN_IMAGES
NEW_FAMILIES += [
    _new(
        "lighton_ocr",
        make_tiny_lighton_ocr,
        tower=None,
        reference=pixtral_reference,
        images=PIXTRAL_IMAGES,
    ),
    _new(
        "mistral3",
        make_tiny_mistral3,
        tower=None,
        reference=pixtral_reference,
        images=PIXTRAL_IMAGES,
    ),
    _new(
        "mistral_large4",
        make_tiny_mistral_large4,
        tower=None,
        reference=pixtral_reference,
        images=PIXTRAL_IMAGES,
    ),
    replace(
        _new(
            "llava_pixtral",
            make_tiny_llava_pixtral,
            tower=None,
            reference=pixtral_reference,
            images=PIXTRAL_IMAGES,
        ),
        family="llava",
        model_type="llava",
    ),
]
# Florence-2: a hierarchical (DaViT) tower, no CLS and no token positions there
NEW_FAMILIES.append(
    replace(
        _new(
            "florence2", make_tiny_florence2, tower=None, reference=florence2_reference
        ),
        poolings={
            "vision": ("mean", "max"),
            "projector": PROJECTOR,
            "language": LANGUAGE,
        },
    )
)
# T5Gemma 2: the language stage is the Gemma encoder over image and prompt
NEW_FAMILIES.append(
    _new("t5gemma2", make_tiny_t5gemma2, tower=None, reference=t5gemma2_reference)
)

# Kosmos-2: no image token id, the image's positions come from
# image_embeds_position_mask; a CLIP-like tower with a class token
NEW_FAMILIES.append(
    _new(
        "kosmos-2",
        make_tiny_kosmos2,
        tower=None,
        has_cls=True,
        reference=kosmos2_reference,
    )
)
# Kosmos-2.5: the same, with a Pix2Struct-like tower over flattened patches
# (no class token; zero rows pad each image to max_patches)
NEW_FAMILIES.append(
    _new(
        "kosmos-2.5",
        make_tiny_kosmos2_5,
        tower=None,
        reference=kosmos2_5_reference,
        # 16 patches of 8 x 8 at most: 16, 12, 12 and 12 real patches (the
        # last three padded with zero rows)
        images=lambda: random_images(
            4, seed=5, sizes=((32, 32), (24, 64), (64, 24), (40, 56))
        ),
    )
)
# UDOP: one encoder over the prompt's words and the image's patches; its
# vision stage is that encoder at the patch positions, no projector
NEW_FAMILIES.append(
    _new(
        "udop",
        make_tiny_udop,
        tower=None,
        stages=("vision", "language"),
        reference=udop_reference,
    )
)

# ShieldGemma 2: Gemma 3 inside an image classifier; HF's own processor builds
# each prompt as a policy check (the prompt passed as its one custom policy)
NEW_FAMILIES.append(
    _new(
        "shieldgemma2",
        make_tiny_shieldgemma2,
        tower=None,
        nested=True,
        reference=shieldgemma2_reference,
    )
)

# IDEFICS (v1): the image enters through gated cross-attention layers; a
# CLIP-like tower with a class token, a perceiver resampler
NEW_FAMILIES.append(
    _new(
        "idefics",
        make_tiny_idefics,
        tower=None,
        has_cls=True,
        reference=idefics1_reference,
    )
)
# Encoder-decoders whose encoder reads the image alone: the prompt is the
# decoder's prefix (its start token, then the prompt), no position holds the
# image (no image_mean); "a cat" is 3 tokens with the start token
PREFIX_LANGUAGE = ("last", "mean", "max", "text_mean", 0, 2, -2)
NEW_FAMILIES += [
    replace(
        _new(
            "pix2struct",
            make_tiny_pix2struct,
            tower=None,
            stages=("vision", "language"),
            reference=pix2struct_reference,
            # 16 patches of 8 x 8 at most: 16, 12, 12 and 12 real patches
            images=lambda: random_images(
                4, seed=5, sizes=((32, 32), (24, 64), (64, 24), (40, 56))
            ),
        ),
        poolings={"vision": VISION, "language": PREFIX_LANGUAGE},
    ),
    replace(
        _new(
            "vision-encoder-decoder",
            make_tiny_vision_encoder_decoder,
            tower=None,
            has_cls=True,
            reference=vision_encoder_decoder_reference,
        ),
        poolings={
            "vision": ("cls",) + VISION,
            "projector": PROJECTOR,
            "language": PREFIX_LANGUAGE,
        },
    ),
]

# BLIP (v1): the text decoder cross-attends to the image (no image positions,
# so no image_mean) and there is no projector; its rows hold the prompt alone
NEW_FAMILIES.append(
    replace(
        _new("blip", make_tiny_blip, tower=None, reference=blip_reference),
        poolings={
            "vision": ("cls", *VISION),
            # "[DEC] a cat": 3 tokens, the shortest prompt
            "language": ("last", "mean", "max", "text_mean", 0, 2, -2),
        },
    )
)

# Families whose image processor transformers ships only with torchvision: their
# cases skip here and run in the torchvision world (test_torchvision_families.py).
NEEDS_TORCHVISION = pytest.mark.skipif(
    not is_torchvision_available(),
    reason="needs torchvision: runs in tests/models/test_torchvision_families.py",
)
TORCHVISION_FAMILIES = [
    _new(
        "llama4",
        make_tiny_llama4,
        tower=None,
        reference=llama4_reference,
        images=lambda: random_images(4, seed=5),  # 5, 3, 3 and 5 tiles
        marks=(NEEDS_TORCHVISION,),
    ),
    _new(
        "phi4_multimodal",
        make_tiny_phi4_multimodal,
        tower=None,
        reference=phi4_multimodal_reference,
        # 2, 1, 1 and 1 crops plus a global view each; the first and third
        # with padded patches, the second and fourth without
        images=lambda: random_images(
            4, seed=5, sizes=((40, 100), (64, 64), (30, 64), (50, 50))
        ),
        marks=(NEEDS_TORCHVISION,),
    ),
    # PP-FormulaNet: the encoder reads the image alone; the prompt is the
    # decoder's, which cross-attends to the projector (no image positions)
    replace(
        _new(
            "pp_formulanet",
            make_tiny_pp_formulanet,
            tower=None,
            reference=pp_formulanet_reference,
            marks=(NEEDS_TORCHVISION,),
        ),
        poolings={
            "vision": VISION,
            "projector": PROJECTOR,
            "language": tuple(p for p in LANGUAGE if p != "image_mean"),
        },
    ),
]
# InstructBLIP-Video: its video processor needs torchvision; each image a
# still video of 4 frames
TORCHVISION_FAMILIES.append(
    _new(
        "instructblipvideo",
        make_tiny_instructblipvideo,
        tower=None,
        has_cls=True,
        reference=instructblipvideo_reference,
        marks=(NEEDS_TORCHVISION,),
    )
)
NEW_FAMILIES += TORCHVISION_FAMILIES


def _claimed(name, *, build, tower, torchvision, images=None, **kwargs):
    marks = (NUMPY_COPY_WARNING,) + ((NEEDS_TORCHVISION,) if torchvision else ())
    return _new(
        name,
        build,
        tower=tower and _first(*tower.split(".")),
        images=QWEN_IMAGES if images == "qwen" else None,
        marks=marks,
        **kwargs,
    )


# The families built from recipes (_families_claimed), torchvision-only ones too
_CLAIMED = [_claimed(name, **row) for name, row in CLAIMED_ROWS.items()]
TORCHVISION_FAMILIES += [f for f in _CLAIMED if NEEDS_TORCHVISION in f.marks]
NEW_FAMILIES += _CLAIMED
# GIT: the decoder puts the image's tokens (CLS and patches) before the text's,
# none of them in input_ids
NEW_FAMILIES.append(
    _new("git", make_tiny_git, tower=None, has_cls=True, reference=git_reference)
)
# Fuyu: no tower (vision refused); its processor puts one |SPEAKER| per patch
# before the prompt; images at their own aspect ratio: 16, 18, 8 and 24
# patches of 8 x 8 px. Its processor works with torchvision only (5.25).
_FUYU = _new(
    "fuyu",
    make_tiny_fuyu,
    tower=None,
    reference=fuyu_reference,
    stages=("projector", "language"),
    images=lambda: random_images(
        4, seed=5, sizes=((32, 32), (24, 64), (64, 24), (40, 56))
    ),
    marks=(NEEDS_TORCHVISION,),
)
NEW_FAMILIES.append(_FUYU)
TORCHVISION_FAMILIES.append(_FUYU)

BY_NAME = {family.name: family for family in FAMILIES + NEW_FAMILIES}
