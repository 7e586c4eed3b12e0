"""The rows of the families built from a recipe (``skvlm.testing.make_tiny_vlm``).

Per model type, what the HF reference (``_references.generic_reference``, or
``_references_packed.packed_reference`` for a packed tower) needs:
the path of the vision tower (None where skvlm offers no vision stage),
whether the processor takes one image list per prompt, whether the tower's
tokens start with a CLS, and the images (sizes chosen so that batches pad).
"""

from functools import partial
from types import SimpleNamespace

import numpy as np
import torch

from skvlm.testing import TINY_MODELS

from ._references import HF, Tokens, _np, generic_reference, qwen_reference
from ._references_packed import packed_reference
from ._references_towers1 import minicpm_reference, ovis2_reference
from ._references_towers2 import sam_then_encoder_reference, views_reference

#: Packed towers: their paths (the tower from the model, its blocks from the
#: tower) and what ``packed_reference`` needs to know of their order.
PACKED = {
    "cosmos3_edge": dict(tower="model.visual", blocks="encoder.layers"),
    "exaone4_5": dict(tower="model.visual", blocks="blocks"),
    "hyperclovax_vision_v2": dict(tower="model.vision_model", blocks="blocks"),
    "llava_onevision1_5": dict(tower="model.visual", blocks="blocks"),
    "ovis2_5": dict(tower="model.vision_tower", blocks="layers"),
    # its processor packs the patches row by row (no merge blocks)
    "paddleocr_vl": dict(
        tower="model.visual",
        blocks="vision_model.encoder.layers",
        merge=1,
        placeholder="<|IMAGE_PLACEHOLDER|>",
    ),
    "qwen2_5_omni_thinker": dict(tower="model.visual", blocks="blocks"),
    "qwen3_omni_moe_thinker": dict(tower="model.visual", blocks="blocks"),
    "qwen4_exp": dict(tower="model.visual", blocks="blocks"),
    "video_llama_3": dict(tower="model.vision_model", blocks="encoder.layers"),
    "cohere_compass": dict(tower="model.visual", blocks="blocks"),
    "dots3_note": dict(tower="model.vision_tower", blocks="blocks"),
    "glm5_next": dict(tower="model.visual", blocks="blocks"),
    # their processors pack the patches row by row (no merge blocks)
    "hunyuan_vl": dict(
        tower="model.vision_tower",
        blocks="layers",
        merge=1,
        placeholder="<|hy_image|>",
    ),
    "hy_v4_vl": dict(tower="model.vision_tower", blocks="layers", merge=1),
    "lfm3_vl": dict(tower="model.vision_tower", blocks="layers"),
    "minimax_m3_vl": dict(tower="model.vision_tower", blocks="layers"),
    # their processor packs the patches row by row; the tower permutes single
    # patches into windows (spatial_merge_size 1) after its ln_pre
    "muse_glimmer": dict(tower="model.vision_tower", blocks="layers", merge=1),
    "muse_spark": dict(tower="model.vision_tower", blocks="layers", merge=1),
}
#: Windowed towers (Qwen2.5-VL's window attention): the module, from the
#: tower, whose output they permute into window order.
WINDOWED = {
    "exaone4_5": "patch_embed",
    "hyperclovax_vision_v2": "patch_embed",
    "ovis2_5": "embeddings",
    "qwen2_5_omni_thinker": "patch_embed",
    "muse_glimmer": "ln_pre",
    "muse_spark": "ln_pre",
}
#: Towers with a class token before each image's patches.
PACKED_CLS = {"llava_onevision1_5"}


