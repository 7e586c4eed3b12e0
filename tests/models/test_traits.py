"""Traits derived from transformers' structure: a Pixtral tower packs, whatever the family."""

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
