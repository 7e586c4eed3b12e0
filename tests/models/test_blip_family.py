"""What is special to BLIP-2 (OPT and T5 LMs) and InstructBLIP.

Every site against HF's own outputs (the post-layernormed CLS as ``pooler``, the
projected query tokens, T5's encoder as the language stage) is in
``test_family_matrix.py``.
"""

import numpy as np
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.testing._generative import make_tiny_blip2

from ._references import DEFAULT_PROMPT as DEFAULT


@pytest.fixture(scope="module")
def blip2(built):
    return built.path("blip2"), built.hf("blip2")


@pytest.fixture(scope="module")
def blip2_t5(built):
    return built.path("blip2_t5"), built.hf("blip2_t5")


@pytest.fixture(scope="module")
def instructblip(built):
    return built.path("instructblip"), built.hf("instructblip")


@pytest.fixture(scope="module")
def images(built):
    return built.images("blip2")


def test_blip2_projector_is_four_query_tokens(built):
    assert {ex.facts["projector_tokens"] for ex in built.reference("blip2")} == {4}


def test_instructblip_projector_reads_the_instruction(instructblip, images, extract):
    # without a prompt, the Q-Former reads the default instruction (the matrix
    # checks the values); another instruction changes them
    path, hf = instructblip
    X = extract(path, "projector", "mean", images, layer=0)
    other = hf.processor(images=images, text=["a"] * 3, return_tensors="pt")
    with torch.no_grad():
        changed = hf.model.get_image_features(
            pixel_values=other["pixel_values"],
            qformer_input_ids=other["qformer_input_ids"],
        ).pooler_output
    assert not np.allclose(X, changed.mean(1).numpy(), atol=1e-3)


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


def test_language_model_head_and_t5_decoder_never_run(blip2, blip2_t5, images, extract):
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


@pytest.mark.parametrize("name", ["blip2_t5", "instructblip_t5"])
def test_flan_t5_lora_adapts_the_encoder_and_decoder_blocks(built, name):
    # by default every linear layer of both T5 stacks' blocks (attention,
    # cross-attention, gated feed-forward), nothing outside them
    from skvlm.tuning._parts import family_parts, make_trainable

    adapter = load_adapter(built.path(name), device="cpu")
    trainable = make_trainable(adapter, family_parts(adapter), train="lora")
    adapted = {
        n.removeprefix("base_model.model.").split(".lora_A.")[0]
        for n in trainable.params
        if ".lora_A." in n
    }
    t5 = built.hf(name).model.language_model
    expected = {
        f"language_model.{stack}.block.{n}"
        for stack in ("encoder", "decoder")
        for n, module in getattr(t5, stack).block.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    assert adapted == expected
    assert any(".EncDecAttention." in n for n in adapted)