def _timm_tower(model):
    """A timm ViT tower (``TimmWrapperModel``) with the states of transformers'
    towers: the blocks' input, then each block's output, class token first.
    timm's intermediates (HF's ``hidden_states`` here) are the blocks' outputs
    as (C, H, W) maps without the class token; the states are read by hooks
    on the blocks and their patch tokens checked against those maps."""
    tower = model.model.vision_tower
    blocks = tower.timm_model.blocks

    def run(pixel_values, output_hidden_states):
        seen = []
        hooks = [blocks[0].register_forward_pre_hook(lambda _, a: seen.append(a[0]))]
        hooks += [b.register_forward_hook(lambda *a: seen.append(a[2])) for b in blocks]
        try:
            maps = tower(pixel_values=pixel_values, output_hidden_states=True)
        finally:
            for hook in hooks:
                hook.remove()
        for state, hf in zip(seen[1:], maps.hidden_states, strict=True):
            torch.testing.assert_close(state[:, 1:], hf.flatten(2).transpose(1, 2))
        return SimpleNamespace(hidden_states=tuple(seen))

    return run


def _radio_reference(path, images, prompts):
    """Nemotron Omni: projector and language from the model itself; vision:
    HF's RADIO tower on each image alone (its class and register tokens
    first, then the patches in raster order), the prefix left out of
    ``mean``/``max``."""
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=False,
        has_cls=False,
        placeholder="<image>",
        base=lambda model: model,
    )
    hf = HF(path)
    tower = hf.model.vision_model
    n_prefix = tower.config.num_cls_tokens + tower.config.num_registers
    for image, example in zip(images, examples, strict=True):
        pixels = dict(hf.processor.image_processor(images=[image], return_tensors="pt"))
        with torch.no_grad():
            states = tower(**pixels, output_hidden_states=True).hidden_states
        states = [_np(h[0]) for h in states]
        pooled = np.arange(len(states[0])) >= n_prefix
        example.stages["vision"] = Tokens(states, pooled=pooled)
    return examples


def _timm_stages_reference(path, images, prompts, *, stem, skip=0):
    """A timm convolutional tower (FastViT; Gemma 3n's toy ResNet): projector and
    language as ``generic_reference``; vision from timm itself, on each image
    alone: entry 0 the ``stem(timm_model, pixels)`` map, then timm's own
    ``forward_intermediates`` (one map per ``feature_info`` entry, the first
    ``skip`` of them the stem's, left out), each (C, H, W) map as H*W tokens
    of width C, row by row."""
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=False,
        has_cls=False,
        placeholder="<image>",
    )
    hf = HF(path)
    timm_model = hf.model.model.vision_tower.timm_model
    for image, example in zip(images, examples, strict=True):
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        pixels = pixels["pixel_values"]
        with torch.no_grad():
            maps = timm_model.forward_intermediates(pixels, intermediates_only=True)
            maps = [stem(timm_model, pixels), *maps[skip:]]
        states = [_np(m[0].flatten(1).transpose(0, 1)) for m in maps]
        example.stages["vision"] = Tokens(states)
    return examples


def _patch_tower_reference(path, images, prompts, *, base=None):
    """Towers that take the images cut into patches (LFM2-VL's NaFlex SigLIP2,
    Gemma 4's with patch positions): projector and language as
    ``generic_reference``; vision: HF's own tower on each image alone, read by
    hooks on its blocks (the input of the first, then each one's output) at the
    image's real patches (those its processor marks: ``pixel_attention_mask``,
    or positions other than (-1, -1)), in the processor's order. The hooks
    agree with the tower's ``hidden_states`` (checked), whose last entry for
    Gemma 4 is its pooled, padding-stripped output instead of the last block's.
    """
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=True,
        has_cls=False,
        placeholder="<image>",
        base=base,
    )
    hf = HF(path)
    core = hf.model.model if base is None else base(hf.model)
    tower = core.vision_tower
    blocks = getattr(tower, "vision_model", tower).encoder.layers
    seen = []
    for image, example in zip(images, examples, strict=True):
        inputs = dict(
            hf.processor.image_processor(images=[[image]], return_tensors="pt")
        )
        naflex = "spatial_shapes" in inputs
        if naflex:
            real = inputs["pixel_attention_mask"][0].bool()
            names = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
            kwargs = {name: inputs[name] for name in names}
        else:
            positions = inputs["image_position_ids"]
            real = (positions != -1).all(dim=-1)[0]
            kwargs = dict(
                pixel_values=inputs["pixel_values"], pixel_position_ids=positions
            )
        seen.clear()
        hooks = [blocks[0].register_forward_pre_hook(lambda _, a: seen.append(a[0]))]
        hooks += [
            b.register_forward_hook(
                lambda *a: seen.append(a[2][0] if isinstance(a[2], tuple) else a[2])
            )
            for b in blocks
        ]
        try:
            with torch.no_grad():
                hidden = tower(**kwargs, output_hidden_states=True).hidden_states
        finally:
            for hook in hooks:
                hook.remove()
        assert len(seen) == len(hidden) == len(blocks) + 1
        agree = len(hidden) if naflex else len(hidden) - 1
        for state, hf_state in zip(seen[:agree], hidden[:agree], strict=True):
            torch.testing.assert_close(state, hf_state)
        example.stages["vision"] = Tokens([_np(h[0][real]) for h in seen])
    return examples


