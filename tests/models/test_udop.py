"""UDOP: what is special to it beyond the family matrix (test_vlm_families.py).

Both stages are the encoder (the decoder never runs); the patches a word's
box covers leave the sequence, as HF's own encoder mask says; the projector
is refused with its reason; prompts without words are refused; LoRA adapts
the encoder's and the decoder's blocks, not the patch embedding.
"""

import re

import pandas as pd
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import TRAITS, load_adapter
from skvlm.models._udop import kept_patches

NAME = "udop"


def _X(built):
    return pd.DataFrame({"image": built.images(NAME), "prompt": built.prompts(NAME)})


@pytest.mark.parametrize("stage", ["vision", "language"])
def test_the_decoder_never_runs(built, stage):
    model = load_adapter(built.path(NAME), device="cpu").model
    ran = []
    handle = model.get_decoder().register_forward_pre_hook(lambda *a: ran.append(1))
    try:
        VLMEmbeddingTransformer(
            built.path(NAME), stage=stage, device="cpu"
        ).fit_transform(_X(built))
    finally:
        handle.remove()
    assert ran == []


def test_kept_patches_are_those_of_hfs_encoder_mask(built):
    # words with boxes over the page (two on one patch), padding on the left
    hf = built.hf(NAME)
    words = [["a", "cat", "dog"], ["red"]]
    boxes = [
        [[0, 0, 100, 100], [600, 0, 900, 200], [610, 10, 880, 190]],
        [[300, 700, 420, 760]],
    ]
    inputs = hf.processor(
        images=built.images(NAME)[:2],
        text=words,
        boxes=boxes,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    with torch.no_grad():
        mask = hf.model.get_encoder()(**inputs).attention_mask
    n_words = inputs["input_ids"].shape[1]
    grid = hf.model.config.image_size // hf.model.config.patch_size
    got = kept_patches(inputs["bbox"], grid)
    assert torch.equal(got, mask[:, n_words:].bool())
    assert got.sum(1).tolist() != [grid * grid] * 2  # some patches did leave


def test_the_projector_is_refused_with_its_reason(built):
    reason = TRAITS[NAME].unsupported["projector"]
    vlm = VLMEmbeddingTransformer(built.path(NAME), stage="projector", device="cpu")
    with pytest.raises(
        ValueError, match=rf"stage='projector'.*udop.*{re.escape(reason)}"
    ):
        vlm.fit_transform(_X(built))


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("  ", "at least one word"), ("What is <image> here?", "Remove it")],
)
def test_a_prompt_udop_cannot_read_names_the_fix(built, prompt, message):
    adapter = load_adapter(built.path(NAME), device="cpu")
    with pytest.raises(ValueError, match=message):
        adapter.prepare(built.images(NAME)[:1], [prompt])


def test_lora_adapts_both_stacks_and_not_the_patch_embedding(built):
    from skvlm.tuning._parts import family_parts, make_trainable

    adapter = load_adapter(built.path(NAME), device="cpu")
    trainable = make_trainable(adapter, family_parts(adapter), train="lora")
    adapted = {
        n.removeprefix("base_model.model.").split(".lora_A.")[0]
        for n in trainable.params
        if ".lora_A." in n
    }
    assert {n.split(".")[0] for n in adapted} == {"encoder", "decoder"}
    blocks = {".".join(n.split(".")[:3]) for n in adapted}
    assert blocks == {f"{s}.block.{i}" for s in ("encoder", "decoder") for i in (0, 1)}
    assert not [n for n in trainable.params if "patch" in n]


def test_text_prior_is_hfs_model_over_the_words_alone(built):
    # HF's UDOP over the prompt's words (no pixels, boxes as floats: HF casts
    # them only where it merges the patches), the decoder reading its start
    # token, the answer prefix and each class name
    from skvlm.classifiers import VLMGenerativeClassifier

    names, answer_prefix, prompt = ["cat", "red car"], "The answer is", "What is it?"
    clf = VLMGenerativeClassifier(
        built.path(NAME),
        class_names=names,
        calibration="text_prior",
        answer_prefix=answer_prefix,
        prompt=prompt,
        device="cpu",
    ).fit(built.images(NAME)[:2], [0, 1])
    hf = built.hf(NAME)
    tokenizer = hf.processor.tokenizer
    words = prompt.split()
    text = tokenizer([words], boxes=[[[0, 0, 0, 0]] * len(words)], return_tensors="pt")

    def ids(s):
        return tokenizer(text_target=s, add_special_tokens=False)["input_ids"]

    answer = ids(answer_prefix)
    start = [hf.model.config.decoder_start_token_id, *answer]
    want = []
    for name in names:
        target = ids(f"{answer_prefix} {name}")[len(answer) :]
        with torch.no_grad():
            logits = hf.model(
                input_ids=text["input_ids"],
                attention_mask=text["attention_mask"],
                bbox=text["bbox"].float(),
                decoder_input_ids=torch.tensor([start + target]),
            ).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        first = len(start) - 1
        want.append(sum(logp[first + k, t].item() for k, t in enumerate(target)))
    torch.testing.assert_close(
        torch.as_tensor(clf.prior_, dtype=torch.float64),
        torch.tensor(want, dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
