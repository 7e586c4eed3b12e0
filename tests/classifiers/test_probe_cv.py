"""LinearProbeCV: equal to sklearn's LogisticRegressionCV / GridSearchCV on the same folds."""

import warnings
from inspect import signature

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedKFold,
    StratifiedShuffleSplit,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvlm.classifiers import LinearProbeCV
from skvlm.classifiers._lazy_array import MemoryArray
from skvlm.classifiers._probe_cv import fit_folds

TIGHT = dict(tol=1e-10, max_iter=5000)


def _data(n_classes, n_samples=160, n_features=8, seed=0):
    weights = [0.7, 0.3] if n_classes == 2 else None
    return make_classification(
        n_samples,
        n_features,
        n_informative=5,
        n_classes=n_classes,
        weights=weights,
        random_state=seed,
    )


# The reference's per-fold attributes are compared in sklearn 1.9's layout
# (use_legacy_attributes=False); older releases key them by class.
needs_new_layout = pytest.mark.skipif(
    "use_legacy_attributes" not in signature(LogisticRegressionCV).parameters,
    reason="LogisticRegressionCV's non-legacy attribute layout is sklearn >= 1.9",
)


def _sklearn_cv(X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # l1_ratios, scoring defaults
        if "use_legacy_attributes" in signature(LogisticRegressionCV).parameters:
            params["use_legacy_attributes"] = False  # sklearn 1.9: no legacy shapes
        return LogisticRegressionCV(solver="lbfgs", **params).fit(X, y)


@needs_new_layout
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_equals_logistic_regression_cv(n_classes, fit_intercept, class_weight):
    X, y = _data(n_classes)
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    common = dict(
        Cs=5, cv=cv, fit_intercept=fit_intercept, class_weight=class_weight, **TIGHT
    )
    ref = _sklearn_cv(X, y, **common)
    got = LinearProbeCV(standardize=False, device="cpu", **common).fit(X, y)
    assert got.C_ == ref.C_
    np.testing.assert_allclose(got.Cs_, ref.Cs_)
    np.testing.assert_allclose(got.scores_, ref.scores_[:, 0, :], atol=1e-4)
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.intercept_, ref.intercept_, rtol=1e-4, atol=1e-5)
    # every (fold, C) problem, not only the refit
    paths = ref.coefs_paths_[:, 0]  # (folds, Cs, outputs, dof)
    np.testing.assert_allclose(got.coefs_paths_, paths, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(got.predict(X), ref.predict(X))
    np.testing.assert_allclose(got.predict_proba(X), ref.predict_proba(X), atol=1e-6)


@needs_new_layout
def test_class_weight_dict_and_scoring_equal_sklearn():
    X, y = _data(3, seed=1)
    cv = StratifiedKFold(3)
    common = dict(Cs=[0.01, 0.1, 1.0], cv=cv, class_weight={0: 2.0, 2: 0.5}, **TIGHT)
    ref = _sklearn_cv(X, y, scoring="balanced_accuracy", **common)
    got = LinearProbeCV(
        scoring="balanced_accuracy", standardize=False, device="cpu", **common
    ).fit(X, y)
    assert got.C_ == ref.C_
    np.testing.assert_allclose(got.scores_, ref.scores_[:, 0, :], atol=1e-4)
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-4, atol=1e-5)


def test_standardize_equals_grid_search_over_a_scaler_pipeline():
    X, y = _data(3, seed=2)
    X[:, 0] = X[:, 0] * 100 + 50  # scales far apart: per-fold statistics matter
    cv = StratifiedKFold(4, shuffle=True, random_state=1)
    Cs = [0.001, 0.1, 10.0]
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(tol=1e-10, max_iter=5000)),
        {"logisticregression__C": Cs},
        cv=cv,
    ).fit(X, y)
    got = LinearProbeCV(Cs=Cs, cv=cv, device="cpu", **TIGHT).fit(X, y)
    splits = np.column_stack(
        [search.cv_results_[f"split{k}_test_score"] for k in range(4)]
    )
    np.testing.assert_allclose(got.scores_, splits.T, atol=1e-4)
    assert got.C_ == search.best_params_["logisticregression__C"]
    best = search.best_estimator_
    np.testing.assert_allclose(
        got.decision_function(X), best.decision_function(X), rtol=1e-4, atol=1e-4
    )


