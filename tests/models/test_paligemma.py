"""What is special to PaliGemma.

Every site against HF's own outputs (SigLIP tower without CLS, the projected
image tokens, the language stage with the bidirectional prefix) is in
``test_family_matrix.py``.
"""

import numpy as np
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.testing._generative import make_tiny_paligemma

from ._references import HF, PROMPTS, paligemma_inputs

# PaliGemma's processor builds training labels with a numpy call that warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


@pytest.fixture(scope="module")
def paligemma(built):
    return built.path("paligemma"), built.hf("paligemma")


@pytest.fixture(scope="module")
def images(built):
    return built.images("paligemma")


def hf_inputs(hf, image, prompt):
    return paligemma_inputs(hf.processor, image, prompt)


def test_projector_is_sixteen_image_tokens(built):
    assert {ex.facts["projector_tokens"] for ex in built.reference("paligemma")} == {16}


def test_vision_pooler_only_with_the_attention_head(
    paligemma, tmp_path, images, extract
):
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


def test_language_uses_the_bidirectional_prefix(paligemma, images, extract):
    path, hf = paligemma
    X = extract(path, "language", "mean", images[:1], PROMPTS[:1], layer=-1)
    inputs = hf_inputs(hf, images[0], PROMPTS[0])
    # token_type_ids 1 mark a causal suffix: the same tokens without the prefix
    inputs["token_type_ids"] = torch.ones_like(inputs["token_type_ids"])
    with torch.no_grad():
        causal = hf.model.model(**inputs).last_hidden_state[0].mean(0)
    assert not np.allclose(X[0], causal.numpy(), atol=1e-3)


def test_layer_zero_is_the_scaled_embedding_gemma_blocks_receive(
    paligemma, images, extract
):
    # Gemma scales its text embeddings by sqrt(hidden size); HF's hidden_states[0]
    # (and so skvlm's layer 0) is the scaled input of the first block.
    path, hf = paligemma
    X = extract(path, "language", "last", images[:1], PROMPTS[:1], layer=0)
    inputs = hf_inputs(hf, images[0], PROMPTS[0])
    last_id = inputs["input_ids"][0, -1]
    raw = hf.model.model.language_model.embed_tokens.weight[last_id].detach()
    np.testing.assert_allclose(X[0], (raw * 32**0.5).numpy(), atol=1e-5)


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
