"""RandomProbeSelector: selection, scale invariance, sklearn and feature-engine."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skvlm.selection import RandomProbeSelector
from skvlm.selection._random_probe import _probe_columns


def _problem(n_samples=300, n_features=20, n_informative=4, seed=0):
    # shuffle=False puts the informative columns first.
    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=0,
        n_clusters_per_class=1,
        shuffle=False,
        class_sep=1.5,
        random_state=seed,
    )
    return X, y


@pytest.mark.parametrize("importance", ["coef", "permutation"])
def test_keeps_the_informative_columns(importance):
    X, y = _problem()
    selector = RandomProbeSelector(
        LogisticRegression(),
        n_probes=10,
        threshold="max",
        importance=importance,
        cv=3,
        random_state=0,
    ).fit(X, y)
    kept = set(selector.get_support(indices=True))
    assert {0, 1, 2, 3} <= kept
    # Noise columns and normal probes are exchangeable: about 16/11 of the 16
    # noise columns beat the max of 10 probes by chance; far from all of them.
    assert len(kept - {0, 1, 2, 3}) <= 5
    importances = selector.feature_importances_
    assert importances[:4].min() > importances[4:].max()


def test_coef_importance_matches_a_scaler_pipeline_reference():
    X, y = _problem(n_features=8)
    cv = StratifiedKFold(3)
    selector = RandomProbeSelector(
        LogisticRegression(), n_probes=3, distribution="all", cv=cv, random_state=1
    ).fit(X, y)
    # Reference: the same probes (same generator state), a StandardScaler +
    # LogisticRegression pipeline per fold, |coef| as importance.
    probes, names = _probe_columns(X, ["normal", "uniform", "binary", "shuffle"], 3, 1)
    assert list(selector.probe_names_) == list(names)
    Z = np.hstack([X, probes])
    per_fold = [
        np.abs(
            make_pipeline(StandardScaler(), LogisticRegression())
            .fit(Z[train], y[train])[-1]
            .coef_[0]
        )
        for train, _ in cv.split(Z, y)
    ]
    expected = np.mean(per_fold, axis=0)
    np.testing.assert_allclose(selector.feature_importances_, expected[:8], rtol=1e-6)
    np.testing.assert_allclose(selector.probe_importances_, expected[8:], rtol=1e-6)


def test_standardize_makes_selection_scale_free():
    X, y = _problem(n_features=10)
    scales = np.logspace(-3, 3, X.shape[1])
    kwargs = dict(n_probes=5, cv=3, random_state=0, threshold="max")
    plain = RandomProbeSelector(LogisticRegression(), **kwargs).fit(X, y)
    scaled = RandomProbeSelector(LogisticRegression(), **kwargs).fit(X * scales, y)
    np.testing.assert_array_equal(plain.support_, scaled.support_)
    np.testing.assert_allclose(
        plain.feature_importances_, scaled.feature_importances_, rtol=1e-3, atol=1e-4
    )


@pytest.mark.parametrize("threshold", ["mean", "max", "mean_plus_std"])
def test_threshold_statistics(threshold):
    X, y = _problem(n_features=8)
    selector = RandomProbeSelector(
        LogisticRegression(), n_probes=4, threshold=threshold, cv=3, random_state=0
    ).fit(X, y)
    probes = selector.probe_importances_
    expected = {
        "mean": probes.mean(),
        "max": probes.max(),
        "mean_plus_std": probes.mean() + 3 * probes.std(),
    }[threshold]
    assert selector.threshold_ == pytest.approx(expected)
    np.testing.assert_array_equal(
        selector.support_, selector.feature_importances_ > expected
    )


def test_probe_kinds():
    X = np.arange(40, dtype=float).reshape(20, 2)
    probes, names = _probe_columns(X, ["normal", "uniform", "binary", "shuffle"], 2, 0)
    assert list(names) == [
        f"probe_{k}_{i}"
        for k in ("normal", "uniform", "binary", "shuffle")
        for i in (0, 1)
    ]
    assert ((probes[:, 2:4] >= 0) & (probes[:, 2:4] < 1)).all()
    assert set(np.unique(probes[:, 4:6])) <= {0.0, 1.0}
    for j in (6, 7):  # a shuffled real column keeps its values
        assert any(np.array_equal(np.sort(probes[:, j]), X[:, c]) for c in (0, 1))


def test_pandas_in_and_out():
    X, y = _problem(n_features=6)
    frame = pd.DataFrame(X, columns=[f"emb_{i}" for i in range(6)])
    selector = RandomProbeSelector(
        RandomForestClassifier(n_estimators=20, random_state=0),
        n_probes=5,
        distribution=["normal", "shuffle"],
        cv=3,
        random_state=0,
    ).set_output(transform="pandas")
    out = selector.fit(frame, y).transform(frame)
    assert isinstance(out, pd.DataFrame)
    kept = list(selector.get_feature_names_out())
    assert list(out.columns) == kept
    assert {"emb_0", "emb_1"} <= set(kept)
    assert set(selector.features_to_drop_) == set(frame.columns) - set(kept)


def test_pipeline_estimator_needs_permutation_importance():
    X, y = _problem(n_features=6)
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    with pytest.raises(ValueError, match="importance='permutation'"):
        RandomProbeSelector(pipe, importance="coef", cv=2).fit(X, y)
    selector = RandomProbeSelector(
        pipe, importance="permutation", n_repeats=2, cv=2, random_state=0
    ).fit(X, y)
    assert selector.feature_importances_.shape == (6,)


def test_bad_distribution_names_the_kind():
    X, y = _problem(n_features=4)
    with pytest.raises(ValueError, match="gamma"):
        RandomProbeSelector(LogisticRegression(), distribution=["gamma"]).fit(X, y)


def _feature_engine_pipeline(selector):
    return Pipeline(
        [
            ("scale", StandardScaler().set_output(transform="pandas")),
            ("select", selector),
            ("clf", LogisticRegression()),
        ]
    )


def test_feature_engine_probe_selection_in_grid_search():
    X, y = _problem(n_samples=150, n_features=8)
    y = pd.Series(y, index=np.arange(len(y)) + 1000)  # non-default index
    grid = {"clf__C": [0.1, 1.0]}
    fe_selection = pytest.importorskip("feature_engine.selection")
    fe = fe_selection.ProbeFeatureSelection(
        LogisticRegression(), n_probes=2, cv=2, random_state=0
    )
    search = GridSearchCV(_feature_engine_pipeline(fe), grid, cv=2, error_score="raise")
    # feature-engine requires equal X and y indexes; the scaler's pandas output
    # of a numpy X gets a fresh RangeIndex while y keeps its labels.
    with pytest.raises(ValueError, match="indexes of X and y do not match"):
        search.fit(X, y)
    # The two documented fixes: y as numpy, or X carrying y's index.
    search.fit(X, y.to_numpy())
    search.fit(pd.DataFrame(X, index=y.index), y)
    assert search.best_estimator_.named_steps["select"].features_to_drop_ is not None
    ours = RandomProbeSelector(LogisticRegression(), n_probes=2, cv=2, random_state=0)
    GridSearchCV(_feature_engine_pipeline(ours), grid, cv=2, error_score="raise").fit(
        X, y
    )