#: model type -> keyword arguments of ``_families._new``
_ROWS = {
    "aria": dict(tower="model.vision_tower"),
    "cohere2_vision": dict(tower="model.vision_tower", placeholder="<|IMG_PATCH|>"),
    "deepseek_vl": dict(tower="model.vision_model", placeholder="<image_placeholder>"),
    "deepseek_vl_hybrid": dict(
        tower="model.vision_model", placeholder="<image_placeholder>"
    ),
    "gemma4": dict(tower=None, nested=True, reference=_patch_tower_reference),
    "glm46v": dict(
        tower=None,
        images="qwen",
        reference=partial(qwen_reference, tokenizer_specials=True),
    ),
    "qianfan_ocr": dict(tower="model.vision_tower", has_cls=True),
    # served by the GLM-4V adapter: its packed tower unpacked per image
    "glm4v_moe": dict(
        tower=None,
        images="qwen",
        reference=partial(qwen_reference, tokenizer_specials=True),
    ),
    # SAM towers: (height, width, channels) maps, read row by row; positions
    # where row and column order differ
    "got_ocr2": dict(
        tower="model.vision_tower",
        placeholder="<imgpad>",
        vision=("mean", "max", 0, 3, 13, -1),
    ),
    "lfm2_vl": dict(tower=None, nested=True, reference=_patch_tower_reference),
    "llava_next_video": dict(tower="model.vision_tower", has_cls=True),
    # its blocks' states over each image's views (last entry:
    # the last block's, before the final norm and the 2 x 2 merge)
    "ovis2": dict(tower=None, reference=ovis2_reference),
    # served by the Qwen3-VL adapter: its packed tower unpacked per image
    "qwen3_5_moe": dict(tower=None, images="qwen", reference=qwen_reference),
    "video_llava": dict(tower="model.image_tower", has_cls=True),
    # Qwen-style packed towers, read per image by the generic adapter
    **{
        name: dict(
            tower=None,
            images="qwen",
            has_cls=name in PACKED_CLS,
            # positions where raster, merge-block and window orders differ
            vision=("mean", "max", 0, 3, 4, 7, 13, -1),
            reference=partial(
                packed_reference,
                has_cls=name in PACKED_CLS,
                embed=WINDOWED.get(name),
                **tower,
            ),
        )
        for name, tower in PACKED.items()
    },
    # packed towers too (Qwen3-VL's, ERNIE 4.5-VL's, GLM-V's), read per image
    **{
        name: dict(
            tower=None,
            images="qwen",
            vision=("mean", "max", 0, 3, 4, 7, 13, -1),
            reference=partial(packed_reference, tower=tower, blocks="blocks"),
        )
        for name, tower in {
            "cosmos3_omni": "model.visual",
            "ernie4_5_vl_moe": "model.vision_tower",
            "glm_ocr": "model.visual",
            "glmga": "model.visual",
        }.items()
    },
    # SAM's blocks, then the second encoder's, on the global view
    "deepseek_ocr2": dict(
        tower=None,
        vision=("mean", "max", 0, 13, 200, -1),
        reference=sam_then_encoder_reference,
    ),
    # LLaVA-NeXT views: each image's base view and tiles, each CLS left out
    "granite4_vision": dict(tower="model.vision_tower", has_cls=True),
    # its real tiles (and global view), one padded batch row per image
    "granite_docling": dict(tower="model.vision_model", nested=True),
    "pp_chart2table": dict(
        tower="model.vision_tower", vision=("mean", "max", 0, 3, 13, -1)
    ),
    # the auto-regressive encoder: HF's own get_encoder() is the reference's base
    "diffusion_gemma": dict(
        tower=None,
        nested=True,
        reference=partial(
            _patch_tower_reference, base=lambda model: model.get_encoder()
        ),
    ),
    # timm's stages: FastViT's after its stem; the toy ResNet's after its
    # max-pooled stem, timm listing the stem's activation first
    "fast_vlm": dict(
        tower=None,
        reference=partial(_timm_stages_reference, stem=lambda t, x: t.stem(x)),
    ),
    "gemma3n": dict(
        tower=None,
        reference=partial(
            _timm_stages_reference,
            stem=lambda t, x: t.maxpool(t.act1(t.bn1(t.conv1(x)))),
            skip=1,
        ),
    ),
    # every view's patches (low-res view first), view after view
    "molmo2": dict(
        tower=None, vision=("mean", "max", 0, 5, 20, -1), reference=views_reference
    ),
    "perception_lm": dict(
        tower="model.vision_tower",
        has_cls=True,
        reference=partial(
            generic_reference,
            tower=_timm_tower,
            nested=False,
            has_cls=True,
            placeholder=None,
        ),
    ),
    "step3p7": dict(tower="model.vision_model"),
    # SAM's blocks, then the CLIP encoder's, on the global view
    "unlimited_ocr": dict(
        tower=None,
        vision=("mean", "max", 0, 3, -1),
        reference=sam_then_encoder_reference,
    ),
    **dict.fromkeys(["apertus1p5", "inkling_mm_model"], dict(tower=None)),
    # a packed tower, a class token before each image; its grid counts the
    # language model's tokens (2 x 2 patches, packed token by token)
    **dict.fromkeys(
        ["inkling2", "inkling2_loop"],
        dict(
            tower=None,
            has_cls=True,
            vision=("mean", "max", 0, 3, 4, 7, 13, -1),
            reference=partial(
                packed_reference,
                tower="model.vision_tower",
                blocks="layers",
                has_cls=True,
                token_grid=True,
            ),
        ),
    ),
    # a packed tower whose processor packs the patches row by row
    "kimi_k25": dict(
        tower=None,
        vision=("mean", "max", 0, 3, 4, 7, 13, -1),
        reference=partial(
            packed_reference, tower="model.vision_tower", blocks="layers", merge=1
        ),
    ),
    "gemma4_unified": dict(tower=None, nested=True),
    # the model is its own base (no ``model.model``); a packed RADIO tower
    "nemotron_h_omni": dict(
        tower=None,
        has_cls=True,
        vision=("mean", "max", "cls", 0, 3, 4, 7, -1),
        reference=_radio_reference,
    ),
    "chameleon": dict(tower=None),
    "emu3": dict(tower=None),
    # every view of every image packed; blocks after insert_layer_id hold a
    # 2 x 2 merged grid (towers1)
    **dict.fromkeys(
        ["minicpm_ocr", "minicpmv4_6", "minicpmv4_7"],
        dict(
            tower=None,
            vision=("mean", "max", 0, 3, 4, 7, -1),
            reference=minicpm_reference,
        ),
    ),
}
CLAIMED_ROWS = {
    name: dict(
        row,
        build=TINY_MODELS[name].build,
        stages=TINY_MODELS[name].stages,
        torchvision=TINY_MODELS[name].torchvision,
    )
    for name, row in _ROWS.items()
}
