"""RandomProbeSelector: keep features that beat random probe columns."""

from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.feature_selection import SelectorMixin
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .._sklearn_compat import HasMethods, Interval, StrOptions, fit_context
from ..inspection import permutation_importance

_PROBE_KINDS = ("normal", "uniform", "binary", "shuffle")


def _probe_columns(X, kinds, n_probes, random_state):
    """Probe matrix (n_samples, n_kinds * n_probes) and its column names."""
    rng = check_random_state(random_state)
    n_samples, n_features = X.shape
    columns, names = [], []
    for kind in kinds:
        for i in range(n_probes):
            if kind == "normal":
                column = rng.standard_normal(n_samples)
            elif kind == "uniform":
                column = rng.uniform(0.0, 1.0, n_samples)
            elif kind == "binary":
                column = rng.randint(0, 2, n_samples).astype(np.float64)
            else:  # a real column with its rows shuffled: same marginal, no signal
                column = rng.permutation(X[:, rng.randint(n_features)])
            columns.append(column)
            names.append(f"probe_{kind}_{i}")
    return np.column_stack(columns).astype(np.float64), np.asarray(names, dtype=object)


def _model_importance(model, kind):
    coef = getattr(model, "coef_", None)
    if kind in ("auto", "coef") and coef is not None:
        coef = np.asarray(coef, dtype=np.float64)
        # One weight per class: their Euclidean norm, so no class is favoured.
        return np.abs(coef) if coef.ndim == 1 else np.linalg.norm(coef, axis=0)
    importances = getattr(model, "feature_importances_", None)
    if kind in ("auto", "feature_importances") and importances is not None:
        return np.asarray(importances, dtype=np.float64)
    wanted = {"coef": "coef_", "feature_importances": "feature_importances_"}
    raise ValueError(
        f"importance={kind!r} needs a fitted `{wanted.get(kind, 'coef_')}` on the "
        f"estimator, which {type(model).__name__} does not have; use "
        "importance='permutation' (works for any estimator, Pipelines included)."
    )


def _fold_importance(selector, Z, y, train, test, fold_seed):
    """Importance of every column (real and probe) from one CV fold."""
    Z_train, Z_test = Z[train], Z[test]
    if selector.standardize:
        # Standardise on the training rows so coefficient size measures
        # relevance, not the unit a column happens to be in.
        mean = Z_train.mean(axis=0)
        scale = Z_train.std(axis=0)
        scale[scale == 0] = 1.0
        Z_train = (Z_train - mean) / scale
        Z_test = (Z_test - mean) / scale
    model = clone(selector.estimator).fit(Z_train, y[train])
    if selector.importance != "permutation":
        return _model_importance(model, selector.importance)
    result = permutation_importance(
        model,
        Z_test,
        y[test],
        scoring=selector.scoring,
        n_repeats=selector.n_repeats,
        random_state=fold_seed,
    )
    return result.importances_mean


