"""Traits derived from transformers' structure: a Pixtral tower, or a get_image_features
taking a patch grid, packs, whatever the family."""

import pytest
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
