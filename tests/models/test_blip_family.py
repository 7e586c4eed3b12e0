"""BLIP-2 (OPT and T5 LMs) and InstructBLIP through VLMEmbeddingTransformer, against HF."""

import numpy as np
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.testing._generative import make_tiny_blip2, make_tiny_instructblip

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

DEFAULT = "What type of object is in this photo?"
T5_TEXT = dict(
    model_type="t5",
    d_model=32,
    d_ff=64,
    num_layers=3,
    num_decoder_layers=1,
    num_heads=4,
    d_kv=8,
    decoder_start_token_id=0,
    is_encoder_decoder=True,
)


@pytest.fixture(scope="module")
def blip2(tmp_path_factory):
    path = make_tiny_blip2(tmp_path_factory.mktemp("blip2"))
    return path, HF(path)


@pytest.fixture(scope="module")
def blip2_t5(tmp_path_factory):
    path = make_tiny_blip2(tmp_path_factory.mktemp("blip2_t5"), text_config=T5_TEXT)
    return path, HF(path)


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory):
    path = make_tiny_instructblip(tmp_path_factory.mktemp("instructblip"))
    return path, HF(path)


@pytest.fixture(scope="module")
def images():
    return make_images()


@pytest.fixture(scope="module", params=["blip2", "instructblip"])
def family(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_vision_matches_tower_hidden_states(family, images, pooling):
    path, hf = family
    X = extract(path, "vision", pooling, images)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        states = hf.model.vision_model(
            **pixels, output_hidden_states=True
        ).hidden_states
    patches = torch.arange(states[0].shape[1]) > 0  # CLS is token 0
    references = [
        {k: reduce(states[k][i], pooling, patches=patches).numpy() for k in LAYERS}
        for i in range(len(images))
    ]
    assert_rows_match(X, references, dim=32)


def test_vision_pooler_is_post_layernormed_cls(blip2, images):
    path, hf = blip2
    X = extract(path, "vision", "pooler", images, layer=-1)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        tower = hf.model.vision_model
        expected = tower.post_layernorm(tower(**pixels).last_hidden_state[:, 0])
    np.testing.assert_allclose(X, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_blip2_projector_is_the_projected_query_tokens(blip2, images, pooling):
    path, hf = blip2
    X = extract(path, "projector", pooling, images, layer=0)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        queries = hf.model.get_image_features(**pixels).pooler_output  # (3, 4, 32)
    assert queries.shape[1] == 4
    expected = torch.stack([reduce(q, pooling) for q in queries]).numpy()
    np.testing.assert_allclose(X, expected, atol=1e-5)


def test_instructblip_projector_reads_the_instruction(instructblip, images):
    # without a prompt, the Q-Former reads the default instruction
    path, hf = instructblip
    X = extract(path, "projector", "mean", images, layer=0)
    inputs = hf.processor(images=images, text=[DEFAULT] * 3, return_tensors="pt")
    with torch.no_grad():
        queries = hf.model.get_image_features(
            pixel_values=inputs["pixel_values"],
            qformer_input_ids=inputs["qformer_input_ids"],
            qformer_attention_mask=inputs["qformer_attention_mask"],
        ).pooler_output
    np.testing.assert_allclose(X, queries.mean(1).numpy(), atol=1e-5)
    other = hf.processor(images=images, text=["a"] * 3, return_tensors="pt")
    with torch.no_grad():
        changed = hf.model.get_image_features(
            pixel_values=other["pixel_values"],
            qformer_input_ids=other["qformer_input_ids"],
        ).pooler_output
    assert not np.allclose(X, changed.mean(1).numpy(), atol=1e-3)


def _language_references(hf, images, texts, pooling, states_of):
    references = []
    for image, text in zip(images, texts, strict=True):
        inputs = hf.processor(images=[image], text=[text], return_tensors="pt")
        with torch.no_grad():
            states = states_of(hf.model, inputs)
        assert len(states) == 4  # embeddings + 3 blocks, the last after the final norm
        references.append(
            language_reference(
                states,
                inputs["input_ids"][0],
                hf.model.config.image_token_id,
                hf.specials,
                pooling,
            )
        )
    return references


def _decoder_states(model, inputs):
    return model(
        **inputs, output_hidden_states=True
    ).language_model_outputs.hidden_states


@pytest.mark.parametrize("pooling", LANGUAGE_POOLINGS)
def test_blip2_language_matches_hf_hidden_states(blip2, images, pooling):
    # prompts of different lengths: the batch is padded, HF runs one by one
    path, hf = blip2
    X = extract(path, "language", pooling, images, PROMPTS)
    texts = [f"Question: {p} Answer:" for p in PROMPTS]
    assert_rows_match(
        X, _language_references(hf, images, texts, pooling, _decoder_states), dim=32
    )


@pytest.mark.parametrize("pooling", LANGUAGE_POOLINGS)
def test_instructblip_language_matches_hf_hidden_states(instructblip, images, pooling):
    path, hf = instructblip
    X = extract(path, "language", pooling, images, PROMPTS)
    assert_rows_match(
        X, _language_references(hf, images, PROMPTS, pooling, _decoder_states), dim=32
    )


@pytest.mark.parametrize("pooling", ["last", "mean", "image_mean", "text_mean"])
def test_blip2_t5_language_stage_is_the_encoder(blip2_t5, images, pooling):
    path, hf = blip2_t5

    def encoder_states(model, inputs):
        start = torch.zeros(1, 1, dtype=torch.long)
        out = model(**inputs, decoder_input_ids=start, output_hidden_states=True)
        return out.language_model_outputs.encoder_hidden_states

    X = extract(path, "language", pooling, images, PROMPTS)
    texts = [f"Question: {p} Answer:" for p in PROMPTS]
    assert_rows_match(
        X, _language_references(hf, images, texts, pooling, encoder_states), dim=32
    )


@pytest.mark.parametrize("stage", ["language", "projector"])
def test_padding_invariance(family, images, stage):
    path, _ = family
    prompts = PROMPTS if stage == "language" else None
    layer = LAYERS if stage == "language" else 0
    batched = extract(path, stage, "mean", images, prompts, layer=layer, batch_size=3)
    single = extract(path, stage, "mean", images, prompts, layer=layer, batch_size=1)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_prompt_formatting(blip2, instructblip):
    blip = load_adapter(blip2[0], device="cpu")
    assert blip.format_prompt(None) == f"Question: {DEFAULT} Answer:"
    assert blip.format_prompt("<image>Caption:") == "Caption:"
    with pytest.raises(ValueError, match="placeholder may only open the prompt"):
        blip.format_prompt("Look: <image> what is it?")
    instruct = load_adapter(instructblip[0], device="cpu")
    assert instruct.format_prompt("Name the object.") == "Name the object."
    assert instruct.format_prompt(None) == DEFAULT


def test_language_model_with_project_out_is_refused(tmp_path, images):
    # OPT-350m-style LMs project their last state to another width
    text = dict(word_embed_proj_dim=16)
    adapter = load_adapter(make_tiny_blip2(tmp_path, text_config=text), device="cpu")
    batch = adapter.prepare(images[:1], [None])
    with pytest.raises(ValueError, match="project_out"):
        adapter.stack("language", batch)


@pytest.mark.parametrize(
    "params,message",
    [
        (
            dict(stage="language", layer=-5),
            r"stack has 4 entries; use a layer in \[-4, 3\]",
        ),
        (dict(stage="projector", layer=2), r"use a layer in \[-1, 0\]"),
        (dict(stage="projector", pooling="cls"), "available: 'mean', 'max'"),
        (dict(stage="vision", pooling="image_mean"), "available: 'cls', 'mean', 'max'"),
    ],
)
def test_site_errors_name_the_valid_choices(blip2, params, message):
    with pytest.raises(ValueError, match=message):
        VLMEmbeddingTransformer(blip2[0], device="cpu", **params).fit()


def test_language_model_head_and_t5_decoder_never_run(blip2, blip2_t5, images):
    ran = []
    handles = []
    for path, _ in (blip2, blip2_t5):
        lm = load_adapter(path, device="cpu").model.language_model
        handles.append(lm.lm_head.register_forward_hook(lambda *a: ran.append("head")))
        decoder = getattr(lm, "decoder", None)
        if decoder is not None:
            handles.append(decoder.register_forward_hook(lambda *a: ran.append("dec")))
    try:
        for path, _ in (blip2, blip2_t5):
            extract(path, "language", "last", images[:1], layer=-1)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == []
