"""The tuner's training computations against independent references.

- Before any step the adapted model (LoRA, projector or full training) computes the
  base model's logits, in every family.
- The generation loss equals Hugging Face's own ``labels=`` loss with the prompt
  masked, in every family; PaliGemma's processor builds the same rows from a
  ``suffix``.
- The pooled site of the cross-entropy objective equals HF's ``hidden_states[-1]``
  pooled by hand.
"""

import numpy as np
import pytest
import torch

from skvlm.models import load_adapter
from skvlm.testing import GENERATIVE_FAMILIES, random_images
from skvlm.tuning._batches import (
    IGNORE,
    answer_ids,
    generation_batch,
    generation_loss_sum,
    pooled_site,
)
from skvlm.tuning._parts import family_parts, make_trainable

# PaliGemma's processor calls numpy in a way numpy 2 warns about (not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)

FAMILIES = sorted(GENERATIVE_FAMILIES)
PROMPTS = ["What type of object is in this photo?", "What is it?", "Describe it."]
ANSWERS = ["The photo features a cat.", "a dog", "red car and a blue bird."]


def _inputs(adapter):
    images = random_images(3, seed=4, sizes=[(32, 32), (40, 24), (24, 48)])
    prompts = [adapter.format_prompt(p) for p in PROMPTS]
    return images, prompts


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("train", ["lora", "full"])
def test_adapted_model_computes_the_base_logits_before_any_step(
    family, train, family_paths
):
    adapter = load_adapter(family_paths(family), device="cpu")
    trainable = make_trainable(
        adapter, family_parts(adapter), train=train, lora={"r": 4, "lora_dropout": 0.1}
    )
    assert trainable.params  # something trains
    images, prompts = _inputs(adapter)
    inputs = dict(adapter.prepare(images, prompts))
    trainable.runner.eval()
    with torch.no_grad():
        base = adapter.model(**inputs).logits
        adapted = trainable.runner(**inputs).logits
    assert base.shape == adapted.shape
    torch.testing.assert_close(adapted, base, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_loss_equals_hf_labels_loss(family, family_paths):
    adapter = load_adapter(family_paths(family), device="cpu")
    images, prompts = _inputs(adapter)
    answers = answer_ids(adapter.processor.tokenizer, ANSWERS)
    batch = generation_batch(adapter, images, prompts, answers)
    with torch.no_grad():
        loss_sum, n_tokens = generation_loss_sum(adapter.model, batch)
        # HF's own loss: full logits, its shift, its masking, its mean
        hf = adapter.model(**batch.inputs, labels=batch.labels, use_cache=False)
    assert n_tokens == sum(len(a) for a in answers)
    torch.testing.assert_close(
        loss_sum / n_tokens, hf.loss.float(), rtol=1e-5, atol=1e-6
    )
    # the labels are the answers (with EOS), at the end of each row, nothing else
    for row, answer in zip(batch.labels, answers, strict=True):
        scored = row[row != IGNORE].tolist()
        assert scored == answer
        assert (row[-len(answer) :] != IGNORE).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_row_is_the_prompt_then_the_answer(family, family_paths):
    adapter = load_adapter(family_paths(family), device="cpu")
    images, prompts = _inputs(adapter)
    answers = answer_ids(adapter.processor.tokenizer, ANSWERS)
    batch = generation_batch(adapter, images, prompts, answers)
    for i in range(len(images)):
        alone = adapter.prepare([images[i]], [prompts[i]])
        prompt_ids = alone["input_ids"][0][alone["attention_mask"][0].bool()].tolist()
        row = batch.inputs["input_ids"][i][batch.inputs["attention_mask"][i].bool()]
        assert row.tolist() == prompt_ids + answers[i]
    # a row's logits do not depend on the other rows (padding is masked)
    with torch.no_grad():
        together = adapter.model(**batch.inputs, use_cache=False).logits
        one = generation_batch(adapter, images[1:2], prompts[1:2], answers[1:2])
        alone = adapter.model(**one.inputs, use_cache=False).logits
    n = alone.shape[1]
    torch.testing.assert_close(together[1, -n:], alone[0], rtol=1e-4, atol=1e-4)


def test_paligemma_rows_match_its_processor_suffix(family_paths):
    # PaliGemma's processor builds training rows itself from a suffix: an
    # independent construction of the same ids, token types and labels.
    adapter = load_adapter(family_paths("paligemma"), device="cpu")
    images, prompts = _inputs(adapter)
    answers = answer_ids(adapter.processor.tokenizer, ANSWERS)
    ours = generation_batch(adapter, images, prompts, answers)
    for i in range(len(images)):
        theirs = adapter.processor(
            images=[images[i]],
            text=[prompts[i]],
            suffix=[ANSWERS[i]],
            return_tensors="pt",
        )
        valid = ours.inputs["attention_mask"][i].bool()
        assert (
            ours.inputs["input_ids"][i][valid].tolist()
            == theirs["input_ids"][0].tolist()
        )
        assert (
            ours.inputs["token_type_ids"][i][valid].tolist()
            == theirs["token_type_ids"][0].tolist()
        )
        assert ours.labels[i][valid].tolist() == theirs["labels"][0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooled_site_is_hf_last_hidden_state_pooled(family, pooling, family_paths):
    adapter = load_adapter(family_paths(family), device="cpu")
    images, prompts = _inputs(adapter)
    inputs = dict(adapter.prepare(images, prompts))
    with torch.no_grad():
        got = pooled_site(adapter, inputs, pooling)
        out = adapter.model(**inputs, output_hidden_states=True, use_cache=False)
    out = getattr(out, "language_model_outputs", None) or out
    hidden = out.hidden_states[-1].float()
    mask = inputs["attention_mask"].bool()
    for i in range(len(images)):
        rows = hidden[i][mask[i]]
        expected = rows[-1] if pooling == "last" else rows.mean(0)
        np.testing.assert_allclose(
            got[i].numpy(), expected.numpy(), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "blip2", "paligemma"])
def test_the_saved_model_computes_the_trained_copy_logits(
    family, family_paths, tmp_path
):
    # LoRA merged out of place into the saved weights: the tuned model as every
    # skvlm tool loads it gives the logits of the copy that trained.
    from skvlm.tuning._parts import trained_state
    from skvlm.tuning._run import save_model

    adapter = load_adapter(family_paths(family), device="cpu")
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    trainable = make_trainable(
        adapter, family_parts(adapter), train="lora", lora={"r": 4}
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as if trained: LoRA's B is no longer zero
        for param in trainable.params.values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    images, prompts = _inputs(adapter)
    inputs = dict(adapter.prepare(images, prompts))
    trainable.runner.eval()
    with torch.no_grad():
        trained = trainable.runner(**inputs).logits
    net, state = trained_state(trainable, "lora")
    save_model(tmp_path, net, adapter.processor, state)
    tuned = load_adapter(str(tmp_path), device="cpu")
    with torch.no_grad():
        saved = tuned.model(**dict(tuned.prepare(images, prompts))).logits
    torch.testing.assert_close(saved, trained, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(saved, adapter.model(**inputs).logits, atol=1e-3)
    # the registry's base model: unchanged, bit for bit
    for name, value in adapter.model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_the_copy_shares_frozen_weights_and_owns_what_trains(family_paths):
    adapter = load_adapter(family_paths("llava"), device="cpu")
    base = dict(adapter.model.named_parameters())
    trainable = make_trainable(adapter, family_parts(adapter), train="lora")
    copy = dict(trainable.net.named_parameters())
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    q_copy = next(
        n for n in copy if n.endswith("layers.0.self_attn.q_proj.base_layer.weight")
    )
    assert copy[q_copy] is base[q]  # frozen: one tensor in memory
    projector = "model.multi_modal_projector.linear_1.weight"
    assert copy[projector] is not base[projector]  # trains: a copy of its own
    assert copy[projector].dtype == torch.float32 and copy[projector].requires_grad


# -- an encoder-decoder language model (Florence-2's BART, BLIP-2's and InstructBLIP's
# Flan-T5): the answer is the decoder's ----------------------------------------------
@pytest.fixture(
    scope="module", params=["florence2", "blip2_t5", "instructblip_t5", "t5gemma2"]
)
def encoder_decoder(request, tmp_path_factory):
    from skvlm import testing

    build = getattr(testing, f"make_tiny_{request.param}")
    return load_adapter(build(tmp_path_factory.mktemp(request.param)), device="cpu")


def test_encoder_decoder_loss_equals_hf_labels_loss(encoder_decoder):
    # HF's reading of a labelled answer: the tokenizer frames it (BART: <s> ...
    # </s>; T5: ... </s>), the decoder reads it shifted right behind the
    # decoder start token; the loss skips a leading <s> (the tuner scores the
    # answer and its EOS).
    adapter = encoder_decoder
    tokenizer = adapter.processor.tokenizer
    images, prompts = _inputs(adapter)
    answers = answer_ids(tokenizer, ANSWERS)
    batch = generation_batch(adapter, images, prompts, answers)
    start = getattr(
        adapter.model.config.get_text_config(), "decoder_start_token_id", None
    )
    if start is None:
        # T5Gemma 2: the bare answer and EOS, shifted by HF's own method
        framed = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
        framed = [ids + [tokenizer.eos_token_id] for ids in framed]
    else:
        framed = [tokenizer(a)["input_ids"] for a in ANSWERS]
    width = max(len(f) for f in framed)
    labels = torch.full((len(framed), width), -100)
    decoder = torch.full((len(framed), width), tokenizer.pad_token_id)
    for i, (answer, ids) in enumerate(zip(ANSWERS, framed, strict=True)):
        lead = ids.index(tokenizer(answer, add_special_tokens=False)["input_ids"][0])
        labels[i, lead : len(ids)] = torch.tensor(ids[lead:])  # no leading <s>
        if start is None:
            shift = adapter.model.prepare_decoder_input_ids_from_labels
            decoder[i, : len(ids)] = shift(torch.tensor([ids]))[0]
        else:
            decoder[i, : len(ids)] = torch.tensor([start, *ids[:-1]])
    inputs = adapter.prepare(images, prompts)
    with torch.no_grad():
        loss_sum, n_tokens = generation_loss_sum(adapter.model, batch)
        hf = adapter.model(
            **inputs, decoder_input_ids=decoder, labels=labels, use_cache=False
        )
    assert n_tokens == sum(len(a) for a in answers) == int((labels != -100).sum())
    torch.testing.assert_close(
        loss_sum / n_tokens, hf.loss.float(), rtol=1e-5, atol=1e-6
    )
    # the encoder rows are the prompts alone
    assert torch.equal(batch.inputs["input_ids"], inputs["input_ids"])


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_encoder_decoder_pooled_site_is_the_encoders_last_state(
    encoder_decoder, pooling
):
    adapter = encoder_decoder
    images, prompts = _inputs(adapter)
    inputs = dict(adapter.prepare(images, prompts))
    start = adapter.decoder_start_ids()[0]  # any decoder token: not the stage
    with torch.no_grad():
        got = pooled_site(adapter, inputs, pooling)
        out = adapter.model(
            **inputs,
            decoder_input_ids=torch.full((len(images), 1), start),
            use_cache=False,
        )
    # BLIP keeps its language model's outputs one level down
    hidden = getattr(out, "language_model_outputs", out).encoder_last_hidden_state
    mask = inputs["attention_mask"].bool()
    for i in range(len(images)):
        rows = hidden[i][mask[i]]
        expected = rows[-1] if pooling == "last" else rows.mean(0)
        np.testing.assert_allclose(
            got[i].numpy(), expected.numpy(), rtol=1e-5, atol=1e-5
        )
