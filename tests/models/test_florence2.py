"""Florence-2: what is special to it beyond the family matrix (test_vlm_families.py).

The DaViT tower's entries each have their own width; a shallow entry runs only
the blocks before it; the language stage is the BART encoder, so the decoder
never runs; padding is on the right whatever the tokenizer says (BART's
positions count from the first token).
"""

import numpy as np
import pandas as pd
import pytest

from skvlm import VLMEmbeddingTransformer
from skvlm.models import describe_sites, load_adapter

from ._references import expected

NAME = "florence2"


def _vlm(built, stage, **params):
    return VLMEmbeddingTransformer(
        built.path(NAME), stage=stage, device="cpu", batch_size=4, **params
    )


def _X(built):
    return pd.DataFrame({"image": built.images(NAME), "prompt": built.prompts(NAME)})


def _ran(blocks, run):
    ran = []
    handles = [
        block.register_forward_hook(lambda *args, i=i: ran.append(i))
        for i, block in enumerate(blocks)
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return ran


def test_vision_widths_follow_each_davit_entry(built):
    examples = built.reference(NAME)
    states = examples[0].stages["vision"].states
    layers = [-1, 0, 2]
    vlm = _vlm(built, "vision", layer=layers, pooling="max")
    got = vlm.fit_transform(built.images(NAME))
    assert vlm.pooling_ == "max"
    assert vlm.layer_widths_ == [states[k].shape[-1] for k in layers]
    np.testing.assert_allclose(
        got, expected(examples, "vision", layers, "max"), atol=1e-5
    )
    sites = describe_sites(built.path(NAME))
    vision = sites[(sites.stage == "vision") & (sites.pooling == "mean")]
    assert list(vision.dim) == [s.shape[-1] for s in states]


@pytest.mark.parametrize(
    "stage, pooling", [("vision", "mean"), ("projector", "mean"), ("language", "last")]
)
def test_auto_pooling(built, stage, pooling):
    vlm = _vlm(built, stage)
    got = vlm.fit_transform(_X(built) if stage == "language" else built.images(NAME))
    assert vlm.pooling_ == pooling
    np.testing.assert_allclose(
        got, expected(built.reference(NAME), stage, [-1], pooling), atol=1e-5
    )


def test_a_shallow_vision_entry_runs_only_the_blocks_before_it(built):
    tower = load_adapter(built.path(NAME), device="cpu").model.model.vision_tower
    blocks = [block for stage in tower.blocks for block in stage]
    ran = _ran(
        blocks,
        lambda: _vlm(built, "vision", layer=1, pooling="mean").fit_transform(
            built.images(NAME)[:2]
        ),
    )
    assert ran == [0]


def test_the_language_stage_is_the_encoder_and_the_decoder_never_runs(built):
    model = load_adapter(built.path(NAME), device="cpu").model
    bart = model.model.language_model
    entries = len(built.reference(NAME)[0].stages["language"].states)
    assert entries == len(bart.encoder.layers) + 1
    decoder = _ran(
        bart.decoder.layers,
        lambda: _vlm(built, "language", pooling="mean").fit_transform(_X(built)),
    )
    assert decoder == []
    encoder = _ran(
        bart.encoder.layers,
        lambda: _vlm(built, "language", layer=1, pooling="mean").fit_transform(
            _X(built)[:2]
        ),
    )
    assert encoder == [0]


@pytest.mark.parametrize("stage", ["vision", "projector"])
def test_vision_and_projector_never_run_the_language_model(built, stage):
    bart = load_adapter(built.path(NAME), device="cpu").model.model.language_model
    calls = []
    handle = bart.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        _vlm(built, stage, pooling="mean").fit_transform(built.images(NAME))
    finally:
        handle.remove()
    assert calls == []


def test_left_padding_tokenizer_does_not_change_the_language_stage(built, monkeypatch):
    tokenizer = load_adapter(built.path(NAME), device="cpu").processor.tokenizer
    monkeypatch.setattr(tokenizer, "padding_side", "left")
    got = _vlm(built, "language", pooling="mean", layer=[0, -1]).fit_transform(
        _X(built)
    )
    np.testing.assert_allclose(
        got, expected(built.reference(NAME), "language", [0, -1], "mean"), atol=1e-5
    )


def test_a_placeholder_after_the_text_names_the_fix(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    assert adapter.format_prompt("<image>a cat") == "a cat"
    with pytest.raises(ValueError, match="only open it"):
        adapter.format_prompt("a cat <image>")
