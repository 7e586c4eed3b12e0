"""VLMGenerativeClassifier on tiny generative models.

Probabilistic scores are checked against a naive computation written here: one
full forward pass of prompt + answer prefix + class name per class, log-softmax
of the logits, gather of the name's tokens. The scored tokens follow the
documented definition ``ids(A + " " + name)[len(ids(A)):]``.
"""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score

from skvlm.classifiers import answer_is_correct, match_class_name
from skvlm.classifiers._generative import VLMGenerativeClassifier
from skvlm.classifiers._generative_text import closed_set_prompt, resolve_template
from skvlm.models import load_adapter
from skvlm.testing import random_images
from skvlm.testing._generative import make_tiny_qwen2_vl

NAMES = ["cat", "red car", "dog", "blue bird"]  # one- and two-token names
ANSWER = "The photo features a"
PROMPT = "What type of object is in this photo?"
Y = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    return str(make_tiny_qwen2_vl(tmp_path_factory.mktemp("gen_qwen")))


@pytest.fixture(scope="module")
def images():
    return random_images(4, seed=1)


def _clf(path, **kwargs):
    kwargs = {"class_names": NAMES, "device": "cpu", "class_batch_size": 3, **kwargs}
    return VLMGenerativeClassifier(path, **kwargs)


def _naive_scores(
    path, images, *, reduction="sum", with_image=True, text=None, per_token=False
):
    """One full forward pass per (image, class), written independently.

    ``text`` is the model's text (default: the adapter's format of PROMPT);
    ``per_token=True`` returns, per image, each class's list of token
    log-probabilities (the layout of the paper's ``inference_analysis/main.py``
    output, ``item["probs"]``).
    """
    adapter = load_adapter(path, device="cpu")
    tokenizer = adapter.processor.tokenizer
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    out = np.zeros((len(images), len(NAMES)))
    tokens = []
    text = adapter.format_prompt(PROMPT) if text is None else text
    for i, image in enumerate(images):
        tokens.append([])
        batch = dict(adapter.prepare([image], [text]))
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
            tokens[-1].append(values)
            out[i, c] = np.sum(values) if reduction == "sum" else np.mean(values)
    return tokens if per_token else out


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
    expected = 0.5 * raw[:2] + (1 - 0.5) * raw.mean(axis=0)
    np.testing.assert_allclose(clf.decision_function(images[:2]), expected, atol=1e-4)


def _paper_calibrated_predictions(all_probs, alpha):
    """inference_analysis/get_accuracy.ipynb, transcribed: per-token prior averaged
    over the evaluated images, mixed as a*lp + (1-a)*prior, summed over the tokens."""
    calibrated_probs = []
    for i in range(len(all_probs[0])):
        calibrated_probs.append(np.mean([item[i] for item in all_probs], axis=0))
    predictions, scores = [], []
    for item in all_probs:
        probs = [
            (
                alpha * np.array(prob) + (1 - alpha) * np.array(calibrated_probs[idx])
            ).sum()
            for idx, prob in enumerate(item)
        ]
        scores.append(probs)
        predictions.append(int(np.array(probs).argsort()[-5:][::-1][0]))
    return np.array(predictions), np.array(scores)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0, 8.0])
def test_calibration_is_the_papers_notebook(llava_path, images, alpha):
    per_token = _naive_scores(llava_path, images, per_token=True)
    assert sorted({len(t) for t in per_token[0]}) == [1, 2]  # the sum has 2 terms
    expected_pred, expected_scores = _paper_calibrated_predictions(per_token, alpha)
    # the paper's prior comes from the evaluated images: fit on them
    clf = _clf(llava_path, calibration="prior", guidance=alpha).fit(images, Y)
    np.testing.assert_allclose(
        clf.decision_function(images), expected_scores, atol=1e-4
    )
    np.testing.assert_array_equal(clf.predict(images), expected_pred)


