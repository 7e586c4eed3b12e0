"""BLIP (v1): what it cannot offer says why; its prompts read as HF's generate
reads them, on either padding side.

The stages themselves are compared with HF in the family matrix
(``test_vlm_families.py``), the classifier and the tuner in
``test_family_classifiers.py``; InstructBLIP-Video's run in the torchvision
world (``test_torchvision_families.py``).
"""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.models import TRAITS, load_adapter
from skvlm.models._matrix import _vlm_cells
from skvlm.models._registry import adapter_classes
from skvlm.testing import TINY_MODELS
from skvlm.tuning._batches import answer_ids, generation_batch, generation_loss_sum

PROMPTS = ["a picture of", "a cat", "describe the object in this picture ."]


@pytest.fixture(scope="module")
def path(built):
    return built.path("blip")


@pytest.fixture(scope="module")
def images(built):
    return built.images("blip")[:3]


def test_projector_is_refused_with_its_reason(path, images):
    # the support matrix's cells of the type (test_support_matrix checks
    # that support_matrix() is made of them)
    reason = TRAITS["blip"].unsupported["projector"]
    cells = _vlm_cells("blip", adapter_classes(), TINY_MODELS["blip"])
    assert cells["projector"] == f"unsupported: {reason}"
    assert [cells[c] for c in ("vision", "language", "generative", "tuner")] == [
        "tested"
    ] * 4
    vlm = VLMEmbeddingTransformer(path, stage="projector", device="cpu")
    with pytest.raises(
        ValueError, match=rf"stage='projector'.*blip.*{re.escape(reason)}"
    ):
        vlm.fit_transform(images)


def test_image_mean_is_refused_with_its_reason(path, images):
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    vlm = VLMEmbeddingTransformer(
        path, stage="language", pooling="image_mean", device="cpu"
    )
    with pytest.raises(ValueError, match="pooling='image_mean'.*cross-attention"):
        vlm.fit_transform(X)


def test_left_padding_gives_the_same_rows(path, images, monkeypatch):
    # BLIP's positions are learned and counted from the first token: the rows
    # carry their own positions, so the padding side changes nothing
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    vlm = VLMEmbeddingTransformer(
        path, stage="language", layer=[0, -1], pooling="mean", device="cpu"
    )
    right = vlm.fit_transform(X)
    tokenizer = load_adapter(path, device="cpu").processor.tokenizer
    monkeypatch.setattr(tokenizer, "padding_side", "left")
    np.testing.assert_allclose(vlm.transform(X), right, atol=1e-5)


def test_answers_are_hfs_own_generate(path, images):
    # HF's generate on the processor's own unpadded output, one image at a time
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    want = []
    for image, prompt in zip(images, PROMPTS, strict=True):
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=3)
        # it read [DEC] + the prompt without its closing [SEP]
        new = out[0, inputs["input_ids"].shape[1] - 1 :]
        want.append(processor.decode(new, skip_special_tokens=True).strip())
    clf = VLMGenerativeClassifier(
        path,
        class_names=["cat", "car"],
        strategy="open_ended",
        max_new_tokens=3,
        batch_size=3,
        device="cpu",
    ).fit(images, [0, 1, 0])
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    assert clf.generate(X) == want


def test_training_rows_give_hfs_own_loss(path, images):
    # the tuner's rows, left-padded to the longest answer with their own
    # positions, give each answer the loss HF computes on its row alone
    # ([DEC] prompt answer [SEP], labels on the answer)
    adapter = load_adapter(path, device="cpu")
    tokenizer = adapter.processor.tokenizer
    answers = answer_ids(tokenizer, ["cat", "red car"])
    texts = ["a cat", "a picture of"]  # rows of 5 and 7 tokens
    prompts = [adapter.format_prompt(p) for p in texts]
    rows = generation_batch(adapter, images[:2], prompts, answers)
    assert rows.inputs["attention_mask"][0, 0] == 0  # a padded row
    with torch.no_grad():
        total, n = generation_loss_sum(adapter.model, rows)
    want = []
    for image, prompt, answer in zip(images[:2], texts, answers, strict=True):
        inputs = adapter.processor(images=[image], text=[prompt], return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        ids = [adapter.model.config.text_config.bos_token_id, *ids[1:-1], *answer]
        labels = [-100] * (len(ids) - len(answer)) + answer
        with torch.no_grad():
            loss = adapter.model(
                pixel_values=inputs["pixel_values"],
                input_ids=torch.tensor([ids]),
                labels=torch.tensor([labels]),
            ).loss
        want.append(float(loss) * len(answer))
    assert n == sum(len(a) for a in answers)
    np.testing.assert_allclose(float(total), sum(want), rtol=1e-5)


def test_text_prior_is_the_decoder_without_the_image(path, images):
    # HF's own text decoder, no encoder states (its blocks then skip their
    # cross-attention), over [DEC] prompt answer class
    names, answer, prompt = ["cat", "red car"], "a photo of a", "a picture of"
    clf = VLMGenerativeClassifier(
        path,
        class_names=names,
        calibration="text_prior",
        answer_prefix=answer,
        prompt=prompt,
        device="cpu",
    ).fit(images[:2], [0, 1])
    adapter = load_adapter(path, device="cpu")
    tokenizer = adapter.processor.tokenizer
    bos = adapter.model.config.text_config.bos_token_id
    prefix = tokenizer(f"{prompt} {answer}", add_special_tokens=False)["input_ids"]
    want = []
    for name in names:
        full = tokenizer(f"{prompt} {answer} {name}", add_special_tokens=False)
        ids = [bos, *full["input_ids"]]
        target = ids[1 + len(prefix) :]
        with torch.no_grad():
            logits = adapter.model.text_decoder(input_ids=torch.tensor([ids])).logits
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        start = 1 + len(prefix)
        want.append(sum(float(logp[start - 1 + k, t]) for k, t in enumerate(target)))
    np.testing.assert_allclose(clf.prior_, want, atol=1e-4)