class RandomProbeSelector(SelectorMixin, BaseEstimator):
    """Select features whose importance beats that of random probe columns.

    The probe method: random columns (normal, uniform, binary, or real
    columns with their rows shuffled) are appended to X, the estimator is fit
    on every cross-validation fold, and a real feature is kept when its
    importance, averaged over folds, exceeds a threshold set by the probes'
    importances. One model per fold, whatever the number of features.

    Parameters
    ----------
    estimator : estimator object
        Fit on real and probe columns in every fold. With ``importance``
        ``"coef"`` or ``"feature_importances"`` it must expose that fitted
        attribute; ``"permutation"`` works with any estimator (linear models
        take the fast exact path of ``skvlm.inspection.permutation_importance``).
    n_probes : int, default=5
        Probe columns per probe kind.
    distribution : {"normal", "uniform", "binary", "shuffle", "all"} or list \
            of those, default="normal"
        Probe kinds; ``"shuffle"`` permutes the rows of a randomly chosen real
        column (same marginal distribution, no relation to y); ``"all"``
        uses every kind.
    importance : {"auto", "coef", "feature_importances", "permutation"}, \
            default="auto"
        ``"coef"``: absolute coefficient (Euclidean norm over classes);
        ``"feature_importances"``: ``feature_importances_``; ``"auto"``: the
        first of the two the fitted estimator has; ``"permutation"``: drop in
        ``scoring`` when the column is permuted in the fold's held-out rows.
    threshold : {"mean", "max", "mean_plus_std"}, default="mean"
        Probe statistic to beat: their mean, their max, or mean + 3 std.
    cv : int, cross-validation generator or iterable, default=5
        As in sklearn (stratified for classifiers when an int).
    scoring : str, callable or None, default=None
        Scorer for ``importance="permutation"``.
    n_repeats : int, default=5
        Permutations per column for ``importance="permutation"``.
    standardize : bool, default=True
        Standardise every column (real and probe) on each fold's training
        rows before fitting, so a coefficient's size cannot come from the
        column's scale. Keep it on for ``coef`` importance.
    n_jobs : int, default=None
        Folds fitted in parallel. ``None`` means 1.
    random_state : int, RandomState instance or None, default=None
        Seeds the probes and the permutations.

    Attributes
    ----------
    feature_importances_ : ndarray of shape (n_features,)
        Mean importance of each real feature over the folds.
    feature_importances_std_ : ndarray of shape (n_features,)
        Its standard deviation over the folds.
    probe_importances_ : ndarray of shape (n_probes_total,)
        Mean importance of each probe column over the folds.
    probe_names_ : ndarray of str
        Names of the probe columns (``probe_{kind}_{i}``).
    threshold_ : float
        The probe statistic a feature had to exceed.
    support_ : ndarray of bool of shape (n_features,)
        Kept features.
    features_to_drop_ : list
        Names (or indices, for unnamed input) of the dropped features, as in
        feature-engine.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skvlm.selection import RandomProbeSelector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 6))
    >>> y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> selector = RandomProbeSelector(LogisticRegression(), n_probes=5,
    ...                                threshold="max", random_state=0)
    >>> selector.fit(X, y).get_support(indices=True)
    array([0, 1])
    >>> selector.transform(X).shape
    (200, 2)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit"])],
        "n_probes": [Interval(Integral, 1, None, closed="left")],
        "distribution": [StrOptions({*_PROBE_KINDS, "all"}), list, tuple],
        "importance": [
            StrOptions({"auto", "coef", "feature_importances", "permutation"})
        ],
        "threshold": [StrOptions({"mean", "max", "mean_plus_std"})],
        "cv": ["cv_object"],
        "scoring": [str, callable, None],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator,
        *,
        n_probes=5,
        distribution="normal",
        importance="auto",
        threshold="mean",
        cv=5,
        scoring=None,
        n_repeats=5,
        standardize=True,
        n_jobs=None,
        random_state=None,
    ):
        self.estimator = estimator
        self.n_probes = n_probes
        self.distribution = distribution
        self.importance = importance
        self.threshold = threshold
        self.cv = cv
        self.scoring = scoring
        self.n_repeats = n_repeats
        self.standardize = standardize
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _probe_kinds(self):
        kinds = (
            [self.distribution]
            if isinstance(self.distribution, str)
            else list(self.distribution)
        )
        if "all" in kinds:
            return list(_PROBE_KINDS)
        unknown = [k for k in kinds if k not in _PROBE_KINDS]
        if unknown or not kinds:
            raise ValueError(
                f"distribution={self.distribution!r}: {unknown or 'empty list'} is "
                f"not a probe kind; use one of {[*_PROBE_KINDS, 'all']}."
            )
        return list(dict.fromkeys(kinds))

    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the estimator on every fold with probes and select features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (numpy array or DataFrame).
        y : array-like of shape (n_samples,)
            Target.

        Returns
        -------
        self : object
            Fitted selector.
        """
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=False)
        kinds = self._probe_kinds()
        rng = check_random_state(self.random_state)
        probes, self.probe_names_ = _probe_columns(X, kinds, self.n_probes, rng)
        Z = np.hstack([X, probes])
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = list(cv.split(Z, y))
        seeds = rng.randint(np.iinfo(np.int32).max, size=len(splits))
        per_fold = Parallel(n_jobs=self.n_jobs)(
            delayed(_fold_importance)(self, Z, y, train, test, seed)
            for (train, test), seed in zip(splits, seeds, strict=True)
        )
        per_fold = np.vstack(per_fold)
        n = X.shape[1]
        mean, std = per_fold.mean(axis=0), per_fold.std(axis=0)
        self.feature_importances_, self.feature_importances_std_ = mean[:n], std[:n]
        self.probe_importances_ = mean[n:]
        if self.threshold == "mean":
            self.threshold_ = float(self.probe_importances_.mean())
        elif self.threshold == "max":
            self.threshold_ = float(self.probe_importances_.max())
        else:
            self.threshold_ = float(
                self.probe_importances_.mean() + 3 * self.probe_importances_.std()
            )
        self.support_ = self.feature_importances_ > self.threshold_
        names = getattr(self, "feature_names_in_", np.arange(n))
        self.features_to_drop_ = list(names[~self.support_])
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