def test_calibration_sweep_matches_the_notebook(llava_path, images):
    per_token = _naive_scores(llava_path, images, per_token=True)
    clf = _clf(llava_path).fit(images, Y)
    labels = np.array([2, 0, 3, 1])
    table = clf.calibration_sweep(images, labels, guidance=range(9), k=2)
    assert table["guidance"].tolist() == list(range(9))
    for alpha, row in zip(range(9), table.itertuples(), strict=True):
        pred, scores = _paper_calibrated_predictions(per_token, alpha)
        assert row.accuracy == pytest.approx(np.mean(pred == labels))
        top2 = np.argsort(scores, axis=1)[:, -2:]
        assert row.top_k_accuracy == pytest.approx(
            np.mean([lab in t for lab, t in zip(labels, top2, strict=True)])
        )
    with pytest.raises(ValueError, match="calibration='prior'"):
        clf.calibration_sweep(images, labels, prior="fitted")


def test_text_prior_scores_the_prompt_without_image(llava_path, images):
    clf = _clf(llava_path, calibration="text_prior", guidance=2.0).fit(images, Y)
    prior = _naive_scores(llava_path, images[:1], with_image=False)[0]
    np.testing.assert_allclose(clf.prior_, prior, atol=1e-4)
    raw = _naive_scores(llava_path, images[:1])
    np.testing.assert_allclose(
        clf.decision_function(images[:1]), 2.0 * raw - prior, atol=1e-4
    )


# -- the paper's prompt template --------------------------------------------------------
def test_paper_template_reaches_the_model(llava_path, images):
    # main_results/main.py: f"USER: <image>\n{question}\nASSISTANT:"
    assert resolve_template("paper", "instructblip", "<image>") == (
        "Question: {prompt} Answer:"
    )
    assert resolve_template("paper", "blip-2", "<image>") is None  # its own
    assert resolve_template("paper", "llava", "<image>") == (
        "USER: <image>\n{prompt}\nASSISTANT:"
    )
    text = f"USER: <image>\n{PROMPT}\nASSISTANT:"
    clf = _clf(llava_path, prompt_template="paper").fit(images, Y)
    expected = _naive_scores(llava_path, images[:2], text=text)
    np.testing.assert_allclose(clf.decision_function(images[:2]), expected, atol=1e-4)
    # a template that changes the tokens reaches the model too
    template = "USER: <image>\nLook. {prompt}\nASSISTANT:"
    clf.set_params(prompt_template=template).fit(images, Y)
    text = template.replace("{prompt}", PROMPT)
    expected = _naive_scores(llava_path, images[:2], text=text)
    np.testing.assert_allclose(clf.decision_function(images[:2]), expected, atol=1e-4)
    assert not np.allclose(_naive_scores(llava_path, images[:2]), expected, atol=1e-3)
    with pytest.raises(ValueError, match="no {prompt} field"):
        _clf(llava_path, prompt_template="USER: <image>").fit(images, Y)


def test_paper_template_is_refused_for_other_families(qwen_path, images):
    with pytest.raises(ValueError, match="knows the paper's templates"):
        _clf(qwen_path, prompt_template="paper").fit(images, Y)


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
def test_match_class_name_words(answer, expected):
    assert match_class_name(answer, NAMES, rule="word") == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("categories of dogs", 0),  # the paper's substring test: 'cat' is found
        ("hotdogs", 2),
        ("a bluebird", -1),  # 'blue bird' needs its space (any whitespace run)
        ("The photo", -1),
    ],
)
def test_match_class_name_substring(answer, expected):
    assert match_class_name(answer, NAMES) == expected


def test_answer_is_correct_is_the_papers_eval():
    answers = ["The photo features a Cat.", "The photo", "a cat and a dog", "hotdog"]
    labels = ["cat", "cat", "dog", "dog"]
    # main_results/eval.ipynb: acc = item["label"].lower() in item["pred"].lower()
    expected = [
        label.lower() in pred.lower()
        for pred, label in zip(answers, labels, strict=True)
    ]
    np.testing.assert_array_equal(answer_is_correct(answers, labels), expected)
    np.testing.assert_array_equal(
        answer_is_correct(["Dog", "a dog"], ["dog", "dog"], rule="exact"), [1, 0]
    )
    with pytest.raises(ValueError, match="true class name of every answer"):
        answer_is_correct(["a"], ["a", "b"])


