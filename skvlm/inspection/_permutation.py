"""permutation_importance: sklearn's numbers, without a predict per column."""

import numbers
from numbers import Integral

import numpy as np
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch, check_array, check_random_state
from sklearn.utils.random import sample_without_replacement

from .._sklearn_compat import (
    HasMethods,
    Interval,
    RealNotInt,
    StrOptions,
    safe_indexing,
    validate_params,
)
from ._groups import resolve_groups
from ._linear import linear_decision
from ._paths import general_scores, linear_scores, weights_scorer


def _permutations(seed, n_samples, max_samples, n_repeats):
    """Rows kept and the n_repeats row permutations, drawn as sklearn draws them.

    sklearn shuffles one index array in place each repeat and applies it to
    the already permuted column, so repeat r sees the composition of the
    first r shuffles. Every column uses the same seed, hence the same list.
    """
    random_state = check_random_state(seed)
    rows = None
    if max_samples < n_samples:
        rows = sample_without_replacement(
            n_samples, max_samples, random_state=random_state
        )
        n_samples = max_samples
    shuffling_idx = np.arange(n_samples)
    composed = np.arange(n_samples)
    perms = []
    for _ in range(n_repeats):
        random_state.shuffle(shuffling_idx)
        composed = composed[shuffling_idx]
        perms.append(composed)
    return rows, perms


def _split_pipeline(estimator, X, precomputed_steps):
    """Transform X once through the leading steps; return (rest, Xt, names)."""
    if not isinstance(estimator, Pipeline):
        raise TypeError(
            "precomputed_steps needs a Pipeline estimator, got "
            f"{type(estimator).__name__}; pass precomputed_steps=None."
        )
    names = [name for name, _ in estimator.steps]
    if isinstance(precomputed_steps, str):
        if precomputed_steps not in names[:-1]:
            raise ValueError(
                f"precomputed_steps={precomputed_steps!r} is not a transformer "
                f"step of the pipeline; choose one of {names[:-1]}."
            )
        k = names.index(precomputed_steps) + 1
    else:
        k = precomputed_steps
        if not 1 <= k < len(names):
            raise ValueError(
                f"precomputed_steps={k} must leave the final estimator to score: "
                f"use an int in [1, {len(names) - 1}] for this {len(names)}-step "
                "pipeline."
            )
    head, rest = estimator[:k], estimator[k:]
    Xt = head.transform(X)
    if hasattr(Xt, "columns"):
        feature_names = np.asarray(Xt.columns, dtype=object)
    else:
        try:
            feature_names = np.asarray(head.get_feature_names_out(), dtype=object)
        except (AttributeError, ValueError, TypeError):
            feature_names = None
    return rest, Xt, feature_names


def _linear_input(ld, estimator, X):
    """X as a float64 array for the linear path, or None to take the general path."""
    if X.shape[1] != ld.W.shape[0]:
        return None  # the general path raises the estimator's own error
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if hasattr(X, "iloc"):
        if fitted_names is not None and list(X.columns) != list(fitted_names):
            return None
        if not all(np.dtype(t).kind in "biuf" for t in X.dtypes):
            return None
    try:
        values = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if np.isfinite(values).all() else None


def _importances(baseline, permuted, **extra):
    importances = baseline - permuted
    return Bunch(
        importances_mean=np.mean(importances, axis=1),
        importances_std=np.std(importances, axis=1),
        importances=importances,
        **extra,
    )


