"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: every site equals HF's own outputs pooled here.

References are computed one image at a time (no padding) from HF's
``output_hidden_states`` and ``get_image_features``; skvlm runs padded batches of
images of different sizes and prompts of different lengths.
"""

import re

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from transformers import AutoModelForImageTextToText
from transformers.vision_utils import get_vision_position_ids

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.models._base import DEFAULT_PROMPT
from skvlm.models._qwen import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter
from skvlm.testing import random_images
from skvlm.testing._generative import (
    load_processor,
    make_tiny_qwen2_5_vl,
    make_tiny_qwen2_vl,
    make_tiny_qwen3_vl,
)

BUILDERS = {
    "qwen2_vl": make_tiny_qwen2_vl,
    "qwen2_5_vl": make_tiny_qwen2_5_vl,
    "qwen3_vl": make_tiny_qwen3_vl,
}
FAMILIES = list(BUILDERS)
# Prompts of different lengths, so that the batch is padded.
PROMPTS = [
    DEFAULT_PROMPT,
    "a cat",
    "describe the object in this picture .",
    "is it a dog ?",
]
# Sizes whose grids differ, and exceed one 2x2-merge-block window (Qwen2.5-VL).
SIZES = ((48, 48), (64, 32), (40, 56), (32, 32))
SPECIAL = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|endoftext|>",
]
LAYERS = [0, 1, -1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors gain nothing from threads, and on a shared CPU the thread
    # hand-offs cost several times the work itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return {
        name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()
    }


@pytest.fixture(scope="module")
def images():
    return random_images(4, seed=3, sizes=SIZES)


def _message(prompt):
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": prompt}],
        }
    ]


def _raster(hidden, grid):
    """Packed (patches, dim) of one image, in processor order, to raster order.

    HF's own vision position ids say which (row, column) each packed patch is.
    """
    rows, cols = get_vision_position_ids(grid, 2).T
    return hidden[torch.argsort(rows * int(grid[0, 2]) + cols)]


def _reference_one(model, processor, image, prompt):
    """HF's hidden states of one image and prompt, as numpy arrays."""
    visual = model.model.visual
    permuted = False
    pixels = processor.image_processor(images=[image], return_tensors="pt")
    grid = pixels["image_grid_thw"]
    with torch.no_grad():
        vision = visual(
            pixels["pixel_values"], grid_thw=grid, output_hidden_states=True
        )
        hidden = list(vision.hidden_states)
        if hasattr(visual, "window_size"):
            # Qwen2.5-VL's blocks see window-permuted patches: recover the
            # permutation by matching entry 0 to the unpermuted patch embeddings.
            embedded = visual.patch_embed(pixels["pixel_values"])
            permutation = torch.cdist(hidden[0], embedded).argmin(dim=1)
            assert len(set(permutation.tolist())) == len(permutation)
            inverse = torch.argsort(permutation)
            hidden = [h[inverse] for h in hidden]
            permuted = bool((permutation != torch.arange(len(permutation))).any())
        features = model.model.get_image_features(pixels["pixel_values"], grid)
        projector = [f[0] for f in getattr(features, "deepstack_features", [])]
        projector.append(features.pooler_output[0])
        text = processor.apply_chat_template(
            _message(prompt), add_generation_prompt=True, tokenize=False
        )
        inputs = processor(images=[image], text=[text], return_tensors="pt")
        language = model.model(**inputs, output_hidden_states=True, use_cache=False)
    ids = inputs["input_ids"][0]
    image_mask = (ids == model.config.image_token_id).numpy()
    special = np.isin(ids.numpy(), processor.tokenizer.convert_tokens_to_ids(SPECIAL))
    return {
        "vision": [_raster(h, grid).numpy() for h in hidden],
        "projector": [p.numpy() for p in projector],
        "language": [h[0].numpy() for h in language.hidden_states],
        "image": image_mask,
        "text": ~image_mask & ~special,
        "permuted": permuted,
    }


@pytest.fixture(scope="module")
def reference(paths, images):
    out = {}
    for family, path in paths.items():
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        processor = load_processor(path)
        out[family] = [
            _reference_one(model, processor, image, prompt)
            for image, prompt in zip(images, PROMPTS, strict=True)
        ]
    return out


