"""What is special to LLaVA-1.5 and LLaVA-NeXT.

Every site against HF's own outputs (LLaVA, LLaVA-NeXT, and VipLLaVA through the
generic adapter) is in ``test_family_matrix.py``.
"""

import numpy as np
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter


@pytest.fixture(scope="module")
def llava(built):
    return built.path("llava"), built.hf("llava")


@pytest.fixture(scope="module")
def llava_next(built):
    return built.path("llava_next"), built.hf("llava_next")


@pytest.fixture(scope="module")
def images(built):
    return built.images("llava")


def test_llava_language_last_entry_carries_final_norm(llava, images, extract):
    path, hf = llava
    X = extract(path, "language", "last", images[:1], layer=-1)
    inputs = hf.processor(
        images=images[:1],
        text=["USER: <image>\nWhat type of object is in this photo? ASSISTANT:"],
        return_tensors="pt",
    )
    lm = hf.model.model.language_model
    captured = []
    handle = lm.layers[-1].register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        with torch.no_grad():
            hf.model.model(**inputs)
            normed = lm.norm(captured[0])[0, -1]
    finally:
        handle.remove()
    np.testing.assert_allclose(X[0], normed.numpy(), atol=1e-5)


def test_llava_next_images_differ_in_views_and_projector_tokens(built):
    # Otherwise the matrix would not exercise padding of views and tokens.
    examples = built.reference("llava_next")
    assert len({example.facts["views"] for example in examples}) > 1
    assert len({example.facts["projector_tokens"] for example in examples}) > 1


# -- prompts and errors ---------------------------------------------------------------


def test_prompt_formatting(llava, llava_next):
    llava_adapter = load_adapter(llava[0], device="cpu")
    assert llava_adapter.format_prompt(None) == (
        "USER: <image>\nWhat type of object is in this photo? ASSISTANT:"
    )
    custom = "USER: <image>\nName it. ASSISTANT: It is a"
    assert llava_adapter.format_prompt(custom) == custom
    next_adapter = load_adapter(llava_next[0], device="cpu")
    assert next_adapter.format_prompt("Name it.") == "[INST] <image>\nName it. [/INST]"


def test_prompt_with_placeholder_is_used_as_is(llava, images, extract):
    path, hf = llava
    text = "USER: <image>\nName it. ASSISTANT: It is a"
    X = extract(path, "language", "last", images[:1], [text], layer=-1)
    inputs = hf.processor(images=images[:1], text=[text], return_tensors="pt")
    with torch.no_grad():
        last = hf.model.model(**inputs).last_hidden_state[0, -1]
    np.testing.assert_allclose(X[0], last.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "params,message",
    [
        (
            dict(stage="language", layer=4),
            r"stack has 4 entries; use a layer in \[-4, 3\]",
        ),
        (dict(stage="vision", layer=-5), r"use a layer in \[-4, 3\]"),
        (
            dict(stage="projector", layer=1),
            r"stack has 1 entries; use a layer in \[-1, 0\]",
        ),
        (dict(stage="projector", pooling="cls"), "available: 'mean', 'max'"),
        (dict(stage="language", pooling="cls"), "available: 'last', 'mean', 'max'"),
        (
            dict(stage="vision", layer=1, pooling="pooler"),
            "'cls', 'mean', 'max', or an",
        ),
    ],
)
def test_site_errors_name_the_valid_choices(llava, params, message):
    with pytest.raises(ValueError, match=message):
        VLMEmbeddingTransformer(llava[0], device="cpu", **params).fit()


def test_unknown_family_error_lists_these_families():
    from types import SimpleNamespace

    from skvlm.models._registry import adapter_class

    with pytest.raises(ValueError, match="not supported by skvlm") as info:
        adapter_class(SimpleNamespace(model_type="no_such_model_type"))
    for family in (
        "llava (llava)",
        "llava_next (llava_next)",
        "paligemma (paligemma)",
        "blip-2 (blip-2)",
        "instructblip (instructblip)",
    ):
        assert family in str(info.value)
