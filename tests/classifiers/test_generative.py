"""VLMGenerativeClassifier on tiny generative models.

Probabilistic scores are checked against a naive computation written here: one
full forward pass of prompt + answer prefix + class name per class, log-softmax
of the logits, gather of the name's tokens. The scored tokens follow the
documented definition ``ids(A + " " + name)[len(ids(A)):]``.
"""

import pickle

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score

from skvlm.classifiers._generative import VLMGenerativeClassifier
from skvlm.classifiers._generative_text import closed_set_prompt, match_class_name
from skvlm.models import load_adapter
from skvlm.testing import random_images
from skvlm.testing._generative import make_tiny_llava, make_tiny_qwen2_vl

NAMES = ["cat", "red car", "dog", "blue bird"]  # one- and two-token names
ANSWER = "The photo features a"
PROMPT = "What type of object is in this photo?"
Y = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory):
    return str(make_tiny_llava(tmp_path_factory.mktemp("gen_llava")))


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    return str(make_tiny_qwen2_vl(tmp_path_factory.mktemp("gen_qwen")))


@pytest.fixture(scope="module")
def images():
    return random_images(4, seed=1)


def _clf(path, **kwargs):
    kwargs = {"class_names": NAMES, "device": "cpu", "class_batch_size": 3, **kwargs}
    return VLMGenerativeClassifier(path, **kwargs)


def _naive_scores(path, images, *, reduction="sum", with_image=True):
    """One full forward pass per (image, class), written independently."""
    adapter = load_adapter(path, device="cpu")
    tokenizer = adapter.processor.tokenizer
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    out = np.zeros((len(images), len(NAMES)))
    for i, image in enumerate(images):
        batch = dict(adapter.prepare([image], [adapter.format_prompt(PROMPT)]))
        batch.pop("position_ids", None)
        if not with_image:
            keep = batch["input_ids"][0] != adapter.image_token_id
            batch = {"input_ids": batch["input_ids"][:, keep]}
        n_prompt = batch["input_ids"].shape[1]
        for c, name in enumerate(NAMES):
            joint = tokenizer(f"{ANSWER} {name}", add_special_tokens=False)["input_ids"]
            target = joint[len(answer) :]
            extra = torch.tensor([answer + target])
            full = dict(batch)
            full["input_ids"] = torch.cat([batch["input_ids"], extra], dim=1)
            if "attention_mask" in batch:
                full["attention_mask"] = torch.ones_like(full["input_ids"])
            if "mm_token_type_ids" in batch:
                full["mm_token_type_ids"] = torch.cat(
                    [batch["mm_token_type_ids"], torch.zeros_like(extra)], dim=1
                )
            with torch.no_grad():
                logits = adapter.model(**full).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            start = n_prompt + len(answer)
            values = [logp[start - 1 + k, t].item() for k, t in enumerate(target)]
            out[i, c] = np.sum(values) if reduction == "sum" else np.mean(values)
    return out


# -- probabilistic scores equal the naive per-class computation ----------------------
@pytest.mark.parametrize("family", ["llava", "qwen"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_scores_equal_naive(family, reduction, llava_path, qwen_path, images):
    path = llava_path if family == "llava" else qwen_path
    clf = _clf(path, reduction=reduction).fit(images, Y)
    # the chosen names: their tokens really are 1 and 2 long, so mean != sum
    assert sorted({len(t) for t in clf.class_token_ids_}) == [1, 2]
    expected = _naive_scores(path, images, reduction=reduction)
    np.testing.assert_allclose(clf.decision_function(images), expected, atol=1e-4)


def test_predict_proba_is_softmax_and_predict_argmax(llava_path, images):
    clf = _clf(llava_path).fit(images, Y)
    scores = _naive_scores(llava_path, images)
    expected = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(images), expected, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(images), np.argmax(scores, axis=1))


# -- calibration ------------------------------------------------------------------------
def test_prior_calibration_by_hand(llava_path, images):
    raw = _naive_scores(llava_path, images, reduction="mean")
    clf = _clf(llava_path, reduction="mean", calibration="prior", guidance=0.5)
    clf.fit(images, Y)
    np.testing.assert_allclose(clf.prior_, raw.mean(axis=0), atol=1e-4)
    expected = raw[:2] - 0.5 * raw.mean(axis=0)
    np.testing.assert_allclose(clf.decision_function(images[:2]), expected, atol=1e-4)


def test_text_prior_scores_the_prompt_without_image(llava_path, images):
    clf = _clf(llava_path, calibration="text_prior", guidance=2.0).fit(images, Y)
    prior = _naive_scores(llava_path, images[:1], with_image=False)[0]
    np.testing.assert_allclose(clf.prior_, prior, atol=1e-4)
    raw = _naive_scores(llava_path, images[:1])
    np.testing.assert_allclose(
        clf.decision_function(images[:1]), raw - 2.0 * prior, atol=1e-4
    )


# -- open-ended matching and the fallback ----------------------------------------------
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The photo features a DOG.", 2),
        ("a red  car next to a cat", 1),  # earliest occurrence; whitespace runs
        ("A cat and a dog", 0),
        ("categories of dogs", -1),  # word boundaries: no 'cat' in 'categories'
        ("a blue bird", 3),
        ("", -1),
    ],
)
def test_match_class_name(answer, expected):
    assert match_class_name(answer, NAMES) == expected


