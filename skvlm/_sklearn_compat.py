"""Every private scikit-learn name skvlm uses, in one place.

scikit-learn may move, rename or drop its private names in any release. Importing
them only from here means one file to read when it does: nothing else in skvlm
imports from a private sklearn module or takes a private sklearn name (a test
checks). Public sklearn names (``validate_data``, ``get_tags``,
``check_is_fitted``...) are imported from sklearn directly.

The names are re-exported without their leading underscore, so that importing
them elsewhere does not read as reaching into a private API.

Supported: scikit-learn 1.6 (``validate_data`` and ``__sklearn_tags__`` arrived
then) to the newest. ``make test`` runs a focused part of the suite against the
oldest release too (``constraints/sklearn-oldest.txt``). Where a name has moved
between releases, or may go, there is a fallback:

- ``safe_indexing``: lives in ``sklearn.utils._indexing`` since 1.5; the
  ``sklearn.utils`` re-export is kept only "for backward compat".
- ``aggregate_score_dicts``: a local copy of sklearn's ten lines if it goes.
- the scorer classes: if they go, every scorer counts as opaque, and
  permutation importance takes its general path (which calls the real
  estimator) instead of scoring precomputed outputs: slower, never wrong.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from sklearn.base import _fit_context as fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Hidden,
    Interval,
    RealNotInt,
    StrOptions,
    validate_params,
)

try:
    from sklearn.utils._indexing import _safe_indexing as safe_indexing
except ImportError:  # before 1.5
    from sklearn.utils import _safe_indexing as safe_indexing

try:
    from sklearn.metrics._scorer import (
        _BaseScorer,
        _MultimetricScorer,
        _PassthroughScorer,
        _Scorer,
    )
except ImportError:  # pragma: no cover - a release that renamed them
    _BaseScorer = _MultimetricScorer = _PassthroughScorer = _Scorer = None

__all__ = [
    "HasMethods",
    "Hidden",
    "Interval",
    "RealNotInt",
    "ScorerSpec",
    "StrOptions",
    "aggregate_score_dicts",
    "fit_context",
    "is_passthrough_scorer",
    "is_response_scorer",
    "multimetric_scorers",
    "safe_indexing",
    "scorer_spec",
    "validate_parameters",
    "validate_params",
]


def validate_parameters(estimator):
    """Check ``estimator``'s params against its ``_parameter_constraints``.

    What ``fit_context`` does before ``fit``, for code that validates elsewhere
    (a ``fit`` without the decorator, or parameters checked before any fit).

    Parameters
    ----------
    estimator : BaseEstimator
        An estimator declaring ``_parameter_constraints``.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        A ``ValueError`` and ``TypeError`` naming the parameter and what it takes.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skvlm._sklearn_compat import validate_parameters
    >>> validate_parameters(LogisticRegression(C=-1.0))
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'C' parameter ...
    """
    estimator._validate_params()


def _local_aggregate_score_dicts(scores):
    """sklearn's ``_aggregate_score_dicts``: a list of dicts to a dict of arrays."""
    return {
        key: (
            np.asarray([score[key] for score in scores])
            if isinstance(scores[0][key], numbers.Number)
            else [score[key] for score in scores]
        )
        for key in scores[0]
    }


try:
    from sklearn.model_selection._validation import (
        _aggregate_score_dicts as aggregate_score_dicts,
    )
except ImportError:  # pragma: no cover - a release without it
    aggregate_score_dicts = _local_aggregate_score_dicts


class ScorerSpec(NamedTuple):
    """What a scorer built by ``make_scorer`` or ``get_scorer`` computes."""

    score_func: object
    response_method: object
    kwargs: dict
    sign: int


def multimetric_scorers(scorer):
    """The named scorers of a multi-metric scorer; None for any other scorer.

    Parameters
    ----------
    scorer : callable
        What ``check_scoring`` returned.

    Returns
    -------
    scorers : dict or None

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.metrics import check_scoring
    >>> from skvlm._sklearn_compat import multimetric_scorers
    >>> scorer = check_scoring(LogisticRegression(), ["accuracy", "f1_macro"])
    >>> sorted(multimetric_scorers(scorer))
    ['accuracy', 'f1_macro']
    >>> multimetric_scorers(check_scoring(LogisticRegression(), "accuracy")) is None
    True
    """
    if _MultimetricScorer is None or not isinstance(scorer, _MultimetricScorer):
        return None
    return dict(scorer._scorers)


def is_passthrough_scorer(scorer):
    """True when ``scorer`` calls the estimator's own ``score`` (``scoring=None``).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.metrics import check_scoring
    >>> from skvlm._sklearn_compat import is_passthrough_scorer
    >>> is_passthrough_scorer(check_scoring(LogisticRegression()))
    True
    """
    return _PassthroughScorer is not None and isinstance(scorer, _PassthroughScorer)


def is_response_scorer(scorer):
    """True when ``scorer`` was built by sklearn from a metric and a response method.

    Such a scorer reads nothing of the estimator but what its response method
    (``predict``, ``predict_proba``...) returns; a plain callable may read anything.

    Examples
    --------
    >>> from sklearn.metrics import accuracy_score, get_scorer, make_scorer
    >>> from skvlm._sklearn_compat import is_response_scorer
    >>> is_response_scorer(get_scorer("roc_auc")), is_response_scorer(len)
    (True, False)
    """
    return _BaseScorer is not None and isinstance(scorer, _BaseScorer)


def scorer_spec(scorer):
    """The metric, response method, metric kwargs and sign of an sklearn scorer.

    Parameters
    ----------
    scorer : callable
        A scorer from ``make_scorer`` / ``get_scorer``.

    Returns
    -------
    spec : ScorerSpec or None
        None for any other callable (a subclass included: it may compute
        something else).

    Examples
    --------
    >>> from sklearn.metrics import accuracy_score, get_scorer
    >>> from skvlm._sklearn_compat import scorer_spec
    >>> spec = scorer_spec(get_scorer("accuracy"))
    >>> spec.score_func is accuracy_score, spec.response_method, spec.sign
    (True, 'predict', 1)
    """
    if _Scorer is None or type(scorer) is not _Scorer:
        return None
    return ScorerSpec(
        scorer._score_func, scorer._response_method, scorer._kwargs, scorer._sign
    )
