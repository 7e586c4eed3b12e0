"""Every family, stage, pooling and layer equals HF's own outputs, pooled by hand.

The matrix runs over :data:`._families.FAMILIES`: skvlm extracts padded
batches (images of different sizes, prompts of different lengths); the
references come from transformers alone, one example at a time or unpadded with
HF's own masks. The family files keep only what is special to a family.
"""

import re

import numpy as np
import pandas as pd
import pytest

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter

from ._families import BY_NAME, FAMILIES
from ._references import expected

LAYERS = [0, 1, -1]


def _cases(poolings_of):
    return [
        pytest.param(
            family.name,
            stage,
            pooling,
            id=f"{family.name}-{stage}-{pooling}",
            marks=family.marks,
        )
        for family in FAMILIES
        for stage in family.poolings
        for pooling in poolings_of(family, stage)
    ]


def _stages(filter_=lambda family, stage: True):
    return [
        pytest.param(
            family.name, stage, id=f"{family.name}-{stage}", marks=family.marks
        )
        for family in FAMILIES
        for stage in family.poolings
        if filter_(family, stage)
    ]


SITES = _cases(lambda family, stage: family.poolings[stage])
# What padding and batch composition could change: the attention mask (mean),
# the last valid position (last) and the shifted image/text masks.
BATCH_POOLINGS = {
    "vision": ("mean",),
    "projector": ("mean",),
    "language": ("mean", "last", "image_mean", "text_mean"),
}
BATCHES = _cases(
    lambda family, stage: (
        [p for p in BATCH_POOLINGS[stage] if p in family.poolings[stage]]
        or family.poolings[stage][:1]
    )
)


def _X(built, name, stage):
    """The test images, with a prompt column at the language stage."""
    images = built.images(name)
    if stage != "language":
        return images
    return pd.DataFrame({"image": images, "prompt": built.prompts(name)})


def _n_entries(built, name, stage):
    return len(built.reference(name)[0].stages[stage].states)


def _layers(built, name, stage, pooling):
    if pooling == "pooler":
        return [-1]  # the model's pooled output exists at the last entry only
    return LAYERS if _n_entries(built, name, stage) > 1 else [0, -1]


def _vlm(built, name, stage, **params):
    return VLMEmbeddingTransformer(
        built.path(name),
        stage=stage,
        batch_size=BY_NAME[name].batch_size,
        device="cpu",
        **params,
    )


@pytest.mark.parametrize("name, stage, pooling", SITES)
def test_site_equals_hf(built, name, stage, pooling):
    examples = built.reference(name)
    layers = _layers(built, name, stage, pooling)
    X = _X(built, name, stage)
    # A list of layers, in an order that is not the stack's, concatenates in
    # the order given; each single layer (its own early exit) gives its part.
    in_order = layers[-1:] + layers[:-1]
    vlm = _vlm(built, name, stage, layer=in_order, pooling=pooling)
    got = vlm.fit_transform(X)
    assert vlm.family_ == BY_NAME[name].family
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, expected(examples, stage, in_order, pooling), atol=1e-5
    )
    for layer in layers:
        alone = vlm.set_params(layer=layer).fit_transform(X)
        assert alone.dtype == np.float32
        np.testing.assert_allclose(
            alone,
            expected(examples, stage, [layer], pooling),
            atol=1e-5,
            err_msg=f"layer={layer} alone",
        )


@pytest.mark.parametrize("name, stage", _stages())
def test_auto_pooling_is_the_documented_default(built, name, stage):
    # cls (else mean) at the vision stage, the model's pooled output at the
    # CLIP/SigLIP projector (else mean), last at the language stage.
    offered = BY_NAME[name].poolings[stage]
    default = {
        "vision": "cls" if "cls" in offered else "mean",
        "projector": "pooler" if "pooler" in offered else "mean",
        "language": "last",
    }[stage]
    vlm = _vlm(built, name, stage)  # layer=-1, pooling="auto"
    got = vlm.fit_transform(_X(built, name, stage))
    assert vlm.pooling_ == default
    assert vlm.n_features_out_ == got.shape[1]
    np.testing.assert_allclose(
        got, expected(built.reference(name), stage, [-1], default), atol=1e-5
    )


@pytest.mark.parametrize("name, stage, pooling", BATCHES)
def test_batch_composition_does_not_change_results(
    built, name, stage, pooling, monkeypatch
):
    # batch size, row order and, at the language stage, the tokenizer's padding
    # side
    X = _X(built, name, stage)
    layers = _layers(built, name, stage, pooling)
    vlm = _vlm(built, name, stage, layer=layers, pooling=pooling)
    padded = vlm.fit_transform(X)
    reversed_rows = vlm.transform(X[::-1])[::-1]
    one_by_one = vlm.set_params(batch_size=1).transform(X)
    all_at_once = vlm.set_params(batch_size=len(X)).transform(X)
    others = [reversed_rows, one_by_one, all_at_once]
    if stage == "language":
        tokenizer = load_adapter(built.path(name), device="cpu").processor.tokenizer
        monkeypatch.setattr(tokenizer, "padding_side", "right")
        others.append(vlm.set_params(batch_size=BY_NAME[name].batch_size).transform(X))
    for other in others:
        np.testing.assert_allclose(other, padded, atol=1e-5)


@pytest.mark.parametrize(
    "name, stage", _stages(lambda family, stage: stage in family.blocks)
)
def test_a_shallow_layer_runs_only_the_blocks_before_it(built, name, stage):
    model = load_adapter(built.path(name), device="cpu").model
    blocks = BY_NAME[name].blocks[stage](model)
    ran = []
    handles = [
        block.register_forward_hook(lambda *args, i=i: ran.append(i))
        for i, block in enumerate(blocks)
    ]
    try:
        X = _X(built, name, stage)
        _vlm(built, name, stage, layer=1, pooling="mean").fit_transform(X[:2])
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0]


@pytest.mark.parametrize(
    "name, stage",
    _stages(lambda family, stage: family.language_model and stage != "language"),
)
def test_vision_and_projector_never_run_the_language_model(built, name, stage):
    model = load_adapter(built.path(name), device="cpu").model
    calls = []
    handle = (
        BY_NAME[name]
        .language_model(model)
        .register_forward_pre_hook(lambda *args: calls.append(1))
    )
    try:
        _vlm(built, name, stage, pooling="mean").fit_transform(built.images(name))
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize("name, stage", _stages())
def test_stack_size_is_hfs_and_out_of_range_layers_say_so(built, name, stage):
    # HF's own count of entries (embeddings + one per block, or the projector's
    # outputs) bounds the layers; one past either end names the valid range.
    n = _n_entries(built, name, stage)
    for layer in (n, -n - 1):
        vlm = _vlm(built, name, stage, layer=layer, pooling="mean")
        valid = re.escape(f"[{-n}, {n - 1}]")
        with pytest.raises(ValueError, match=f"layer={layer} is out of range.*{valid}"):
            vlm.fit()
