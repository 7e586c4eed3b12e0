import pickle
import warnings

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_blobs, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvlm.classifiers import LinearProbeClassifier

# Cheap enough for the ~55 common checks (about 10 s in all on 2 cores) and still
# above the 0.83 training accuracy that check_classifiers_train asks for.
CHEAP = dict(max_iter=20, batch_size=32, learning_rate_init=0.05, device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def multiclass_data():
    X, y = make_classification(
        n_samples=1200,
        n_features=20,
        n_informative=10,
        n_classes=4,
        n_clusters_per_class=1,
        class_sep=1.0,
        random_state=0,
    )
    # Uneven scales and offsets, so the folded standardisation is exercised.
    X = X * np.linspace(0.5, 20, X.shape[1]) + np.linspace(-5, 5, X.shape[1])
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def _probe(hidden_layer_sizes=(), **params):
    params = {"device": "cpu", "random_state": 0, "solver": "adam", **params}
    return LinearProbeClassifier(hidden_layer_sizes, **params)


def test_separable_problem_is_learnt_perfectly():
    X, y = make_blobs(n_samples=400, centers=4, cluster_std=0.5, random_state=1)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    probe = _probe(batch_size=32, learning_rate_init=1e-2).fit(X_train, y_train)
    assert probe.score(X_test, y_test) >= 0.99


def test_close_to_logistic_regression(multiclass_data):
    X_train, X_test, y_train, y_test = multiclass_data
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    reference.fit(X_train, y_train)
    probe = _probe(batch_size=32, learning_rate_init=1e-2).fit(X_train, y_train)
    reference_acc = reference.score(X_test, y_test)
    assert reference_acc < 0.97  # the problem is not trivial
    assert probe.score(X_test, y_test) >= reference_acc - 0.02


def test_mlp_probe_learns_xor_like_problem():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(600, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    linear = _probe(batch_size=32, learning_rate_init=1e-2).fit(X, y)
    mlp = _probe((32,), batch_size=32, learning_rate_init=1e-2).fit(X, y)
    assert linear.score(X, y) < 0.7  # no linear separation exists
    assert mlp.score(X, y) > 0.9


def _standardised(probe, X):
    return (X - probe.mean_) / probe.scale_


@pytest.mark.parametrize("binary", [False, True])
def test_folded_coef_matches_network_in_standardised_space(multiclass_data, binary):
    X_train, X_test, y_train, _ = multiclass_data
    if binary:
        X_train, y_train = X_train[y_train < 2], y_train[y_train < 2]
    probe = _probe(max_iter=30).fit(X_train, y_train)
    n_out = 1 if binary else 4
    assert probe.coef_.shape == (n_out, X_train.shape[1])
    assert probe.intercept_.shape == (n_out,)

    # Statistics of the training rows themselves (validation rows excluded), so
    # mean_ lies within the data's range and scale_ is positive.
    assert np.all(probe.scale_ > 0)
    assert np.all(probe.mean_ >= X_train.min(axis=0))

    # The network's own computation, by hand, in the standardised space.
    network = _standardised(probe, X_test) @ probe.coefs_[0] + probe.intercepts_[0]
    network = network[:, 0] if binary else network
    decision = probe.decision_function(X_test)
    assert decision.shape == network.shape
    assert_allclose(decision, network, rtol=1e-5, atol=1e-5)
    assert_allclose(
        decision, np.squeeze(X_test @ probe.coef_.T + probe.intercept_), atol=1e-5
    )
    coef, intercept = probe._linear_decision()
    assert coef is probe.coef_ and intercept is probe.intercept_


def test_folded_coef_without_standardisation(multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data
    probe = _probe(max_iter=5, standardize=False).fit(X_train / 20, y_train)
    assert probe.mean_ is None and probe.scale_ is None
    assert_allclose(probe.coef_, probe.coefs_[0].T, rtol=1e-6)
    assert_allclose(
        probe.decision_function(X_test / 20),
        (X_test / 20) @ probe.coef_.T + probe.intercept_,
        atol=1e-5,
    )


def test_probabilities_follow_the_decision_by_hand(multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data
    probe = _probe(max_iter=10).fit(X_train, y_train)
    d = probe.decision_function(X_test)
    expected = np.exp(d - d.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    proba = probe.predict_proba(X_test)
    assert_allclose(proba, expected, rtol=1e-10)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert_array_equal(probe.predict(X_test), probe.classes_[d.argmax(axis=1)])

    binary = _probe(max_iter=10).fit(X_train[y_train < 2], y_train[y_train < 2])
    d = binary.decision_function(X_test)
    assert d.ndim == 1
    positive = 1.0 / (1.0 + np.exp(-d))
    assert_allclose(binary.predict_proba(X_test), np.c_[1 - positive, positive])
    assert_array_equal(binary.predict(X_test), np.where(d > 0, 1, 0))


def test_mlp_decision_matches_forward_pass_by_hand(multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data
    probe = _probe((16,), max_iter=10).fit(X_train, y_train)
    assert [w.shape for w in probe.coefs_] == [(20, 16), (16, 4)]
    hidden = np.maximum(
        _standardised(probe, X_test) @ probe.coefs_[0] + probe.intercepts_[0], 0
    )
    expected = hidden @ probe.coefs_[1] + probe.intercepts_[1]
    assert_allclose(probe.decision_function(X_test), expected, rtol=1e-5, atol=1e-5)
    assert probe._linear_decision() is None
    assert not hasattr(probe, "coef_")
    # A linear fit followed by an MLP refit leaves no stale coef_ behind.
    probe.set_params(hidden_layer_sizes=()).fit(X_train, y_train)
    probe.set_params(hidden_layer_sizes=(4,), max_iter=1).fit(X_train, y_train)
    assert not hasattr(probe, "coef_") and not hasattr(probe, "intercept_")


def test_string_labels_round_trip():
    X, y = make_blobs(n_samples=300, centers=3, random_state=0)
    names = np.array(["cat", "dog", "ant"])[y]
    probe = _probe(batch_size=32, learning_rate_init=1e-2).fit(X, names)
    assert_array_equal(probe.classes_, ["ant", "cat", "dog"])
    assert set(probe.predict(X)) <= {"ant", "cat", "dog"}
    assert probe.score(X, names) > 0.9


def test_same_seed_same_model_and_global_rng_untouched(multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()  # noqa: NPY002
    first = _probe(max_iter=5, random_state=3).fit(X_train, y_train)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert_array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002

    second = clone(first).fit(X_train, y_train)
    assert_array_equal(first.coef_, second.coef_)
    assert_array_equal(first.predict_proba(X_test), second.predict_proba(X_test))
    other = clone(first).set_params(random_state=4).fit(X_train, y_train)
    assert not np.array_equal(first.coef_, other.coef_)


def test_validation_rows_are_carved_from_fit_rows(monkeypatch, multiclass_data):
    X_train, _, y_train, _ = multiclass_data
    seen = {}
    original = LinearProbeClassifier._split_validation

    def spy(self, y_index, seed):
        seen["n_rows"] = y_index.shape[0]
        seen["train"], seen["val"] = original(self, y_index, seed)
        return seen["train"], seen["val"]

    monkeypatch.setattr(LinearProbeClassifier, "_split_validation", spy)
    probe = _probe(max_iter=40, validation_fraction=0.2).fit(X_train, y_train)

    train, val = seen["train"], seen["val"]
    n = X_train.shape[0]
    assert seen["n_rows"] == n
    assert len(np.intersect1d(train, val)) == 0
    assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert len(val) == int(np.ceil(0.2 * n))
    # Stratified: each class keeps its share within one row.
    for label in np.unique(y_train):
        share = np.mean(y_train == label) * len(val)
        assert abs(np.sum(y_train[val] == label) - share) <= 1

    # The kept weights are the best epoch's: the lowest validation loss, and
    # their accuracy on the validation rows is the one recorded for that epoch.
    assert len(probe.validation_scores_) == probe.n_iter_ == len(probe.loss_curve_)
    assert len(probe.validation_loss_curve_) == probe.n_iter_
    assert probe.best_epoch_ == np.argmin(probe.validation_loss_curve_) + 1
    kept = probe.validation_scores_[probe.best_epoch_ - 1]
    accuracy = np.mean(probe.predict(X_train[val]) == y_train[val])
    assert accuracy == pytest.approx(kept, abs=1.5 / len(val))


def test_without_early_stopping_all_rows_train(monkeypatch, multiclass_data):
    X_train, _, y_train, _ = multiclass_data

    def fail(*args):
        raise AssertionError("no validation split without early stopping")

    monkeypatch.setattr(LinearProbeClassifier, "_split_validation", fail)
    probe = _probe(max_iter=8, early_stopping=False).fit(X_train, y_train)
    assert probe.validation_scores_ is None
    assert probe.validation_loss_curve_ is None
    assert probe.best_epoch_ == probe.n_iter_ == len(probe.loss_curve_)
    assert_allclose(probe.mean_, X_train.mean(axis=0))
    assert probe.loss_curve_[-1] < probe.loss_curve_[0]


def test_weight_decay_shrinks_weights(multiclass_data):
    X_train, _, y_train, _ = multiclass_data
    plain = _probe(
        max_iter=10, early_stopping=False, batch_size=32, learning_rate_init=1e-2
    )
    plain.fit(X_train, y_train)
    decayed = clone(plain).set_params(weight_decay=1.0).fit(X_train, y_train)
    assert np.linalg.norm(decayed.coefs_[0]) < 0.8 * np.linalg.norm(plain.coefs_[0])
    # Biases are not decayed: they stay of the same order.
    assert np.linalg.norm(decayed.intercepts_[0]) > 0.1 * np.linalg.norm(
        plain.intercepts_[0]
    )


def test_pickle_holds_numpy_only(multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data
    probe = _probe((8,), max_iter=3).fit(X_train, y_train)
    for name, value in vars(probe).items():
        values = value if isinstance(value, list) else [value]
        assert not any(isinstance(v, torch.Tensor) for v in values), name
    blob = pickle.dumps(probe)
    assert b"torch" not in blob
    restored = pickle.loads(blob)
    assert_array_equal(restored.predict_proba(X_test), probe.predict_proba(X_test))


def test_float32_input_stays_float32(multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data
    probe = _probe(max_iter=3).fit(X_train.astype(np.float32), y_train)
    assert probe.decision_function(X_test.astype(np.float32)).dtype == np.float32


def test_device_auto_prefers_cuda_then_mps(monkeypatch):
    from skvlm.models._registry import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"learning_rate_init": -1.0}, "learning_rate_init"),
        ({"activation": "gelu"}, "activation"),
        ({"hidden_layer_sizes": (16, 0)}, r"hidden_layer_sizes\[1\]"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "not-a-device"}, "not a torch device"),
        ({"solver": "sgd"}, "solver"),
        ({"alpha": -1.0}, "alpha"),
    ],
)
def test_bad_params_are_named(params, message):
    X, y = make_blobs(n_samples=40, random_state=0)
    with pytest.raises(ValueError, match=message):
        LinearProbeClassifier(**params).fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_missing_cuda_is_explained():
    X, y = make_blobs(n_samples=40, random_state=0)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        LinearProbeClassifier(device="cuda").fit(X, y)


def test_bad_data_errors():
    X, y = make_blobs(n_samples=40, random_state=0)
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _probe().fit(X_nan, y)
    with pytest.raises(ValueError, match="one class"):
        _probe().fit(X, np.zeros(40))
    with pytest.raises(ValueError, match="leaves none to train"):
        _probe(validation_fraction=0.6).fit(X[:2], [0, 1])
    fitted = _probe(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(X_nan)


# ----------------------------------------------------------------- lbfgs solver
@pytest.mark.parametrize("C", [1.0, 0.05])
@pytest.mark.parametrize("binary", [False, True])
def test_lbfgs_matches_logistic_regression(multiclass_data, C, binary):
    # LogisticRegression minimises C * sum(loss) + ||W||^2 / 2; alpha = 1 / C
    # gives the same minimiser. Both see standardised features, so the penalty
    # acts in the same space.
    X_train, X_test, y_train, y_test = multiclass_data
    if binary:
        X_train, y_train = X_train[y_train < 2], y_train[y_train < 2]
        X_test, y_test = X_test[y_test < 2], y_test[y_test < 2]
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, tol=1e-8, max_iter=5000)
    ).fit(X_train, y_train)
    probe = _probe(solver="lbfgs", alpha=1 / C, tol=1e-7, max_iter=500)
    probe.fit(X_train, y_train)
    assert probe.n_iter_ < 500
    reference_acc = reference.score(X_test, y_test)
    assert abs(probe.score(X_test, y_test) - reference_acc) <= 0.005
    # The same optimum, up to float32 training.
    scale = reference[0].scale_
    lr = reference[-1]
    assert_allclose(
        probe.coef_,
        lr.coef_ / scale,
        rtol=0,
        atol=2e-3 * np.abs(lr.coef_ / scale).max(),
    )
    assert_allclose(
        probe.predict_proba(X_test), reference.predict_proba(X_test), atol=2e-3
    )


def test_lbfgs_coef_is_the_decision(multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data
    probe = _probe(solver="lbfgs", alpha=1.0).fit(X_train, y_train)
    network = _standardised(probe, X_test) @ probe.coefs_[0] + probe.intercepts_[0]
    decision = probe.decision_function(X_test)
    assert_allclose(decision, network, rtol=1e-5, atol=1e-5)
    assert_allclose(decision, X_test @ probe.coef_.T + probe.intercept_, atol=1e-5)
    coef, intercept = probe._linear_decision()
    assert coef is probe.coef_ and intercept is probe.intercept_
    d = decision - decision.max(axis=1, keepdims=True)
    expected = np.exp(d) / np.exp(d).sum(axis=1, keepdims=True)
    assert_allclose(probe.predict_proba(X_test), expected, rtol=1e-10)


def test_lbfgs_trains_on_all_rows_and_is_reproducible(monkeypatch, multiclass_data):
    X_train, X_test, y_train, _ = multiclass_data

    def fail(*args):
        raise AssertionError("lbfgs uses no validation split")

    monkeypatch.setattr(LinearProbeClassifier, "_split_validation", fail)
    probe = _probe((8,), solver="lbfgs", alpha=1.0, max_iter=30, random_state=3)
    probe.fit(X_train, y_train)  # early_stopping=True is ignored
    assert_allclose(probe.mean_, X_train.mean(axis=0))
    assert probe.validation_scores_ is None
    assert probe.validation_loss_curve_ is None
    assert probe.best_epoch_ == probe.n_iter_ <= 30
    assert len(probe.loss_curve_) >= probe.n_iter_
    assert min(probe.loss_curve_) < probe.loss_curve_[0]

    again = clone(probe).fit(X_train, y_train)
    for first, second in zip(probe.coefs_, again.coefs_, strict=True):
        assert_array_equal(first, second)
    other = clone(probe).set_params(random_state=4).fit(X_train, y_train)
    assert not np.array_equal(probe.coefs_[0], other.coefs_[0])


def test_lbfgs_warns_at_max_iter(multiclass_data):
    X_train, _, y_train, _ = multiclass_data
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning, match="max_iter=2"):
            _probe(solver="lbfgs", max_iter=2, tol=0.0).fit(X_train, y_train)
        probe = _probe(solver="lbfgs", alpha=1.0, max_iter=500).fit(X_train, y_train)
    assert probe.n_iter_ < 500


def test_alpha_is_an_l2_term_for_adam_too(multiclass_data):
    X_train, _, y_train, _ = multiclass_data
    plain = _probe(
        max_iter=10, early_stopping=False, batch_size=32, learning_rate_init=1e-2
    )
    plain.fit(X_train, y_train)
    penalised = clone(plain).set_params(alpha=200.0).fit(X_train, y_train)
    assert np.linalg.norm(penalised.coefs_[0]) < 0.8 * np.linalg.norm(plain.coefs_[0])
