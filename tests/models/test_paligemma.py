"""PaliGemma through VLMEmbeddingTransformer, against HF's own outputs."""

import numpy as np
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.testing._generative import make_tiny_paligemma

from .test_llava_family import (
    HF,
    LANGUAGE_POOLINGS,
    LAYERS,
    PROMPTS,
    assert_rows_match,
    extract,
    language_reference,
    make_images,
    one_thread,  # noqa: F401 (autouse fixture)
    reduce,
)

# PaliGemma's processor builds training labels with a numpy call that warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


@pytest.fixture(scope="module")
def paligemma(tmp_path_factory):
    path = make_tiny_paligemma(tmp_path_factory.mktemp("paligemma"))
    return path, HF(path)


@pytest.fixture(scope="module")
def images():
    return make_images()


def hf_inputs(hf, image, prompt):
    inputs = hf.processor(
        images=[image], text=["<image>" + prompt], return_tensors="pt"
    )
    inputs.pop("labels")
    return inputs


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_vision_matches_tower_hidden_states(paligemma, images, pooling):
    # SigLIP has no CLS: mean and max run over every token
    path, hf = paligemma
    X = extract(path, "vision", pooling, images)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        states = hf.model.model.vision_tower(
            **pixels, output_hidden_states=True
        ).hidden_states
    references = [
        {k: reduce(states[k][i], pooling).numpy() for k in LAYERS} for i in range(3)
    ]
    assert_rows_match(X, references, dim=32)


def test_vision_pooler_only_with_the_attention_head(paligemma, tmp_path, images):
    # PaliGemma's checkpoints drop SigLIP's pooling head: no 'pooler' then
    with pytest.raises(ValueError, match="available: 'mean', 'max', or an int"):
        VLMEmbeddingTransformer(paligemma[0], layer=-1, pooling="pooler").fit()
    path = make_tiny_paligemma(tmp_path, vision_config=dict(vision_use_head=True))
    X = extract(path, "vision", "pooler", images, layer=-1)
    hf = HF(path)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        tower = hf.model.model.vision_tower
        expected = tower.head(tower(**pixels).last_hidden_state)
    np.testing.assert_allclose(X, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_projector_matches_image_features(paligemma, images, pooling):
    path, hf = paligemma
    X = extract(path, "projector", pooling, images, layer=0)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        tokens = hf.model.model.get_image_features(**pixels).pooler_output
    assert tokens.shape[1] == 16
    expected = torch.stack([reduce(t, pooling) for t in tokens]).numpy()
    np.testing.assert_allclose(X, expected, atol=1e-5)


@pytest.mark.parametrize("pooling", LANGUAGE_POOLINGS)
def test_language_matches_hf_hidden_states(paligemma, images, pooling):
    # prompts of different lengths: the batch is padded, HF runs one by one with
    # the prefix's token_type_ids
    path, hf = paligemma
    X = extract(path, "language", pooling, images, PROMPTS)
    references = []
    for image, prompt in zip(images, PROMPTS, strict=True):
        inputs = hf_inputs(hf, image, prompt)
        with torch.no_grad():
            states = hf.model.model(**inputs, output_hidden_states=True).hidden_states
        assert len(states) == 4
        references.append(
            language_reference(
                states,
                inputs["input_ids"][0],
                hf.model.config.image_token_id,
                hf.specials,
                pooling,
            )
        )
    assert_rows_match(X, references, dim=32)


def test_language_uses_the_bidirectional_prefix(paligemma, images):
    path, hf = paligemma
    X = extract(path, "language", "mean", images[:1], PROMPTS[:1], layer=-1)
    inputs = hf_inputs(hf, images[0], PROMPTS[0])
    # token_type_ids 1 mark a causal suffix: the same tokens without the prefix
    inputs["token_type_ids"] = torch.ones_like(inputs["token_type_ids"])
    with torch.no_grad():
        causal = hf.model.model(**inputs).last_hidden_state[0].mean(0)
    assert not np.allclose(X[0], causal.numpy(), atol=1e-3)


def test_layer_zero_is_the_scaled_embedding_gemma_blocks_receive(paligemma, images):
    # Gemma scales its text embeddings by sqrt(hidden size); HF's hidden_states[0]
    # (and so skvlm's layer 0) is the scaled input of the first block.
    path, hf = paligemma
    X = extract(path, "language", "last", images[:1], PROMPTS[:1], layer=0)
    inputs = hf_inputs(hf, images[0], PROMPTS[0])
    last_id = inputs["input_ids"][0, -1]
    raw = hf.model.model.language_model.embed_tokens.weight[last_id].detach()
    np.testing.assert_allclose(X[0], (raw * 32**0.5).numpy(), atol=1e-5)


def test_padding_invariance(paligemma, images):
    path, _ = paligemma
    batched = extract(path, "language", "mean", images, PROMPTS, batch_size=3)
    single = extract(path, "language", "mean", images, PROMPTS, batch_size=1)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_prompt_formatting(paligemma):
    adapter = load_adapter(paligemma[0], device="cpu")
    assert adapter.format_prompt(None) == "<image>What type of object is in this photo?"
    assert adapter.format_prompt("caption en") == "<image>caption en"
    assert adapter.format_prompt("<image>answer en what") == "<image>answer en what"


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(stage="vision", pooling="cls"), "available: 'mean', 'max', or an int"),
        (dict(stage="language", layer=4), r"use a layer in \[-4, 3\]"),
        (dict(stage="projector", pooling="pooler"), "available: 'mean', 'max'"),
    ],
)
def test_site_errors_name_the_valid_choices(paligemma, params, message):
    with pytest.raises(ValueError, match=message):
        VLMEmbeddingTransformer(paligemma[0], device="cpu", **params).fit()
