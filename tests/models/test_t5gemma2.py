"""T5Gemma 2: what is special to it beyond the family matrix (test_vlm_families.py).

The language stage is the encoder's text stack, so the decoder never runs;
the encoder counts positions from the first token, so padding is on the
right whatever the tokenizer says; LoRA adapts both stacks' layers and
leaves the SigLIP tower inside the encoder alone.
"""

import numpy as np
import pandas as pd
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter

from ._references import expected

NAME = "t5gemma2"


def _X(built):
    return pd.DataFrame({"image": built.images(NAME), "prompt": built.prompts(NAME)})


def test_the_decoder_never_runs(built):
    model = load_adapter(built.path(NAME), device="cpu").model
    ran = []
    handle = model.get_decoder().register_forward_pre_hook(lambda *a: ran.append(1))
    try:
        VLMEmbeddingTransformer(
            built.path(NAME), stage="language", device="cpu"
        ).fit_transform(_X(built))
    finally:
        handle.remove()
    assert ran == []


def test_left_padding_tokenizer_does_not_change_the_language_stage(built, monkeypatch):
    tokenizer = load_adapter(built.path(NAME), device="cpu").processor.tokenizer
    assert tokenizer.padding_side == "left"  # as Gemma's
    got = VLMEmbeddingTransformer(
        built.path(NAME),
        stage="language",
        pooling="mean",
        layer=[0, -1],
        batch_size=4,
        device="cpu",
    ).fit_transform(_X(built))
    np.testing.assert_allclose(
        got, expected(built.reference(NAME), "language", [0, -1], "mean"), atol=1e-5
    )


def test_lora_adapts_both_stacks_and_not_the_tower(built):
    from skvlm.tuning._parts import family_parts, make_trainable

    adapter = load_adapter(built.path(NAME), device="cpu")
    trainable = make_trainable(adapter, family_parts(adapter), train="lora")
    adapted = {
        n.removeprefix("base_model.model.").split(".lora_A.")[0]
        for n in trainable.params
        if ".lora_A." in n
    }
    model = built.hf(NAME).model
    encoder = model.get_encoder()
    stacks = {
        "model.encoder.text_model.layers": encoder.text_model.layers,
        "model.decoder.layers": model.get_decoder().layers,
    }
    want = {
        f"{prefix}.{n}"
        for prefix, layers in stacks.items()
        for n, module in layers.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    assert adapted == want
    assert not any("vision_tower" in n for n in trainable.params)