def test_no_problem_changes_another():
    # Each problem alone gives the same iterations and weights as in the batch.
    X, y = _data(3, seed=3)
    folds = [np.arange(0, 120), np.arange(40, 160)]
    Cs = np.array([1e-3, 1.0, 1e3])
    together = fit_folds(
        MemoryArray(X),
        np.unique(y, return_inverse=True)[1],
        3,
        folds,
        Cs,
        tol=1e-8,
        path="batch",
    )
    for f, train in enumerate(folds):
        for c, C in enumerate(Cs):
            alone = fit_folds(
                MemoryArray(X),
                np.unique(y, return_inverse=True)[1],
                3,
                [train],
                np.array([C]),
                tol=1e-8,
                path="batch",
            )
            p = f * len(Cs) + c
            assert alone.n_iter[0] == together.n_iter[p]
            np.testing.assert_allclose(
                alone.coefs[0], together.coefs[p], rtol=1e-8, atol=1e-10
            )
    assert len(set(together.n_iter.tolist())) > 1  # they did stop at their own time


@needs_new_layout
@pytest.mark.parametrize("standardize", [False, True])
def test_small_training_sets_read_their_own_rows_and_equal_sklearn(standardize):
    # Training sets of 30 % of the rows: each fold's problems read only its
    # rows (the grouped path), and still solve sklearn's problems.
    X, y = _data(3, n_samples=200, seed=5)
    cv = list(StratifiedShuffleSplit(3, train_size=0.3, random_state=0).split(X, y))
    got = LinearProbeCV(
        Cs=4, cv=cv, standardize=standardize, device="cpu", **TIGHT
    ).fit(X, y)
    if standardize:
        ref = [
            [
                make_pipeline(StandardScaler(), LogisticRegression(C=C, **TIGHT))
                .fit(X[train], y[train])
                .score(X[test], y[test])
                for C in got.Cs_
            ]
            for train, test in cv
        ]
        np.testing.assert_allclose(got.scores_, ref, atol=1e-4)
        return
    ref = _sklearn_cv(X, y, Cs=4, cv=cv, **TIGHT)
    np.testing.assert_allclose(got.scores_, ref.scores_[:, 0, :], atol=1e-4)
    paths = ref.coefs_paths_[:, 0]
    np.testing.assert_allclose(got.coefs_paths_, paths, rtol=1e-3, atol=1e-5)


def test_warm_path_of_one_fold_is_the_same_alone_or_with_others():
    # Along the C path each fold starts from its own previous solution: the
    # folds batched together follow the same paths as each fold alone.
    X, y = _data(3, seed=4)
    y_index = np.unique(y, return_inverse=True)[1]
    folds = [np.arange(0, 120), np.arange(40, 160)]
    Cs = np.array([1e-3, 1.0, 1e3])
    together = fit_folds(MemoryArray(X), y_index, 3, folds, Cs, tol=1e-8)
    for f, train in enumerate(folds):
        alone = fit_folds(MemoryArray(X), y_index, 3, [train], Cs, tol=1e-8)
        rows = slice(f * len(Cs), (f + 1) * len(Cs))
        np.testing.assert_array_equal(alone.n_iter, together.n_iter[rows])
        np.testing.assert_allclose(
            alone.coefs, together.coefs[rows], rtol=1e-8, atol=1e-10
        )


@needs_new_layout
def test_more_features_than_rows_equals_sklearn():
    # n < d: the preconditioner decomposes the rows' kernel instead of the
    # features' moments; the solution is still sklearn's.
    X, y = _data(3, n_samples=60, n_features=100, seed=6)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    ref = _sklearn_cv(X, y, Cs=4, cv=cv, **TIGHT)
    got = LinearProbeCV(Cs=4, cv=cv, standardize=False, device="cpu", **TIGHT)
    got.fit(X, y)
    assert got.C_ == ref.C_
    np.testing.assert_allclose(got.scores_, ref.scores_[:, 0, :], atol=1e-4)
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-4, atol=1e-5)


