"""Score precomputed model outputs with unmodified sklearn scorers.

The fast paths compute a model's outputs for many permuted copies of X in one
go; an ``_OutputsEstimator`` then hands those outputs to the user's
scorer as if it were the fitted estimator, so every sklearn scorer (string,
``make_scorer`` object, list, dict) is applied by sklearn's own code.
"""

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if

from .._sklearn_compat import (
    is_passthrough_scorer,
    is_response_scorer,
    multimetric_scorers,
    scorer_spec,
)

RESPONSE_METHODS = (
    "predict",
    "predict_proba",
    "decision_function",
    "predict_log_proba",
)


def _final_step(estimator):
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _score_kind(estimator):
    """Which mixin ``score`` the estimator uses ("classifier"/"regressor") or None."""
    score = getattr(type(_final_step(estimator)), "score", None)
    if score is ClassifierMixin.score:
        return "classifier"
    if score is RegressorMixin.score:
        return "regressor"
    return None


def scorer_uses_only_outputs(scorer, estimator):
    """True when ``scorer`` reads nothing of the estimator but its responses.

    Plain user callables may look at X or call anything on the estimator, so
    they are not trusted; they take the path that calls the real estimator.
    """
    scorers = multimetric_scorers(scorer)
    if scorers is not None:
        return all(scorer_uses_only_outputs(s, estimator) for s in scorers.values())
    if is_passthrough_scorer(scorer):
        return _score_kind(estimator) is not None
    return is_response_scorer(scorer)


def is_plain_accuracy(scorer, estimator):
    """True when the scorer is accuracy of ``predict`` (vectorised in the fast path)."""
    if is_passthrough_scorer(scorer):
        return _score_kind(estimator) == "classifier"
    spec = scorer_spec(scorer)
    return (
        spec is not None
        and spec.score_func is accuracy_score
        and spec.response_method == "predict"
        and not spec.kwargs
        and spec.sign == 1
    )


def _has(name):
    return available_if(lambda self: name in self._methods)


class _OutputsEstimator:
    """Stands in for a fitted estimator whose outputs were computed elsewhere.

    Parameters
    ----------
    estimator : fitted estimator
        The real one: its tags, ``classes_`` and available response methods
        are mirrored.
    compute : callable
        ``compute(method_name) -> ndarray``; called at most once per method.
    """

    def __init__(self, estimator, compute):
        self._estimator = estimator
        self._methods = {m for m in RESPONSE_METHODS if hasattr(estimator, m)}
        self._compute = compute
        self._cache = {}
        self._score_kind = _score_kind(estimator)
        if hasattr(estimator, "classes_"):
            self.classes_ = estimator.classes_

    def __sklearn_tags__(self):
        return get_tags(self._estimator)

    def _output(self, name):
        if name not in self._cache:
            self._cache[name] = self._compute(name)
        return self._cache[name]

    @_has("predict")
    def predict(self, X):
        return self._output("predict")

    @_has("predict_proba")
    def predict_proba(self, X):
        return self._output("predict_proba")

    @_has("decision_function")
    def decision_function(self, X):
        return self._output("decision_function")

    @_has("predict_log_proba")
    def predict_log_proba(self, X):
        return self._output("predict_log_proba")

    def score(self, X, y, sample_weight=None):
        # Same formulas as ClassifierMixin.score / RegressorMixin.score; only
        # reached when scorer_uses_only_outputs checked the estimator uses them.
        if self._score_kind == "classifier":
            return accuracy_score(y, self.predict(X), sample_weight=sample_weight)
        return r2_score(y, self.predict(X), sample_weight=sample_weight)


def weighted_accuracy(correct, sample_weight):
    """Row-wise accuracy of a (n_units, n_samples) boolean array, as accuracy_score."""
    if sample_weight is None:
        return correct.mean(axis=1)
    return np.average(correct, axis=1, weights=sample_weight)
