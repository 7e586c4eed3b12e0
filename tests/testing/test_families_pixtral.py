"""The Pixtral-tower builders write what a real checkpoint holds: transformers'
class names, the family's special image tokens, and seeded weights."""

import json

import pytest
from safetensors.torch import load_file

from skvlm.testing import (
    make_tiny_lighton_ocr,
    make_tiny_llava_pixtral,
    make_tiny_mistral3,
    make_tiny_mistral_large4,
)

BUILDERS = {
    "lighton_ocr": (
        make_tiny_lighton_ocr,
        "LightOnOcrForConditionalGeneration",
        2,
        "LightOnOcrProcessor",
        {"<|image_pad|>", "<|vision_pad|>", "<|vision_end|>"},
    ),
    "mistral3": (
        make_tiny_mistral3,
        "Mistral3ForConditionalGeneration",
        2,
        "PixtralProcessor",
        {"[IMG]", "[IMG_BREAK]", "[IMG_END]"},
    ),
    "mistral_large4": (
        make_tiny_mistral_large4,
        "MistralLarge4ForConditionalGeneration",
        2,
        "PixtralProcessor",
        {"[IMG]", "[IMG_BREAK]", "[IMG_END]"},
    ),
    "llava": (
        make_tiny_llava_pixtral,
        "LlavaForConditionalGeneration",
        1,
        "PixtralProcessor",
        {"[IMG]", "[IMG_BREAK]", "[IMG_END]"},
    ),
}


@pytest.mark.parametrize("model_type", sorted(BUILDERS))
def test_saved_layout_and_seed(model_type, tmp_path):
    build, architecture, merge, processor_class, image_tokens = BUILDERS[model_type]
    path = build(tmp_path / "a")
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == model_type
    assert config["architectures"] == [architecture]
    assert config["vision_config"]["model_type"] == "pixtral"
    processor = json.loads((path / "processor_config.json").read_text())
    assert processor["processor_class"] == processor_class
    assert processor["spatial_merge_size"] == merge
    tokenizer = json.loads((path / "tokenizer.json").read_text())
    specials = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    assert image_tokens <= specials
    same = load_file(build(tmp_path / "b") / "model.safetensors")
    other = load_file(build(tmp_path / "c", seed=1) / "model.safetensors")
    weights = load_file(path / "model.safetensors")
    assert all((weights[k] == same[k]).all() for k in weights)
    assert any((weights[k] != other[k]).any() for k in weights)