@validate_params(
    {
        "estimator": [HasMethods(["fit"])],
        "X": ["array-like"],
        "y": ["array-like", None],
        "scoring": [
            StrOptions(set(get_scorer_names())),
            callable,
            list,
            tuple,
            dict,
            None,
        ],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "sample_weight": ["array-like", None],
        "max_samples": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="right"),
        ],
        "groups": [dict, None],
        "precomputed_steps": [Interval(Integral, 1, None, closed="left"), str, None],
    },
    prefer_skip_nested_validation=True,
)
def permutation_importance(
    estimator,
    X,
    y,
    *,
    scoring=None,
    n_repeats=5,
    n_jobs=None,
    random_state=None,
    sample_weight=None,
    max_samples=1.0,
    groups=None,
    precomputed_steps=None,
):
    """Permutation importance of columns or groups of columns, fast and exact.

    A drop-in for ``sklearn.inspection.permutation_importance``: with
    ``groups=None`` and the same ``random_state`` the numbers are sklearn's
    (same seed handling, same permutations, same ``max_samples`` rows).
    Two paths compute them:

    - **linear**: when the estimator's decision is affine in X
      (``LogisticRegression``, ``LinearSVC``, ``RidgeClassifier``,
      ``SGDClassifier``, ``Ridge``, ``LinearRegression``, ``Lasso``,
      ``ElasticNet``, estimators exposing ``_linear_decision()``, and
      Pipelines of ``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``,
      ``PCA`` or ``"passthrough"`` steps ending in one of them), the decision
      is computed once and each permuted decision is the base decision plus
      the permuted column's delta times its weights; predict,
      predict_proba and decision_function follow from it as the estimator
      derives them, so any sklearn scorer applies. This path works in
      float64: for a float32 X (a VLM's output) the numbers are sklearn's on
      ``X.astype(np.float64)``, baseline included;
    - **general**: any other estimator is called on many permuted copies of X
      stacked into one batch (memory bounded), never on a full copy of X per
      column.

    Parameters
    ----------
    estimator : object
        A fitted estimator (or Pipeline).
    X : ndarray or DataFrame of shape (n_samples, n_features)
        Data on which importance is computed.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs), or None
        Targets.
    scoring : str, callable, list, tuple or dict, default=None
        As in sklearn. Scorers built by sklearn (names, ``make_scorer``) use
        the fast paths; a plain function ``f(estimator, X, y)`` is called on a
        real permuted copy of X (one working copy, permuted in place).
    n_repeats : int, default=5
        Number of times each column (or group) is permuted.
    n_jobs : int, default=None
        Parallel jobs over chunks of columns. ``None`` means 1.
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations exactly as sklearn does.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights used in scoring.
    max_samples : int or float, default=1.0
        Rows drawn (without replacement) for the permuted scores, as in
        sklearn; the baseline uses all rows, as in sklearn.
    groups : dict, default=None
        Group name to column indices (or column names when X is a DataFrame,
        or when ``precomputed_steps`` gives feature names). A group's columns
        get the same row permutation; the result has one row per group and
        ``group_names``. See ``groups_from_feature_names`` for
        ``VLMEmbeddingTransformer`` columns.
    precomputed_steps : int or str, default=None
        For a Pipeline: transform X once through its first ``k`` steps (int)
        or up to and including the named step (str), and permute the columns
        of that output for the remaining steps. The costly front of a
        pipeline (a VLM) then runs once instead of once per column. The
        result gains ``feature_names`` from the transformed output's columns
        or ``get_feature_names_out``.

    Returns
    -------
    result : Bunch or dict of Bunch
        ``importances_mean`` (n_units,), ``importances_std`` (n_units,),
        ``importances`` (n_units, n_repeats), where a unit is a column or a
        group; plus ``group_names`` / ``feature_names`` when relevant. A dict
        of such Bunches, keyed by scorer name, for multi-metric scoring.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skvlm.inspection import permutation_importance
    >>> X = [[1, 9, 9], [1, 9, 9], [1, 9, 9], [0, 9, 9], [0, 9, 9], [0, 9, 9]]
    >>> y = [1, 1, 1, 0, 0, 0]
    >>> clf = LogisticRegression().fit(X, y)
    >>> result = permutation_importance(clf, X, y, n_repeats=10, random_state=0)
    >>> result.importances_mean
    array([0.4666, 0.       , 0.       ])
    >>> grouped = permutation_importance(clf, X, y, random_state=0,
    ...                                  groups={"first": [0], "rest": [1, 2]})
    >>> grouped.group_names
    array(['first', 'rest'], dtype=object)
    """
    extra = {}
    if precomputed_steps is not None:
        estimator, X, feature_names = _split_pipeline(estimator, X, precomputed_steps)
        extra["feature_names"] = feature_names
    else:
        feature_names = getattr(X, "columns", None)
    if not hasattr(X, "iloc"):
        X = check_array(X, ensure_all_finite="allow-nan", dtype=None)

    # One seed for every column, exactly as sklearn draws it.
    random_seed = check_random_state(random_state).randint(np.iinfo(np.int32).max + 1)
    n_samples, n_features = X.shape
    if not isinstance(max_samples, numbers.Integral):
        max_samples = int(max_samples * n_samples)
    elif max_samples > n_samples:
        raise ValueError("max_samples must be <= n_samples")

    units, group_names = resolve_groups(groups, n_features, feature_names)
    if group_names is not None:
        extra["group_names"] = group_names

    scorer = check_scoring(estimator, scoring=scoring)
    ld = linear_decision(estimator)
    values = None if ld is None else _linear_input(ld, estimator, X)
    if values is not None:
        # The linear path scores permuted copies in float64. The baseline is
        # scored on the same float64 values, so that both terms of
        # ``baseline - permuted`` share one arithmetic: a float32 X would
        # otherwise give a float32 baseline minus float64 permuted scores.
        X = X.astype(np.float64) if hasattr(X, "iloc") else values
    baseline = weights_scorer(scorer, estimator, X, y, sample_weight)

    rows, perms = _permutations(random_seed, n_samples, max_samples, n_repeats)
    X_sub, y_sub, w_sub = X, y, sample_weight
    if rows is not None:
        X_sub = safe_indexing(X, rows, axis=0)
        y_sub = safe_indexing(y, rows, axis=0) if y is not None else None
        if sample_weight is not None:
            w_sub = safe_indexing(sample_weight, rows, axis=0)
    if w_sub is not None:
        w_sub = np.asarray(w_sub)

    if values is not None:
        if rows is not None:
            values = values[rows]
        scores = linear_scores(
            ld, estimator, scorer, values, y_sub, w_sub, units, perms, n_jobs
        )
    else:
        scores = general_scores(
            estimator, scorer, X_sub, y_sub, w_sub, units, perms, n_jobs
        )

    if isinstance(baseline, dict):
        return {
            name: _importances(baseline[name], scores[name], **extra)
            for name in baseline
        }
    return _importances(baseline, scores, **extra)