def test_match_ties_go_to_the_longest_name():
    assert match_class_name("a sea lion", ["sea", "sea lion", "lion"]) == 1
    assert match_class_name("sea-lion", ["lion", "sea"]) == 1  # earliest wins


def test_open_ended_predict_uses_answers_then_fallback(llava_path, images, monkeypatch):
    clf = _clf(llava_path, strategy="open_ended").fit(images, ["a", "b", "c", "d"])
    answers = ["I see a Dog.", "no idea", "a cat, or a blue bird"]
    monkeypatch.setattr(clf, "_generate", lambda items, prompts: answers)
    fallback = np.argmax(_naive_scores(llava_path, images[1:2])[0])
    np.testing.assert_array_equal(
        clf.predict(images[:3]), np.array(["c", "abcd"[fallback], "a"])
    )


def test_generate_returns_greedy_answers(llava_path, images):
    clf = _clf(llava_path, strategy="open_ended", max_new_tokens=3).fit(images, Y)
    answers = clf.generate(images[:2])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert all(len(a.split()) <= 3 for a in answers)
    assert clf.generate(images[:2]) == answers  # greedy: deterministic
    assert clf.predict(images[:2]).shape == (2,)


# -- closed-set prompts -----------------------------------------------------------------
def test_closed_set_prompt_fixed_order(llava_path, images):
    clf = _clf(llava_path, strategy="closed_set").fit(images, Y)
    expected = PROMPT + ' Choose one from "cat, red car, dog, blue bird".'
    assert clf.prompts(images) == [expected] * 4
    custom = clf.set_params(prompt="Pick one of {candidates}:").prompts(images[:1])
    assert custom == ["Pick one of cat, red car, dog, blue bird:"]


def test_closed_set_prompt_seeded_shuffle(llava_path, images):
    clf = _clf(
        llava_path, strategy="closed_set", candidate_order="shuffle", random_state=3
    )
    clf.fit(images, Y)
    rng = np.random.RandomState(3)
    expected = [
        PROMPT
        + ' Choose one from "{}".'.format(
            ", ".join(np.array(NAMES)[rng.permutation(4)])
        )
        for _ in range(4)
    ]
    assert clf.prompts(images) == expected
    assert clf.prompts(images) == expected  # an int seed repeats the orders
    assert closed_set_prompt("Q?", ["x"]) == 'Q? Choose one from "x".'


# -- errors -----------------------------------------------------------------------------
def test_errors(llava_path, images):
    with pytest.raises(NotFittedError):
        _clf(llava_path).predict(images)
    with pytest.raises(ValueError, match="no classes"):
        _clf(llava_path, class_names=None).fit([], [])
    with pytest.raises(ValueError, match="share a name"):
        _clf(llava_path, class_names=["cat", "Cat ", "dog"]).fit(images[:3], [0, 1, 2])
    with pytest.raises(ValueError, match="tokenize to nothing"):
        _clf(llava_path, class_names=["cat", "  ", "dog"]).fit(images[:3], [0, 1, 2])
    with pytest.raises(ValueError, match="strategy"):
        _clf(llava_path, strategy="guess").fit(images[:3], [0, 1, 2])


# -- sklearn behaviour ------------------------------------------------------------------
def test_cross_val_score_and_pickle(llava_path):
    X = random_images(4, seed=2)
    y = [0, 1, 0, 1]
    clf = _clf(llava_path, class_names=["cat", "dog"])
    scores = cross_val_score(clf, X, y, cv=2)
    assert scores.shape == (2,) and np.all((0 <= scores) & (scores <= 1))
    fitted = clf.fit(X, y)
    blob = pickle.dumps(fitted)
    assert len(blob) < 10_000  # no weights in the pickle
    np.testing.assert_allclose(
        pickle.loads(blob).decision_function(X[:1]), fitted.decision_function(X[:1])
    )
