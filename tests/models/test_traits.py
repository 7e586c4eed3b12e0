"""Traits derived from transformers' structure: a Pixtral tower, or a get_image_features
taking a patch grid, packs, whatever the family; and no module of skvlm but the
traits names a transformers module."""

import ast
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from skvlm.models import family_traits


@pytest.mark.parametrize(
    ("name", "views", "blocks"),
    [
        ("llava", "rows", "encoder.layers"),
        ("llava_pixtral", "packed", "transformer.layers"),
        ("mistral3", "packed", "transformer.layers"),
        ("lighton_ocr", "packed", "transformer.layers"),
        ("mistral_large4", "packed", "transformer.layers"),
    ],
)
def test_a_pixtral_tower_is_packed(built, name, views, blocks):
    model = AutoModelForImageTextToText.from_pretrained(built.path(name))
    traits = family_traits(model)
    assert model.config.model_type == ("llava" if name.startswith("llava") else name)
    assert traits.views == views
    assert traits.vision_blocks == blocks
    if name == "lighton_ocr":  # its TRAITS entry names the projector
        assert traits.vision == "model.vision_encoder"
        assert traits.projector == ("model.vision_projection",)
    else:
        assert traits.vision == "model.vision_tower"
        assert traits.projector == ("model.multi_modal_projector",)


@pytest.mark.parametrize(
    "name", ["qwen2_vl", "qwen3_vl", "glm46v", "exaone4_5", "video_llama_3"]
)
def test_a_patch_grid_argument_makes_a_tower_packed(built, name):
    # none of these declares its views: a *grid_thw argument of
    # get_image_features is what tells packed towers apart
    from skvlm.models import TRAITS

    assert TRAITS.get(name) is None or TRAITS[name].views == "rows"
    model = AutoModelForImageTextToText.from_pretrained(built.path(name))
    assert family_traits(model).views == "packed"


def test_a_tower_without_patch_grid_keeps_its_rows(built):
    model = AutoModelForImageTextToText.from_pretrained(built.path("gemma3"))
    assert family_traits(model).views == "rows"


# -- module names live in the traits only ------------------------------------------
# Where a family keeps its parts (towers, projectors, block lists, norms) is said
# once, in skvlm/models/_traits.py (TRAITS entries, derive_traits' name lists and
# its helpers); adapters, the tuner and the scorer read it from there. The scan
# below reads every module of skvlm and fails on a transformers sub-module named
# anywhere else: an attribute read (``model.vision_tower``), a getattr/hasattr/
# resolve_path string (``getattr(model, "model", model)``, ``"encoder.layers"``) or
# a bare name string (``("class_embedding", "cls_token")``).
ROOT = Path(__file__).resolve().parents[2]
#: transformers' names of sub-modules and of the parameters that tell a
#: tower's layout (class and distillation tokens)
MODULE_NAMES = frozenset(
    """
    aligner block blocks class_embedding cls_token connector convolution decoder
    distillation_token embed_tokens embed_tokens_extend embed_vision embeddings
    encoder final_layer_norm final_layernorm head image_embed image_newline
    image_to_text_projection image_tower img_processor language_model
    language_projection layer layer_norm layernorm layers lm_head merger
    mm_projector model multi_modal_projector norm patch_embed patch_embedding
    patch_embeddings pooler post_layernorm pre_layrnorm project_conv project_out
    projection projector qformer query_tokens stages text_model text_projection
    timm_model transformer vision_encoder vision_model vision_projection
    vision_tower visual visual_projection
    """.split()
)
#: MODULE_NAMES that skvlm also uses as words of its own (Adapter.stages,
#: Site.layer, Traits.projector, Stack.blocks...): flagged only where read off
#: a model or a module (HANDLES); the others are flagged anywhere
OWN_WORDS = frozenset(
    """
    block blocks connector convolution decoder embeddings encoder head layer layers
    lm_head merger model norm pooler projection projector stages transformer visual
    """.split()
)
#: names under which skvlm's code holds a transformers model or one of its modules
HANDLES = frozenset(
    """
    base decoder embeddings encoder head inner language lm model module net
    projector tower
    """.split()
)
#: reviewed exceptions, ``(path, name) -> why it is not a module path``: a public
#: output field or processor key that shares a module's name
ALLOWED = {}
#: skvlm.testing builds tiny checkpoints by setting named modules' weights: it
#: writes models, it does not read families
EXEMPT = ("skvlm/models/_traits.py", "skvlm/testing/")
_ATTR_CALLS = frozenset({"getattr", "hasattr", "setattr", "delattr", "resolve_path"})
_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def _is_handle(node):
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    return name in HANDLES


def _names_module(value, anywhere_only):
    """Whether string ``value`` is a module name or a dotted path holding one."""
    if not isinstance(value, str) or not _PATH.match(value):
        return False
    names = MODULE_NAMES - OWN_WORDS if anywhere_only else MODULE_NAMES
    return any(part in names for part in value.split("."))