def _pool(hidden, pooling, ref):
    """Pool one unpadded (tokens, dim) sequence."""
    if isinstance(pooling, int):
        return hidden[pooling]
    if pooling == "last":
        return hidden[-1]
    if pooling == "mean":
        return hidden.mean(0)
    if pooling == "max":
        return hidden.max(0)
    return hidden[ref["image" if pooling == "image_mean" else "text"]].mean(0)


def _expected(refs, stage, layers, pooling):
    rows = []
    for ref in refs:
        stack = ref[stage]
        rows.append(
            np.concatenate([_pool(stack[layer], pooling, ref) for layer in layers])
        )
    return np.stack(rows)


def test_qwen2_5_vision_blocks_see_window_permuted_patches(reference):
    # Otherwise the un-permutation would go untested.
    assert any(ref["permuted"] for ref in reference["qwen2_5_vl"])


CASES = (
    [("vision", p) for p in ("mean", "max", 0, 3, 4, -1)]
    + [("projector", p) for p in ("mean", "max", 0, -1)]
    + [
        ("language", p)
        for p in ("last", "mean", "max", "image_mean", "text_mean", 0, 3, -2)
    ]
)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("stage, pooling", CASES)
def test_site_equals_hf(paths, images, reference, family, stage, pooling):
    layers = [0, -1] if stage == "projector" else LAYERS
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    vlm = VLMEmbeddingTransformer(
        paths[family], stage=stage, layer=layers, pooling=pooling, batch_size=4
    )
    got = vlm.fit_transform(X)
    assert vlm.family_ == family
    expected = _expected(reference[family], stage, layers, pooling)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_side_and_batch_order_do_not_matter(paths, images, family, monkeypatch):
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    vlm = VLMEmbeddingTransformer(
        paths[family],
        stage="language",
        layer=[1, -1],
        pooling="image_mean",
        batch_size=4,
    )
    left = vlm.fit_transform(X)
    reversed_rows = vlm.transform(X.iloc[::-1])[::-1]
    one_by_one = vlm.set_params(batch_size=1).transform(X)
    tokenizer = load_adapter(paths[family]).processor.tokenizer
    monkeypatch.setattr(tokenizer, "padding_side", "right")
    right = vlm.set_params(batch_size=4).transform(X)
    for other in (reversed_rows, one_by_one, right):
        np.testing.assert_allclose(other, left, rtol=1e-4, atol=1e-4)


def test_qwen3_deepstack_entries_are_what_the_language_model_adds(paths, images):
    """Projector entry 0 is what block 2 reads at image positions minus entry 1."""
    path = paths["qwen3_vl"]
    adapter = load_adapter(path)
    model = adapter.model
    processor = load_processor(path)
    text = processor.apply_chat_template(
        _message(DEFAULT_PROMPT), add_generation_prompt=True, tokenize=False
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


def test_prompt_with_placeholder_is_used_as_is(paths, images, reference):
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
    "family, stage, layer, valid",
    [
        ("qwen2_vl", "vision", 4, "[-4, 3]"),
        ("qwen2_vl", "projector", 1, "[-1, 0]"),
        ("qwen3_vl", "projector", 2, "[-2, 1]"),
        ("qwen2_5_vl", "language", -5, "[-4, 3]"),
    ],
)
def test_layer_out_of_range_gives_the_valid_range(paths, family, stage, layer, valid):
    vlm = VLMEmbeddingTransformer(
        paths[family], stage=stage, layer=layer, pooling="mean"
    )
    with pytest.raises(
        ValueError, match=f"layer={layer} is out of range.*{re.escape(valid)}"
    ):
        vlm.fit()


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


def test_auto_pooling_and_widths(paths):
    for stage, pooling, width in [
        ("vision", "mean", 32),
        ("projector", "mean", 32),
        ("language", "last", 32),
    ]:
        vlm = VLMEmbeddingTransformer(paths["qwen2_5_vl"], stage=stage).fit()
        assert (vlm.pooling_, vlm.n_features_out_) == (pooling, width)


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
