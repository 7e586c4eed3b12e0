"""Idefics3 and SmolVLM: every site equals HF's own outputs pooled here.

References are computed one image at a time from HF's ``output_hidden_states``
and ``get_image_features``; skvlm runs padded batches in which images split into
different numbers of tiles (3 or 5) and prompts differ in length.
"""

import re

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from transformers import AutoModelForImageTextToText

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.models._base import DEFAULT_PROMPT
from skvlm.models._idefics import Idefics3Adapter, SmolVLMAdapter
from skvlm.testing import random_images
from skvlm.testing._generative import (
    load_processor,
    make_tiny_idefics3,
    make_tiny_smolvlm,
)

BUILDERS = {"idefics3": make_tiny_idefics3, "smolvlm": make_tiny_smolvlm}
FAMILIES = list(BUILDERS)
PROMPTS = [
    DEFAULT_PROMPT,
    "a cat",
    "describe the object in this picture .",
    "is it a dog ?",
]
# Tokens that are not prompt text: BOS / turn markers, padding and the tile frame.
SPECIAL = re.compile(
    r"<\|begin_of_text\|>|<\|im_start\|>|<\|im_end\|>|<end_of_utterance>|"
    r"<\|reserved_special_token_0\|>|<fake_token_around_image>|<global-img>|<row_\d_col_\d>"
)
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
    return random_images(4, seed=5)  # 40x50, 30x64, 64x20, 33x33: 5, 3, 3, 5 tiles


def _message(prompt):
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": prompt}],
        }
    ]


def _reference_one(model, processor, image, prompt):
    """HF's hidden states of one image and prompt, as numpy arrays."""
    pixels = processor.image_processor(images=[[image]], return_tensors="pt")
    patch = model.config.vision_config.patch_size
    with torch.no_grad():
        features = model.model.get_image_features(
            pixels["pixel_values"],
            pixels["pixel_attention_mask"],
            output_hidden_states=True,
        )
        text = processor.apply_chat_template(
            _message(prompt), add_generation_prompt=True, tokenize=False
        )
        inputs = processor(images=[[image]], text=[text], return_tensors="pt")
        language = model.model(**inputs, output_hidden_states=True, use_cache=False)
    # A patch counts when any of its pixels is real.
    mask = pixels["pixel_attention_mask"][0].bool()
    tiles, height, width = mask.shape
    valid = (
        mask.view(tiles, height // patch, patch, width // patch, patch).any(4).any(2)
    )
    valid = valid.reshape(-1).numpy()
    dim = features.hidden_states[0].shape[-1]
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    image_mask = np.array([t == "<image>" for t in tokens])
    special = np.array([bool(SPECIAL.fullmatch(t)) for t in tokens])
    return {
        "tiles": tiles,
        "vision": [h.reshape(-1, dim).numpy()[valid] for h in features.hidden_states],
        "projector": [features.pooler_output[0].numpy()],
        "language": [h[0].numpy() for h in language.hidden_states],
        "image": image_mask,
        "text": ~image_mask & ~special,
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
    return np.stack(
        [
            np.concatenate([_pool(ref[stage][layer], pooling, ref) for layer in layers])
            for ref in refs
        ]
    )


CASES = (
    [("vision", p) for p in ("mean", "max", 0, 20, -1)]
    + [("projector", p) for p in ("mean", "max", 0, 5, -1)]
    + [
        ("language", p)
        for p in ("last", "mean", "max", "image_mean", "text_mean", 0, 3, -2)
    ]
)


def test_images_split_into_different_numbers_of_tiles(reference):
    assert [ref["tiles"] for ref in reference["idefics3"]] == [5, 3, 3, 5]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("stage, pooling", CASES)
def test_site_equals_hf(paths, images, reference, family, stage, pooling):
    layers = [0] if stage == "projector" else LAYERS
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
        pooling="text_mean",
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


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_stage_does_not_run_the_language_model(paths, images, family):
    adapter = load_adapter(paths[family])
    calls = []
    handle = adapter.model.model.text_model.register_forward_pre_hook(
        lambda module, args: calls.append(1)
    )
    try:
        VLMEmbeddingTransformer(paths[family], stage="vision").fit_transform(images)
        VLMEmbeddingTransformer(paths[family], stage="projector").fit_transform(images)
    finally:
        handle.remove()
    assert calls == []


# -- prompts ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family, expected",
    [
        (
            "idefics3",
            "<|begin_of_text|>User:<image>Is it a cat?<end_of_utterance>\nAssistant:",
        ),
        (
            "smolvlm",
            "<|im_start|>User:<image>Is it a cat?<end_of_utterance>\nAssistant:",
        ),
    ],
)
def test_format_prompt(paths, family, expected, monkeypatch):
    adapter = load_adapter(paths[family])
    assert adapter.format_prompt("Is it a cat?") == expected
    assert adapter.format_prompt(None) == expected.replace(
        "Is it a cat?", DEFAULT_PROMPT
    )
    assert adapter.format_prompt("<image> a cat") == "<image> a cat"
    # Without a chat template, the family's known format gives the same text.
    monkeypatch.setattr(adapter.processor, "chat_template", None)
    assert adapter.format_prompt("Is it a cat?") == expected


def test_prompt_with_two_placeholders_is_refused(paths, images):
    vlm = VLMEmbeddingTransformer(
        paths["smolvlm"], stage="language", prompt="<image> <image> a cat"
    )
    with pytest.raises(ValueError, match="batch item 0 holds 2 image placeholders"):
        vlm.fit_transform(images[:1])


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage, layer, valid",
    [
        ("vision", 4, r"\[-4, 3\]"),
        ("projector", -2, r"\[-1, 0\]"),
        ("language", 4, r"\[-4, 3\]"),
    ],
)
def test_layer_out_of_range_gives_the_valid_range(paths, stage, layer, valid):
    vlm = VLMEmbeddingTransformer(
        paths["idefics3"], stage=stage, layer=layer, pooling="mean"
    )
    with pytest.raises(ValueError, match=f"layer={layer} is out of range.*{valid}"):
        vlm.fit()


@pytest.mark.parametrize(
    "stage, pooling",
    [("vision", "cls"), ("vision", "pooler"), ("projector", "text_mean")],
)
def test_pooling_the_stage_lacks_lists_those_it_has(paths, stage, pooling):
    vlm = VLMEmbeddingTransformer(paths["smolvlm"], stage=stage, pooling=pooling)
    with pytest.raises(
        ValueError, match=f"pooling='{pooling}' is not available.*'mean', 'max'"
    ):
        vlm.fit()


# -- loading without torchvision ---------------------------------------------------------
def test_smolvlm_processor_loads_without_torchvision(paths, images):
    processor = SmolVLMAdapter.load_processor(paths["smolvlm"])
    assert isinstance(processor, transformers.SmolVLMProcessor)
    assert type(processor).__name__ == "SmolVLMProcessor"
    text = processor.apply_chat_template(
        _message("a cat"), add_generation_prompt=True, tokenize=False
    )
    batch = processor(images=[images[:1]], text=[text], return_tensors="pt")
    assert "pixel_attention_mask" in batch
    with pytest.raises(ImportError, match="pip install torchvision"):
        processor.video_processor(videos=[])


def test_idefics3_processor_is_the_plain_one(paths):
    processor = Idefics3Adapter.load_processor(paths["idefics3"])
    assert type(processor) is transformers.Idefics3Processor
