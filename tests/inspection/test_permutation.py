"""skvlm.inspection.permutation_importance against sklearn's own function."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import permutation_importance as sk_permutation_importance
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.metrics import accuracy_score, f1_score, get_scorer, make_scorer
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    StandardScaler,
)
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils.extmath import softmax

from skvlm.inspection import groups_from_feature_names, permutation_importance
from skvlm.inspection._linear import linear_decision


def _data(n_classes=3, n=60, p=6, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 5, size=p) + rng.normal(size=p)
    logits = X[:, :n_classes] * 2.0 + rng.normal(size=(n, n_classes))
    return X, np.argmax(logits, axis=1) if n_classes > 1 else logits[:, 0]


def _assert_same(ours, ref):
    if "importances" not in ref:  # multi-metric: a dict of Bunches
        assert set(ours) == set(ref)
        for name in ref:
            _assert_same(ours[name], ref[name])
        return
    for key in ("importances", "importances_mean", "importances_std"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=1e-9)


CLASSIFIERS = {
    "logreg_multi": (LogisticRegression(max_iter=500), 3),
    "logreg_binary": (LogisticRegression(max_iter=500), 2),
    "linear_svc": (LinearSVC(), 3),
    "ridge_classifier": (RidgeClassifier(), 3),
    "sgd_log": (SGDClassifier(loss="log_loss", random_state=0), 3),
    "sgd_log_binary": (SGDClassifier(loss="log_loss", random_state=0), 2),
    "scaled_pca_logreg": (
        make_pipeline(StandardScaler(), PCA(4, whiten=True), LogisticRegression()),
        3,
    ),
    "minmax_maxabs_passthrough": (
        make_pipeline(MinMaxScaler(), "passthrough", MaxAbsScaler(), LinearSVC()),
        2,
    ),
    "random_forest": (RandomForestClassifier(n_estimators=5, random_state=0), 3),
}
SCORINGS = {
    "default": None,
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "roc_auc": "roc_auc_ovr",
    "log_loss": "neg_log_loss",
    "multi_list": ["accuracy", "f1_macro"],
    "multi_dict": {
        "acc": make_scorer(accuracy_score),
        "f1": make_scorer(f1_score, average="micro"),
    },
    "plain_callable": lambda est, X, y: accuracy_score(y, est.predict(X)),
}


@pytest.mark.parametrize("scoring", list(SCORINGS), ids=str)
@pytest.mark.parametrize("name", list(CLASSIFIERS), ids=str)
def test_equals_sklearn_for_classifiers(name, scoring):
    estimator, n_classes = CLASSIFIERS[name]
    X, y = _data(n_classes)
    if not hasattr(estimator, "classes_"):  # fit once, shared by the scorings
        estimator.fit(X, y)
    scorer = SCORINGS[scoring]
    if isinstance(scorer, str) or scorer is None:
        try:
            get_scorer(scorer) if scorer else None
            if scorer:
                get_scorer(scorer)(estimator, X, y)
        except (AttributeError, ValueError):
            pytest.skip(f"{scorer} does not apply to {name}")
    kwargs = dict(scoring=scorer, n_repeats=3, random_state=7)
    ours = permutation_importance(estimator, X, y, **kwargs)
    ref = sk_permutation_importance(estimator, X, y, **kwargs)
    _assert_same(ours, ref)


@pytest.mark.parametrize(
    "estimator, scoring",
    [
        (Ridge(alpha=0.5), None),
        (LinearRegression(), "neg_mean_squared_error"),
        (make_pipeline(StandardScaler(), Ridge()), ["r2", "neg_mean_absolute_error"]),
        (DecisionTreeRegressor(max_depth=3, random_state=0), None),
    ],
)
def test_equals_sklearn_for_regressors(estimator, scoring):
    X, y = _data(n_classes=1)
    estimator.fit(X, y)
    kwargs = dict(scoring=scoring, n_repeats=4, random_state=3)
    _assert_same(
        permutation_importance(estimator, X, y, **kwargs),
        sk_permutation_importance(estimator, X, y, **kwargs),
    )


@pytest.mark.parametrize("max_samples", [1.0, 0.5, 31])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("as_frame", [False, True])
@pytest.mark.parametrize(
    "estimator",
    [
        make_pipeline(StandardScaler(), LogisticRegression()),
        KNeighborsClassifier(n_neighbors=3),
    ],
    ids=["linear", "general"],
)
def test_equals_sklearn_with_options(estimator, max_samples, weighted, as_frame):
    X, y = _data(3)
    rng = np.random.RandomState(1)
    sample_weight = rng.uniform(0.1, 2, size=len(y)) if weighted else None
    if as_frame:
        X = pd.DataFrame(X, columns=[f"c{j}" for j in range(X.shape[1])])
        y = pd.Series(y, index=np.arange(len(y)) + 100)
    estimator.fit(X, y)
    kwargs = dict(
        n_repeats=3,
        random_state=np.random.RandomState(5),
        sample_weight=sample_weight,
        max_samples=max_samples,
    )
    ours = permutation_importance(estimator, X, y, **kwargs)
    kwargs["random_state"] = np.random.RandomState(5)
    _assert_same(ours, sk_permutation_importance(estimator, X, y, **kwargs))


class _CountingLogReg(LogisticRegression):
    calls = 0

    def decision_function(self, X):
        type(self).calls += 1
        return super().decision_function(X)


def test_linear_path_makes_no_predict_call_per_column(monkeypatch):
    X, y = _data(3, p=20)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    calls = []
    original = LogisticRegression.decision_function
    monkeypatch.setattr(
        LogisticRegression,
        "decision_function",
        lambda self, X: calls.append(1) or original(self, X),
    )
    permutation_importance(clf, X, y, scoring="neg_log_loss", random_state=0)
    assert len(calls) == 1  # the baseline score only


class _CountingKNN(KNeighborsClassifier):
    def predict(self, X):
        self.calls_.append(len(X))
        return super().predict(X)


def test_general_path_batches_predict_calls():
    X, y = _data(3, p=10)
    knn = _CountingKNN().fit(X, y)
    knn.calls_ = []
    ours = permutation_importance(knn, X, y, scoring="accuracy", random_state=0)
    assert len(knn.calls_) == 2  # baseline + one stacked batch, not 10 x 5 calls
    assert knn.calls_[1] == 10 * 5 * len(X)
    _assert_same(
        ours, sk_permutation_importance(knn, X, y, scoring="accuracy", random_state=0)
    )


def test_linear_decision_recognises_supported_and_refuses_others():
    X, y = _data(3)
    assert linear_decision(LogisticRegression().fit(X, y)) is not None
    sgd_huber = SGDClassifier(loss="modified_huber", random_state=0).fit(X, y)
    assert linear_decision(sgd_huber) is None  # its predict_proba is not derived
    clipped = make_pipeline(MinMaxScaler(clip=True), LogisticRegression()).fit(X, y)
    assert linear_decision(clipped) is None
    assert linear_decision(RandomForestClassifier(n_estimators=2).fit(X, y)) is None


class _SoftmaxProbe(ClassifierMixin, BaseEstimator):
    """Declares itself linear the way skvlm.LinearProbeClassifier does."""

    def fit(self, X, y):
        lr = LogisticRegression(max_iter=500).fit(X, y)
        self.classes_ = lr.classes_
        self.coef_, self.intercept_ = lr.coef_ * 1.5, lr.intercept_ - 0.1
        self.n_features_in_ = X.shape[1]
        return self

    def _linear_decision(self):
        return self.coef_, self.intercept_

    def decision_function(self, X):
        d = np.asarray(X) @ self.coef_.T + self.intercept_
        return d.ravel() if d.shape[1] == 1 else d

    def predict_proba(self, X):
        d = np.asarray(X) @ self.coef_.T + self.intercept_
        if d.shape[1] == 1:
            p = 1 / (1 + np.exp(-d[:, 0]))
            return np.stack([1 - p, p], axis=1)
        return softmax(d)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_decision_protocol(n_classes):
    X, y = _data(n_classes)
    probe = _SoftmaxProbe().fit(X, y)
    assert linear_decision(probe) is not None
    kwargs = dict(scoring=["accuracy", "neg_log_loss"], n_repeats=2, random_state=0)
    _assert_same(
        permutation_importance(probe, X, y, **kwargs),
        sk_permutation_importance(probe, X, y, **kwargs),
    )


def _reference_group_scores(estimator, X, y, group, random_state, n_repeats):
    # sklearn's seed handling written out: one seed, one in-place shuffled index.
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    rs = np.random.RandomState(seed)
    idx = np.arange(len(X))
    X_perm = X.copy()
    scores = []
    for _ in range(n_repeats):
        rs.shuffle(idx)
        X_perm[:, group] = X_perm[idx][:, group]
        scores.append(estimator.score(X_perm, y))
    return estimator.score(X, y) - np.array(scores)


@pytest.mark.parametrize(
    "estimator",
    [
        make_pipeline(StandardScaler(), LogisticRegression()),
        RandomForestClassifier(n_estimators=5, random_state=0),
    ],
    ids=["linear", "general"],
)
def test_groups_permute_columns_together(estimator):
    X, y = _data(3, p=6)
    estimator.fit(X, y)
    groups = {"ab": [0, 1], "c": [2], "rest": [3, 4, 5]}
    result = permutation_importance(estimator, X, y, groups=groups, random_state=4)
    assert list(result.group_names) == ["ab", "c", "rest"]
    assert result.importances.shape == (3, 5)
    for row, cols in enumerate(groups.values()):
        expected = _reference_group_scores(estimator, X, y, cols, 4, 5)
        np.testing.assert_allclose(result.importances[row], expected, atol=1e-9)


def test_singleton_groups_equal_ungrouped_and_names_resolve():
    X, y = _data(3, p=4)
    frame = pd.DataFrame(X, columns=list("abcd"))
    clf = LogisticRegression().fit(frame, y)
    grouped = permutation_importance(
        clf, frame, y, groups={n: [n] for n in "abcd"}, random_state=0
    )
    _assert_same(grouped, sk_permutation_importance(clf, frame, y, random_state=0))


@pytest.mark.parametrize(
    "groups, match",
    [
        ({"g": [9]}, "out of range"),
        ({"g": []}, "is empty"),
        ({"g": ["a"]}, "no column names"),
        ({"g": [0, 0]}, "twice"),
        ({"g": [0.5]}, "int index or a str"),
    ],
)
def test_bad_groups_name_the_group(groups, match):
    X, y = _data(3, p=4)
    clf = LogisticRegression().fit(X, y)
    with pytest.raises((ValueError, TypeError), match=match):
        permutation_importance(clf, X, y, groups=groups)


def test_groups_from_feature_names():
    names = [
        "vision_l3_cls_0",
        "vision_l3_mean_0",
        "vision_l-1_cls_0",
        "language_l12_image_mean_0",
        "language_l12_image_mean_1",
        "language_l12_last_0",
    ]
    assert groups_from_feature_names(names) == {
        "vision_l3": [0, 1],
        "vision_l-1": [2],
        "language_l12": [3, 4, 5],
    }
    assert groups_from_feature_names(names, by="stage") == {
        "vision": [0, 1, 2],
        "language": [3, 4, 5],
    }
    assert groups_from_feature_names(names, by="site") == {
        "vision_l3_cls": [0],
        "vision_l3_mean": [1],
        "vision_l-1_cls": [2],
        "language_l12_image_mean": [3, 4],
        "language_l12_last": [5],
    }
    prefixed = ["union__vision_l1_cls_0", "union__vision_l2_cls_0"]
    assert groups_from_feature_names(prefixed) == {
        "union__vision_l1": [0],
        "union__vision_l2": [1],
    }
    with pytest.raises(ValueError, match="index 1"):
        groups_from_feature_names(["vision_l1_cls_0", "pca0"])
    with pytest.raises(ValueError, match="'by' parameter"):
        groups_from_feature_names(names, by="pooling")


def test_precomputed_steps_transform_once():
    X, y = _data(3, p=5)
    frame = pd.DataFrame(np.abs(X), columns=[f"x{j}" for j in range(5)])
    calls = []

    def costly(Z):
        calls.append(len(Z))
        return np.log1p(Z)

    pipe = make_pipeline(
        FunctionTransformer(costly, feature_names_out="one-to-one"),
        StandardScaler(),
        LogisticRegression(),
    ).fit(frame, y)
    Xt = pipe[:1].transform(frame)
    calls.clear()
    for steps in (1, "functiontransformer"):
        result = permutation_importance(
            pipe, frame, y, precomputed_steps=steps, random_state=0
        )
        assert len(calls) == 1
        calls.clear()
        _assert_same(result, sk_permutation_importance(pipe[1:], Xt, y, random_state=0))
        assert list(result.feature_names) == list(frame.columns)
    grouped = permutation_importance(
        pipe, frame, y, precomputed_steps=1, groups={"first": ["x0", "x1"]}
    )
    assert grouped.importances.shape == (1, 5)


def test_precomputed_steps_errors():
    X, y = _data(3)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    with pytest.raises(ValueError, match=r"\[1, 1\]"):
        permutation_importance(pipe, X, y, precomputed_steps=2)
    with pytest.raises(ValueError, match="standardscaler"):
        permutation_importance(pipe, X, y, precomputed_steps="nope")
    with pytest.raises(TypeError, match="Pipeline"):
        permutation_importance(pipe[-1], X, y, precomputed_steps=1)


@pytest.mark.parametrize("scoring", [None, "neg_log_loss"])
def test_threads_give_the_same_numbers(scoring):
    X, y = _data(3, p=12)
    clf = LogisticRegression().fit(X, y)
    kwargs = dict(scoring=scoring, n_repeats=2, random_state=0)
    _assert_same(
        permutation_importance(clf, X, y, n_jobs=2, **kwargs),
        sk_permutation_importance(clf, X, y, **kwargs),
    )


def test_constant_and_zero_weight_columns_on_the_accuracy_path():
    # Constant columns and exact zero weights take the b == 0 branch of the
    # interval computation; integer features make delta == 0 frequent.
    rng = np.random.RandomState(3)
    X = rng.randint(0, 3, size=(70, 6)).astype(float)
    X[:, 0] = 1.0
    y = (X[:, 1] + X[:, 2] + rng.randint(0, 2, 70) > 2).astype(int) + (X[:, 3] > 1)
    for clf in (
        LogisticRegression(l1_ratio=1.0, solver="saga", C=0.05, max_iter=2000),
        LinearSVC(),
    ):
        clf.fit(X, y)
        _assert_same(
            permutation_importance(clf, X, y, random_state=1),
            sk_permutation_importance(clf, X, y, random_state=1),
        )


def test_mixed_dtype_frame_takes_the_in_place_path():
    X, y = _data(3, p=4)
    frame = pd.DataFrame(X, columns=list("abcd"))
    frame["a"] = (frame["a"] > 0).astype(np.int64)  # two dtypes: no stacking
    knn = KNeighborsClassifier(n_neighbors=3).fit(frame, y)
    kwargs = dict(n_repeats=2, random_state=0, max_samples=0.5)
    _assert_same(
        permutation_importance(
            knn, frame, y, groups={n: [n] for n in "abcd"}, **kwargs
        ),
        sk_permutation_importance(knn, frame, y, **kwargs),
    )