def module_names(source):
    """``[(line, name)]``: the transformers module names ``source`` uses."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in MODULE_NAMES:
            if node.attr not in OWN_WORDS or _is_handle(node.value):
                found.add((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) in _ATTR_CALLS
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
        ):
            path = node.args[1].value
            if _names_module(path, anywhere_only=not _is_handle(node.args[0])):
                found.add((node.lineno, path))
        elif isinstance(node, ast.Constant) and _names_module(node.value, True):
            found.add((node.lineno, node.value))
    return sorted(found)


def test_no_module_names_a_transformers_module_outside_the_traits():
    problems = {}
    for path in sorted((ROOT / "skvlm").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(EXEMPT):
            continue
        found = [
            f"line {line}: {name}"
            for line, name in module_names(path.read_text())
            if (rel, name) not in ALLOWED
        ]
        if found:
            problems[rel] = found
    assert not problems, (
        "transformers module names outside skvlm/models/_traits.py: declare them "
        f"in a TRAITS entry or derive them there ({problems})"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # the tuner's old model.multi_modal_projector, LLaVA's vision_tower.encoder
        (
            "def f(net):\n    return net.model.multi_modal_projector",
            ["model", "multi_modal_projector"],
        ),
        ("def f(self):\n    return self.tower.encoder.layers", ["encoder", "layers"]),
        ("def f(self):\n    return self.language.layers", ["layers"]),
        (
            "def f(self, x):\n    return self.model.visual_projection(x)",
            ["visual_projection"],
        ),
        ("def f(model):\n    return getattr(model, 'model', model)", ["model"]),
        (
            "def f(tower):\n    return resolve_path(tower, 'encoder.layers')",
            ["encoder.layers"],
        ),
        ("def f(x):\n    return getattr(x, 'vision_model', x)", ["vision_model"]),
        ("NAMES = ('class_embedding', 'cls_token')", ["class_embedding", "cls_token"]),
        ("PATH = 'model.vision_tower'", ["model.vision_tower"]),
    ],
)
def test_the_module_name_check_can_fail(source, expected):
    assert sorted(name for _, name in module_names(source)) == expected


def test_the_module_name_check_knows_skvlm_own_words():
    # skvlm's own attributes and upstream public API with a module's name
    source = (
        "def f(self, adapter, site, cache, stack, traits, X):\n"
        "    return (self.blocks, self.encoder, adapter.stages, adapter.model,\n"
        "            site.layer, cache.layers, stack.blocks, traits.projector,\n"
        "            X.blocks(8), getattr(adapter, 'model', None), 'layers')\n"
    )
    assert module_names(source) == []


@pytest.mark.parametrize(
    ("model_type", "vision", "blocks", "head", "projector"),
    [
        # a CLIP-style model: the tower, its blocks, the projection of its pooled CLS
        ("metaclip_2", "vision_model", "encoder.layers", None, "visual_projection"),
        # a vision-only SigLIP is the tower itself, its pooled output the head's
        ("siglip_vision_model", "", "encoder.layers", "head", None),
        ("aimv2_vision_model", "", "encoder.layers", "head", None),
        # hierarchical encoders: their stages (ALIGN: its EfficientNet blocks)
        ("convnext", None, "encoder.stages", None, None),
        ("dinov3_convnext", None, "model.stages", None, None),
        ("align", "vision_model", "encoder.blocks", "pooler", None),
    ],
)
def test_encoder_traits_name_hfs_own_modules(
    tmp_path, model_type, vision, blocks, head, projector
):
    from transformers import AutoModel

    from skvlm.models import resolve_path
    from skvlm.testing import make_tiny_encoder

    model = AutoModel.from_pretrained(make_tiny_encoder(tmp_path, model_type))
    traits = family_traits(model)
    assert (traits.vision, traits.vision_blocks) == (vision, blocks)
    tower = model if not vision else getattr(model, vision)
    # the blocks are the modules whose outputs are HF's hidden_states[1:]
    with torch.no_grad():
        pixels = torch.rand(1, 3, 32, 32)
        kwargs = {"output_hidden_states": True}
        states = tower(pixel_values=pixels, **kwargs).hidden_states
    assert len(resolve_path(tower, blocks)) == len(states) - 1
    assert traits.vision_head == head
    if head is not None:
        assert resolve_path(tower, head) is getattr(tower, head)
    found = resolve_path(model, (traits.projector or (None,))[0])
    assert found is (None if projector is None else getattr(model, projector))


def test_a_vit_towers_class_and_distillation_tokens_are_found(tmp_path):
    from transformers import AutoModel

    from skvlm.models._traits import extra_prefix_tokens, has_class_token
    from skvlm.testing import make_tiny_encoder

    deit = AutoModel.from_pretrained(make_tiny_encoder(tmp_path / "d", "deit"))
    siglip = AutoModel.from_pretrained(
        make_tiny_encoder(tmp_path / "s", "siglip_vision_model")
    )
    # HF's own embeddings: DeiT's CLS and distillation token; SigLIP has neither
    assert deit.embeddings.cls_token is not None
    assert (has_class_token(deit), extra_prefix_tokens(deit)) == (True, 1)
    assert (has_class_token(siglip), extra_prefix_tokens(siglip)) == (False, 0)


def test_resolve_path_takes_one_path():
    # a chained tower's tuple of block lists is resolved list by list
    # (skvlm.models._chained), not flattened here
    from skvlm.models import resolve_path

    tower = torch.nn.Module()
    tower.a = torch.nn.ModuleList([torch.nn.Identity()])
    assert resolve_path(tower, "a") is tower.a
    with pytest.raises(TypeError, match="one dotted path"):
        resolve_path(tower, ("a", "a"))
