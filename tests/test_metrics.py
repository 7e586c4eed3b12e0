import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.metrics import top_k_accuracy_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.svm import LinearSVC

from skvlm.metrics import top_k_accuracy_scorer


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=240,
        n_features=10,
        n_informative=6,
        n_classes=6,
        n_clusters_per_class=1,
        class_sep=0.7,
        random_state=0,
    )
    names = np.array(["ant", "bee", "cat", "dog", "eel", "fox"])[y]
    return X, names


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize(
    "estimator, response",
    [
        (LogisticRegression(max_iter=500), "predict_proba"),
        (RidgeClassifier(), "decision_function"),
    ],
)
def test_equals_sklearn_metric_by_hand(data, k, estimator, response):
    X, y = data
    model = estimator.fit(X[:160], y[:160])
    expected = top_k_accuracy_score(
        y[160:], getattr(model, response)(X[160:]), k=k, labels=model.classes_
    )
    assert top_k_accuracy_scorer(k)(model, X[160:], y[160:]) == pytest.approx(expected)
    assert 0 < expected < 1


def test_binary_decision_function_matches_predict(data):
    X, y = data
    binary = np.isin(y, ["ant", "bee"])
    X, y = X[binary], y[binary]
    model = LinearSVC().fit(X, y)  # decision_function only, 1-D
    top1 = top_k_accuracy_scorer(k=1)(model, X, y)
    assert top1 == pytest.approx(np.mean(model.predict(X) == y))


def test_test_fold_missing_classes_uses_estimator_classes(data):
    X, y = data
    model = LogisticRegression(max_iter=500).fit(X, y)
    keep = np.isin(y, ["ant", "cat", "fox"])
    proba = model.predict_proba(X[keep])
    # By hand: is the true class among the k best columns?
    order = np.argsort(-proba, axis=1)[:, :2]
    true_column = np.searchsorted(model.classes_, y[keep])
    expected = np.mean([t in row for t, row in zip(true_column, order, strict=True)])
    assert top_k_accuracy_scorer(k=2)(model, X[keep], y[keep]) == pytest.approx(
        expected
    )


def test_label_unseen_in_training_counts_as_miss(data):
    X, y = data
    seen = y != "eel"
    model = LogisticRegression(max_iter=500).fit(X[seen], y[seen])
    score = top_k_accuracy_scorer(k=2)(model, X, y)
    on_seen = top_k_accuracy_score(
        y[seen],
        model.predict_proba(X[seen]),
        k=2,
        labels=model.classes_,
        normalize=False,
    )
    assert score == pytest.approx(on_seen / len(y))


def test_sample_weight(data):
    X, y = data
    model = LogisticRegression(max_iter=500).fit(X, y)
    weight = np.linspace(0.1, 2.0, len(y))
    expected = top_k_accuracy_score(
        y, model.predict_proba(X), k=2, labels=model.classes_, sample_weight=weight
    )
    scored = top_k_accuracy_scorer(k=2)(model, X, y, sample_weight=weight)
    assert scored == pytest.approx(expected)


def test_in_cross_val_score_and_grid_search(data):
    X, y = data
    # Unshuffled folds of sorted labels: each training fold lacks whole classes.
    order = np.argsort(y, kind="stable")
    X, y = X[order], y[order]
    cv = KFold(n_splits=3)
    scorer = top_k_accuracy_scorer(k=3)
    scores = cross_val_score(
        LogisticRegression(max_iter=500), X, y, cv=cv, scoring=scorer
    )
    for score, (train, test) in zip(scores, cv.split(X), strict=True):
        model = LogisticRegression(max_iter=500).fit(X[train], y[train])
        known = np.isin(y[test], model.classes_)
        hits = top_k_accuracy_score(
            y[test][known],
            model.predict_proba(X[test][known]),
            k=3,
            labels=model.classes_,
            normalize=False,
        )
        assert score == pytest.approx(hits / len(test))
    assert scores.max() < 0.2  # most test rows belong to classes unseen in training

    shuffled = KFold(n_splits=3, shuffle=True, random_state=0)
    manual = []
    for train, test in shuffled.split(X):
        model = LogisticRegression(max_iter=500, C=0.1).fit(X[train], y[train])
        manual.append(
            top_k_accuracy_score(
                y[test], model.predict_proba(X[test]), k=3, labels=model.classes_
            )
        )
    search = GridSearchCV(
        LogisticRegression(max_iter=500), {"C": [0.1]}, cv=shuffled, scoring=scorer
    ).fit(X, y)
    assert search.best_score_ == pytest.approx(np.mean(manual))


@pytest.mark.parametrize("k", [0, -1, 2.5, "5", True])
def test_bad_k(k):
    with pytest.raises(
        ValueError,
        match=r"'k' parameter .* int in the range \[1, inf\)|k=True .* int >= 1",
    ):
        top_k_accuracy_scorer(k)


def test_estimator_without_scores(data):
    from sklearn.base import BaseEstimator, ClassifierMixin

    class LabelsOnly(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.full(len(X), self.classes_[0])

    X, y = data
    with pytest.raises(ValueError, match="neither predict_proba"):
        top_k_accuracy_scorer()(LabelsOnly().fit(X, y), X, y)