def test_match_ties_go_to_the_longest_name():
    assert match_class_name("a sea lion", ["sea", "sea lion", "lion"]) == 1
    assert match_class_name("sea-lion", ["lion", "sea"]) == 1  # earliest wins


def test_open_ended_unnamed_answer_is_wrong_by_default(llava_path, images, monkeypatch):
    clf = _clf(llava_path, strategy="open_ended", no_match="none")
    clf.fit(images, ["a", "b", "c", "d"])
    answers = ["I see a Dog.", "no idea", "a cat, or a blue bird", "The photo"]
    monkeypatch.setattr(clf, "_generate", lambda items, prompts: answers)
    np.testing.assert_array_equal(clf.predict(images), ["c", "none", "a", "none"])
    assert clf.score(images, ["c", "b", "a", "d"]) == 0.5
    clf.set_params(no_match=-1).fit(images, Y)  # the default, integer labels
    np.testing.assert_array_equal(clf.predict(images), [2, -1, 0, -1])
    with pytest.raises(ValueError, match="is one of the classes"):
        clf.set_params(no_match=0).fit(images, Y)


def test_open_ended_explicit_probabilistic_fallback(llava_path, images, monkeypatch):
    clf = _clf(llava_path, strategy="open_ended", no_match="probabilistic")
    clf.fit(images, ["a", "b", "c", "d"])
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
    clf = _clf(llava_path, strategy="closed_set", candidate_order="fixed")
    clf.fit(images, Y)
    expected = PROMPT + ' Choose one from "cat, red car, dog, blue bird".'
    assert clf.prompts(images) == [expected] * 4
    custom = clf.set_params(prompt="Pick one of {candidates}:").prompts(images[:1])
    assert custom == ["Pick one of cat, red car, dog, blue bird:"]


def test_closed_set_prompt_seeded_shuffle(llava_path, images):
    clf = _clf(llava_path, strategy="closed_set", random_state=3)  # shuffle: default
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


def test_closed_set_candidates_column(llava_path, images):
    clf = _clf(llava_path, strategy="closed_set", candidate_order="fixed")
    clf.fit(images, Y)
    X = pd.DataFrame({"image": images[:2], "candidates": [[2, 0], [3, 1, 0]]})
    assert clf.prompts(X) == [
        PROMPT + ' Choose one from "dog, cat".',
        PROMPT + ' Choose one from "blue bird, red car, cat".',
    ]
    with pytest.raises(ValueError, match=r"X\['candidates'\]\[0\].*not classes"):
        clf.prompts(pd.DataFrame({"image": images[:1], "candidates": [[7]]}))


def test_sample_candidates_is_the_papers_protocol(llava_path, images):
    clf = _clf(llava_path, strategy="closed_set", random_state=0).fit(images, Y)
    y = np.array([0, 1, 2, 3] * 25)
    lists = clf.sample_candidates(y, 3)
    assert all(
        len(c) == 3 == len(set(c)) and t in c for c, t in zip(lists, y, strict=True)
    )
    assert all(set(c) <= set(Y) for c in lists)
    # the true class is not always first: the list is shuffled
    assert 0.1 < np.mean([c[0] == t for c, t in zip(lists, y, strict=True)]) < 0.6
    assert clf.sample_candidates(y, 3) == lists  # an int seed repeats
    with pytest.raises(ValueError, match="between 1 and"):
        clf.sample_candidates(y, 5)


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


def test_a_model_that_cannot_answer_is_refused_at_fit(clip_path):
    images = random_images(2)
    with pytest.raises(ValueError, match="is a clip model: it has no language model"):
        VLMGenerativeClassifier(clip_path).fit(images, [0, 1])
    with pytest.raises(ValueError, match="use CLIPZeroShotClassifier"):
        VLMGenerativeClassifier(clip_path, strategy="open_ended").fit(images, [0, 1])
