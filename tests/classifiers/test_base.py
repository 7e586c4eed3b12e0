"""VLMClassifierMixin: decision_function / predict_proba / predict written once."""

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from skvlm import CLIPZeroShotClassifier, VLMGenerativeClassifier
from skvlm.classifiers import VLMClassifierMixin, scores_to_proba
from skvlm.datasets import load_digit_images


def _softmax(scores):
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_scores_to_proba_against_hand_computed():
    scores = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]])
    np.testing.assert_allclose(scores_to_proba(scores), _softmax(scores))
    sig = 1 / (1 + np.exp(-scores))
    np.testing.assert_allclose(
        scores_to_proba(scores, "sigmoid"), sig / sig.sum(axis=1, keepdims=True)
    )
    with pytest.raises(ValueError, match="link must be"):
        scores_to_proba(scores, "probit")


class Fixed(VLMClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def _class_scores(self, X):
        return np.asarray(X, dtype=float)


def test_mixin_methods_from_class_scores():
    clf = Fixed().fit(None, ["a", "b", "c"])
    X = np.array([[0.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
    np.testing.assert_array_equal(clf.decision_function(X), X)
    np.testing.assert_allclose(clf.predict_proba(X), _softmax(X))
    assert clf.predict(X).tolist() == ["b", "a"]


def test_predict_names_rows_without_scores():
    clf = Fixed().fit(None, [0, 1])
    X = np.array([[0.0, 1.0], [np.nan, np.nan], [1.0, 0.0]])
    assert np.isnan(clf.predict_proba(X)[1]).all()
    with pytest.raises(ValueError, match=r"indices \[1\].*decision_function"):
        clf.predict(X)


@pytest.mark.parametrize("model", ["skvlm/tiny-clip", "skvlm/tiny-llava"])
def test_shipped_models_proba_and_predict_follow_the_scores(model):
    digits = load_digit_images(n_class=3, n_per_class=2)
    names = dict(enumerate(digits.target_names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shipped-model notice
        if model.endswith("clip"):
            clf = CLIPZeroShotClassifier(model, class_names=names, verbose=0)
        else:
            clf = VLMGenerativeClassifier(model, class_names=names, verbose=0)
        clf.fit(digits.images, digits.target)
    scores = clf.decision_function(digits.images)
    assert scores.shape == (6, 3)
    np.testing.assert_allclose(
        clf.predict_proba(digits.images), _softmax(scores), rtol=1e-6
    )
    np.testing.assert_array_equal(
        clf.predict(digits.images), clf.classes_[np.argmax(scores, axis=1)]
    )


def test_zero_shot_on_error_nan_gives_nan_rows(clip_path, tmp_path):
    from skvlm.testing import random_images

    images = random_images(2)
    X = [images[0], str(tmp_path / "missing.png"), images[1]]
    clf = CLIPZeroShotClassifier(
        clip_path, class_names=["a", "b"], on_error="nan", verbose=0
    ).fit(images, [0, 1])
    with pytest.warns(UserWarning, match=r"indices \[1\]"):
        proba = clf.predict_proba(X)
    assert np.isnan(proba[1]).all() and np.isfinite(proba[[0, 2]]).all()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"\[1\]"):
        clf.predict(X)