def test_fit_many_equals_one_fit_per_matrix():
    # Sites of two widths, two of one width solved in the same batched runs.
    X, y = _data(3, n_samples=120, n_features=12, seed=7)
    Xs = [X[:, :6], X[:, 6:], X[:, :9] * 3.0]
    probe = LinearProbeCV(Cs=[0.01, 1.0, 100.0], cv=3, device="cpu", tol=1e-8)
    many = probe.fit_many(Xs, y)
    assert len(many) == 3 and not hasattr(probe, "coef_")
    for X_s, got in zip(Xs, many, strict=True):
        alone = clone(probe).fit(X_s, y)
        assert got.C_ == alone.C_
        np.testing.assert_array_equal(got.n_iter_, alone.n_iter_)
        np.testing.assert_allclose(got.scores_, alone.scores_)
        np.testing.assert_allclose(got.coef_, alone.coef_, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(got.coefs_paths_, alone.coefs_paths_, atol=1e-9)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        probe.fit_many([X, X[:-1]], y)
    with pytest.raises(ValueError, match="non-empty list"):
        probe.fit_many(X, y)


def test_fit_many_with_fewer_rows_than_features_equals_one_fit_each():
    # Stacked sites whose preconditioner comes from the rows' kernel.
    X, y = _data(2, n_samples=30, n_features=100, seed=8)
    Xs = [X[:, :50], X[:, 50:]]
    probe = LinearProbeCV(Cs=[0.1, 10.0], cv=3, device="cpu", tol=1e-8)
    for X_s, got in zip(Xs, probe.fit_many(Xs, y), strict=True):
        alone = clone(probe).fit(X_s, y)
        np.testing.assert_allclose(got.scores_, alone.scores_)
        np.testing.assert_allclose(got.coef_, alone.coef_, rtol=1e-6, atol=1e-8)


def test_lazily_read_features_give_the_same_probe(tmp_path):
    X, y = _data(3, seed=4)
    path = tmp_path / "X.npy"
    np.save(path, X)
    params = dict(Cs=3, cv=3, device="cpu", batch_size=37)
    memory = LinearProbeCV(**params).fit(X, y)
    lazy = LinearProbeCV(**params).fit(np.load(path, mmap_mode="r"), y)
    assert lazy.C_ == memory.C_
    np.testing.assert_allclose(lazy.scores_, memory.scores_)
    np.testing.assert_allclose(lazy.coef_, memory.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(
        lazy.predict(np.load(path, mmap_mode="r")), memory.predict(X)
    )


def test_float32_trains_in_float32_close_to_float64():
    X, y = _data(2, seed=5)
    params = dict(Cs=3, cv=3, device="cpu", tol=1e-6, max_iter=1000)
    probe64 = LinearProbeCV(**params).fit(X, y)
    probe32 = LinearProbeCV(**params).fit(X.astype(np.float32), y)
    assert probe32.C_ == probe64.C_
    np.testing.assert_allclose(probe32.scores_, probe64.scores_)
    np.testing.assert_allclose(probe32.coef_, probe64.coef_, rtol=1e-3, atol=1e-4)


def test_refit_false_averages_the_folds_like_sklearn():
    X, y = _data(2, seed=6)
    cv = StratifiedKFold(3)
    common = dict(Cs=4, cv=cv, refit=False, **TIGHT)
    ref = _sklearn_cv(X, y, **common)
    got = LinearProbeCV(standardize=False, device="cpu", **common).fit(X, y)
    assert got.C_ == pytest.approx(ref.C_)
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-4, atol=1e-5)


def test_bad_parameters_say_what_to_do():
    X, y = _data(2)
    with pytest.raises(ValueError, match="positive floats"):
        LinearProbeCV(Cs=[1.0, -1.0], device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="not classes of y"):
        LinearProbeCV(class_weight={7: 1.0}, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearProbeCV(device="cpu").fit(X, np.zeros(len(y)))


def test_torch_threads_are_restored_after_fit():
    import torch

    X, y = _data(2)
    before = torch.get_num_threads()
    LinearProbeCV(Cs=2, cv=3, n_jobs=1, device="cpu").fit(X, y)
    LinearProbeCV(Cs=2, cv=3, device="cpu").fit(X, y)  # a small fit: one thread
    assert torch.get_num_threads() == before
