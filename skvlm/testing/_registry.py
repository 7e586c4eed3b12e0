"""The tiny checkpoint of each model type, and what skvlm's family tests run on it.

:data:`TINY_MODELS` is where :func:`skvlm.models.support_matrix` learns what is
tested: a model type with an entry here is built by the family matrix tests
(``tests/models``), every stage listed is compared there with HF's own outputs
at batch sizes 1 and 4, and its classifiers (generative and tuner for a VLM,
zero-shot for a CLIP-style model) run one step each. A test checks that the
tests and this table agree, both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from . import _encoders as enc
from . import _encoders_backbones1 as bb1
from . import _families as fam
from . import _families_blip1 as blip1
from . import _families_claimed as claimed
from . import _families_encdec as encdec
from . import _families_encdec2 as encdec2
from . import _families_idefics1 as idefics1
from . import _families_itm as itm
from . import _families_kosmos as kosmos
from . import _families_mllama as mllama
from . import _families_pixtral as pix
from . import _families_prefix as prefix
from . import _families_towers1 as tw1
from . import _families_tvonly as tvo
from . import _families_tvworld2 as tvw2
from . import _families_udop as udop
from . import _generative as gen
from . import _vision as vis

__all__ = ["RETRIEVAL_MODELS", "TINY_MODELS", "TinyModel"]

_ALL = ("vision", "projector", "language")


@dataclass(frozen=True)
class TinyModel:
    """A tiny checkpoint of one model type.

    Attributes
    ----------
    build : callable
        ``build(directory) -> path``.
    kind : {"vlm", "vision", "clip"}
    stages : tuple of str
        The stages the family tests compare with HF.
    classifiers : bool
        Whether the family tests run its classifiers (generative and tuner,
        or zero-shot).
    torchvision : bool
        Whether its processor needs torchvision (transformers ships no PIL
        image processor for it): its family tests run in the torchvision world
        (``tests/models/test_torchvision_families.py``), and skip elsewhere.
    """

    build: Callable
    kind: str
    stages: tuple
    classifiers: bool = True
    torchvision: bool = False


_CLIP = ("vision", "projector")


def _encoder(model_type, kind):
    """An entry of ``skvlm.testing.make_tiny_encoder`` (tests/models/test_encoders.py)."""
    return TinyModel(
        partial(enc.make_tiny_encoder, model_type=model_type),
        kind,
        _CLIP if kind == "clip" else ("vision",),
    )


#: One entry per model type, sorted by model type.
TINY_MODELS = {
    "aimv2": _encoder("aimv2", "clip"),
    "aimv2_vision_model": _encoder("aimv2_vision_model", "vision"),
    "align": _encoder("align", "clip"),
    "altclip": _encoder("altclip", "clip"),
    "chinese_clip": _encoder("chinese_clip", "clip"),
    "convnext": _encoder("convnext", "vision"),
    "convnextv2": _encoder("convnextv2", "vision"),
    "dinov3_convnext": _encoder("dinov3_convnext", "vision"),
    "dinov3_vit": _encoder("dinov3_vit", "vision"),
    "hiera": _encoder("hiera", "vision"),
    "metaclip_2": _encoder("metaclip_2", "clip"),
    "mlcd": _encoder("mlcd", "vision"),
    "mlcd_vision_model": _encoder("mlcd_vision_model", "vision"),
    "siglip2_vision_model": _encoder("siglip2_vision_model", "vision"),
    "swin": _encoder("swin", "vision"),
    "swinv2": _encoder("swinv2", "vision"),
    "aya_vision": TinyModel(fam.make_tiny_aya_vision, "vlm", _ALL),
    "blip-2": TinyModel(gen.make_tiny_blip2, "vlm", _ALL),
    "clip": TinyModel(vis.make_tiny_clip, "clip", _CLIP),
    "dinov2": TinyModel(
        partial(vis.make_tiny_vit, kind="dinov2"), "vision", ("vision",)
    ),
    "florence2": TinyModel(encdec.make_tiny_florence2, "vlm", _ALL),
    "gemma3": TinyModel(fam.make_tiny_gemma3, "vlm", _ALL),
    "glm4v": TinyModel(fam.make_tiny_glm4v, "vlm", _ALL),
    "idefics2": TinyModel(fam.make_tiny_idefics2, "vlm", _ALL),
    "idefics3": TinyModel(gen.make_tiny_idefics3, "vlm", _ALL),
    "instructblip": TinyModel(gen.make_tiny_instructblip, "vlm", _ALL),
    "internvl": TinyModel(fam.make_tiny_internvl, "vlm", _ALL),
    "janus": TinyModel(fam.make_tiny_janus, "vlm", _ALL),
    "lighton_ocr": TinyModel(pix.make_tiny_lighton_ocr, "vlm", _ALL),
    "llama4": TinyModel(tvo.make_tiny_llama4, "vlm", _ALL, torchvision=True),
    "llava": TinyModel(gen.make_tiny_llava, "vlm", _ALL),
    "llava_next": TinyModel(gen.make_tiny_llava_next, "vlm", _ALL),
    "llava_onevision": TinyModel(fam.make_tiny_llava_onevision, "vlm", _ALL),
    "mistral3": TinyModel(pix.make_tiny_mistral3, "vlm", _ALL),
    "mistral_large4": TinyModel(pix.make_tiny_mistral_large4, "vlm", _ALL),
    "mllama": TinyModel(mllama.make_tiny_mllama, "vlm", _ALL),
    "paligemma": TinyModel(gen.make_tiny_paligemma, "vlm", _ALL),
    "phi4_multimodal": TinyModel(
        tvo.make_tiny_phi4_multimodal, "vlm", _ALL, torchvision=True
    ),
    "qwen2_5_vl": TinyModel(gen.make_tiny_qwen2_5_vl, "vlm", _ALL),
    "qwen2_vl": TinyModel(gen.make_tiny_qwen2_vl, "vlm", _ALL),
    "qwen3_5": TinyModel(fam.make_tiny_qwen3_5, "vlm", _ALL),
    "qwen3_vl": TinyModel(gen.make_tiny_qwen3_vl, "vlm", _ALL),
    "qwen3_vl_moe": TinyModel(fam.make_tiny_qwen3_vl_moe, "vlm", _ALL),
    "siglip": TinyModel(vis.make_tiny_siglip, "clip", _CLIP),
    "siglip2": TinyModel(vis.make_tiny_siglip2, "clip", _CLIP),
    "smolvlm": TinyModel(gen.make_tiny_smolvlm, "vlm", _ALL),
    "t5gemma2": TinyModel(encdec.make_tiny_t5gemma2, "vlm", _ALL),
    "vipllava": TinyModel(fam.make_tiny_vipllava, "vlm", _ALL),
    "vit": TinyModel(vis.make_tiny_vit, "vision", ("vision",)),
}
# The families built from a recipe (skvlm.testing.make_tiny_vlm), and the
# vision towers built the same way (make_tiny_encoder).
TINY_MODELS.update((t, _encoder(t, "vision")) for t in claimed.CLAIMED_ENCODERS)
TINY_MODELS.update(
    (t, _encoder(t, "clip" if t in ("clipseg", "tipsv2") else "vision"))
    for t in enc.BACKBONES2_BUILDERS
)
TINY_MODELS.update(
    (
        name,
        TinyModel(
            claimed.builder(name),
            "vlm",
            recipe.stages,
            recipe.classifiers,
            torchvision=recipe.torchvision,
        ),
    )
    for name, recipe in claimed.CLAIMED_RECIPES.items()
)
# a timm tower: timm imports only with torchvision, so it runs in that world
# (its vision stage: the timm tower's stages, skvlm.models._timm_stages)
TINY_MODELS["gemma3n"] = TinyModel(
    tvw2.make_tiny_gemma3n,
    "vlm",
    ("vision", "projector", "language"),
    True,
    torchvision=True,
)
TINY_MODELS["kosmos-2"] = TinyModel(kosmos.make_tiny_kosmos2, "vlm", _ALL)
TINY_MODELS["kosmos-2.5"] = TinyModel(kosmos.make_tiny_kosmos2_5, "vlm", _ALL)
TINY_MODELS["shieldgemma2"] = TinyModel(tw1.make_tiny_shieldgemma2, "vlm", _ALL)
TINY_MODELS["idefics"] = TinyModel(idefics1.make_tiny_idefics, "vlm", _ALL)
# BLIP (v1): no projector (its decoder cross-attends to the tower's states)
TINY_MODELS["blip"] = TinyModel(blip1.make_tiny_blip, "vlm", ("vision", "language"))
TINY_MODELS["instructblipvideo"] = TinyModel(
    blip1.make_tiny_instructblipvideo, "vlm", _ALL, torchvision=True
)
TINY_MODELS["git"] = TinyModel(prefix.make_tiny_git, "vlm", _ALL)
# no vision tower; its processor needs torchvision in transformers 5.25
TINY_MODELS["fuyu"] = TinyModel(
    prefix.make_tiny_fuyu, "vlm", ("projector", "language"), torchvision=True
)
TINY_MODELS["udop"] = TinyModel(udop.make_tiny_udop, "vlm", ("vision", "language"))
TINY_MODELS["pp_formulanet"] = TinyModel(
    udop.make_tiny_pp_formulanet, "vlm", _ALL, torchvision=True
)
# encoder-decoders whose prompt is the decoder's prefix; Pix2Struct has no
# projector
TINY_MODELS["pix2struct"] = TinyModel(
    encdec2.make_tiny_pix2struct, "vlm", ("vision", "language")
)
TINY_MODELS["vision-encoder-decoder"] = TinyModel(
    encdec2.make_tiny_vision_encoder_decoder, "vlm", _ALL
)
# convolutional and hierarchical backbones (skvlm.models.BackboneAdapter) and
# DPT's ViT encoder; timm's models and Depth Pro's processor need torchvision
TINY_MODELS.update(
    (
        t,
        TinyModel(
            partial(bb1.make_tiny_backbone, model_type=t),
            "vision",
            ("vision",),
            torchvision=t in bb1.NEEDS_TORCHVISION,
        ),
    )
    for t in bb1.BACKBONE_BUILDERS
)
# VideoPrism read on still videos; its video processor needs torchvision
TINY_MODELS.update(
    (
        t,
        TinyModel(
            partial(enc.make_tiny_encoder, model_type=t),
            kind,
            _CLIP if kind == "clip" else ("vision",),
            torchvision=True,
        ),
    )
    for t, kind in (("videoprism", "clip"), ("videoprism_vision_model", "vision"))
)

#: Image-text retrieval checkpoints, by the model type they share with the
#: captioner of :data:`TINY_MODELS`: their vision and projector stages and
#: zero-shot classification are compared with HF's own outputs
#: (tests/models/test_itm.py); support_matrix() reads the type's zero-shot
#: cell here.
RETRIEVAL_MODELS = {
    "blip": TinyModel(itm.make_tiny_blip_retrieval, "clip", _CLIP),
    "blip-2": TinyModel(itm.make_tiny_blip2_retrieval, "clip", _CLIP),
}
