"""Scorers for classifiers over many classes (top-k accuracy)."""

from numbers import Integral

import numpy as np
from scipy.special import expit
from sklearn.metrics import top_k_accuracy_score

from ._sklearn_compat import Interval, validate_params

__all__ = ["top_k_accuracy_scorer"]


class _TopKAccuracyScorer:
    """Callable ``scorer(estimator, X, y)`` returning top-k accuracy."""

    def __init__(self, k):
        self.k = k

    def __repr__(self):
        return f"top_k_accuracy_scorer(k={self.k})"

    def __call__(self, estimator, X, y_true, sample_weight=None):
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ValueError(
                f"{type(estimator).__name__} has no classes_; the top-k scorer needs "
                "a fitted classifier."
            )
        classes = np.asarray(classes)
        scores = self._scores(estimator, X, len(classes))
        # top_k_accuracy_score wants labels sorted; follow the columns along.
        order = np.argsort(classes, kind="stable")
        classes, scores = classes[order], scores[:, order]

        y_true = np.asarray(y_true)
        weight = (
            np.ones(y_true.shape[0])
            if sample_weight is None
            else np.asarray(sample_weight)
        )
        # A label the estimator never saw (absent from its training fold) can't be
        # in anyone's top k: count those rows as misses instead of failing.
        known = np.isin(y_true, classes)
        if not known.any():
            return 0.0
        y_score = scores[known]
        if len(classes) == 2:
            y_score = y_score[:, 1]
        hits = top_k_accuracy_score(
            y_true[known],
            y_score,
            k=self.k,
            labels=classes,
            normalize=False,
            sample_weight=weight[known],
        )
        return float(hits / weight.sum())

    @staticmethod
    def _scores(estimator, X, n_classes):
        """Class scores (n_samples, n_classes) in the order of ``classes_``."""
        if hasattr(estimator, "predict_proba"):
            scores = np.asarray(estimator.predict_proba(X))
        elif hasattr(estimator, "decision_function"):
            scores = np.asarray(estimator.decision_function(X))
            if scores.ndim == 1:
                # One logit for classes_[1]; the sigmoid keeps the order and puts
                # the binary threshold at 0.5, where top_k_accuracy_score has it.
                positive = expit(scores)
                scores = np.column_stack([1.0 - positive, positive])
        else:
            raise ValueError(
                f"{type(estimator).__name__} has neither predict_proba nor "
                "decision_function; the top-k scorer needs class scores."
            )
        if scores.ndim != 2 or scores.shape[1] != n_classes:
            raise ValueError(
                f"{type(estimator).__name__} gave scores of shape {scores.shape}; "
                f"expected (n_samples, {n_classes}) to match its classes_."
            )
        return scores


@validate_params(
    {"k": [Interval(Integral, 1, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def top_k_accuracy_scorer(k=5):
    """Make a scorer for the share of rows whose true class is in the top ``k``.

    The scorer works as ``scoring=`` in ``cross_val_score``, ``GridSearchCV`` and
    friends, for any classifier with ``predict_proba`` or ``decision_function``.
    It passes ``labels=estimator.classes_`` to
    ``sklearn.metrics.top_k_accuracy_score``, so labels of any type work and a
    test fold that lacks some classes is scored correctly; a test row whose class
    the estimator never saw in training counts as a miss.

    Parameters
    ----------
    k : int, default=5
        Number of highest-scored classes in which the true class must appear.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None)`` returning a float in
        [0, 1]; greater is better.

    See Also
    --------
    sklearn.metrics.top_k_accuracy_score : The metric on precomputed scores.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_val_score
    >>> from skvlm.metrics import top_k_accuracy_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> top2 = top_k_accuracy_scorer(k=2)
    >>> top2
    top_k_accuracy_scorer(k=2)
    >>> model = LogisticRegression(max_iter=1000)
    >>> scores = cross_val_score(model, X, y, cv=3, scoring=top2)
    >>> bool(scores.min() > 0.95)
    True
    """
    if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k={k!r} is not valid; pass an int >= 1 (e.g. k=5).")
    return _TopKAccuracyScorer(int(k))
