"""What is special to Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

Every site against HF's own outputs (vision in raster order, Qwen2.5-VL's
window permutation undone, Qwen3-VL's DeepStack projector entries) is in
``test_family_matrix.py``.
"""

import numpy as np
import pytest
import torch
import transformers

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.models._qwen import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter
from skvlm.testing._generative import load_processor

from ._references import DEFAULT_PROMPT, chat

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module")
def paths(built):
    return {family: built.path(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def images(built):
    return built.images("qwen2_vl")


def test_qwen2_5_vision_blocks_see_window_permuted_patches(built):
    # Otherwise the matrix would leave the un-permutation untested.
    assert any(ex.facts["permuted"] for ex in built.reference("qwen2_5_vl"))


def test_qwen3_deepstack_entries_are_what_the_language_model_adds(paths, images):
    """Projector entry 0 is what block 2 reads at image positions minus entry 1."""
    path = paths["qwen3_vl"]
    adapter = load_adapter(path)
    model = adapter.model
    processor = load_processor(path)
    text = processor.apply_chat_template(
        chat(DEFAULT_PROMPT), add_generation_prompt=True, tokenize=False
    )
    inputs = processor(images=images[:1], text=[text], return_tensors="pt")
    seen = {}
    handle = model.model.language_model.layers[1].register_forward_pre_hook(
        lambda module, args: seen.setdefault("input", args[0])
    )
    try:
        with torch.no_grad():
            out = model.model(**inputs, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    image = inputs["input_ids"][0] == model.config.image_token_id
    added = (seen["input"] - out.hidden_states[1])[0]
    assert float(added[~image].abs().max()) == 0.0
    vlm = VLMEmbeddingTransformer(path, stage="projector", layer=0, pooling="mean")
    np.testing.assert_allclose(
        vlm.fit_transform(images[:1])[0], added[image].mean(0).numpy(), atol=1e-5
    )


# -- prompts ---------------------------------------------------------------------------
QWEN2_TEXT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Is it a cat?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
QWEN3_TEXT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is it a cat?"
    "<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.mark.parametrize(
    "family, expected",
    [("qwen2_vl", QWEN2_TEXT), ("qwen2_5_vl", QWEN2_TEXT), ("qwen3_vl", QWEN3_TEXT)],
)
def test_format_prompt(paths, family, expected, monkeypatch):
    adapter = load_adapter(paths[family])
    assert adapter.format_prompt("Is it a cat?") == expected
    assert adapter.format_prompt(None) == expected.replace(
        "Is it a cat?", DEFAULT_PROMPT
    )
    assert adapter.format_prompt(expected) == expected
    # Without a chat template, the family's known format gives the same text.
    monkeypatch.setattr(adapter.processor, "chat_template", None)
    assert adapter.format_prompt("Is it a cat?") == expected


def test_prompt_with_placeholder_is_used_as_is(paths, images):
    raw = "<|vision_start|><|image_pad|><|vision_end|>a cat"
    path = paths["qwen2_vl"]
    vlm = VLMEmbeddingTransformer(
        path, stage="language", layer=-1, pooling="mean", prompt=raw
    )
    got = vlm.fit_transform(images[:1])
    model = load_adapter(path).model
    inputs = load_processor(path)(images=images[:1], text=[raw], return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(**inputs, output_hidden_states=True).hidden_states[-1]
    np.testing.assert_allclose(got[0], hidden[0].mean(0).numpy(), atol=1e-5)


def test_prompt_with_two_placeholders_is_refused(paths, images):
    vlm = VLMEmbeddingTransformer(
        paths["qwen2_vl"], stage="language", prompt="<|image_pad|> and <|image_pad|>"
    )
    with pytest.raises(ValueError, match="batch item 0 holds 2 image placeholders"):
        vlm.fit_transform(images[:1])


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage, pooling",
    [
        ("vision", "cls"),
        ("vision", "pooler"),
        ("projector", "last"),
        ("vision", "image_mean"),
        ("language", "cls"),
    ],
)
def test_pooling_the_stage_lacks_lists_those_it_has(paths, stage, pooling):
    vlm = VLMEmbeddingTransformer(paths["qwen2_vl"], stage=stage, pooling=pooling)
    with pytest.raises(
        ValueError, match=f"pooling='{pooling}' is not available.*'mean'"
    ):
        vlm.fit()


# -- loading without torchvision ---------------------------------------------------------
@pytest.mark.parametrize(
    "family, adapter_cls, name",
    [
        ("qwen2_vl", Qwen2VLAdapter, "Qwen2VLProcessor"),
        ("qwen2_5_vl", Qwen2_5_VLAdapter, "Qwen2_5_VLProcessor"),
        ("qwen3_vl", Qwen3VLAdapter, "Qwen3VLProcessor"),
    ],
)
def test_processor_loads_without_torchvision(
    paths, family, adapter_cls, name, images, tmp_path
):
    processor = adapter_cls.load_processor(paths[family])
    assert type(processor).__name__ == name
    assert isinstance(processor, getattr(transformers, name))
    assert "video_processor" not in processor.to_dict()
    assert name in repr(processor)
    batch = processor(
        images=images[:1], text=["<|image_pad|> a cat"], return_tensors="pt"
    )
    assert {"mm_token_type_ids", "image_grid_thw"} <= set(batch)
    with pytest.raises(ImportError, match="pip install torchvision"):
        processor.video_processor(videos=[])
    processor.save_pretrained(tmp_path)
    reloaded = adapter_cls.load_processor(tmp_path)
    assert reloaded.to_dict() == processor.to_dict()


def test_processor_loads_when_torchvision_is_installed_but_broken(paths, monkeypatch):
    # AutoProcessor then fails on the video processor with an ImportError.
    monkeypatch.setattr(transformers.utils, "is_torchvision_available", lambda: True)
    processor = Qwen2VLAdapter.load_processor(paths["qwen2_vl"])
    assert type(processor).__name__ == "Qwen2VLProcessor"
