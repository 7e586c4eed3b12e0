"""LinearProbeClassifier.paper_preset against the paper's probe
(feature_analysis/probe.py of GitHub yuhui-zh15/VLMClassifier, transcribed below)."""

import random
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skvlm.classifiers import LinearProbeClassifier


def _paper_probe(
    X_train, y_train, X_test, y_test, n_epochs, mlp=False, seed=0, weights=False
):
    """probe.py's LinearProbing / MLPProbing loop on the CPU: Adam 1e-3, batch 512,
    cross-entropy, the rows in one fixed order; test accuracy after each epoch."""
    torch.manual_seed(seed)
    d, k = X_train.shape[1], int(y_train.max()) + 1
    if mlp:
        model = torch.nn.Sequential(
            torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, k)
        )
    else:
        model = torch.nn.Linear(d, k)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    criterion = torch.nn.CrossEntropyLoss()
    train_features = torch.tensor(X_train, dtype=torch.float32)
    train_labels = torch.tensor(y_train)
    test_features = torch.tensor(X_test, dtype=torch.float32)
    accs = []
    for _ in range(n_epochs):
        for i in range(0, len(train_features), 512):
            optimizer.zero_grad()
            loss = criterion(
                model(train_features[i : i + 512]), train_labels[i : i + 512]
            )
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            preds = model(test_features).argmax(dim=1).numpy()
        accs.append(float(np.mean(preds == y_test)))
    if weights:
        return accs, [p.detach().numpy() for p in model.parameters()]
    return accs


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


def test_preset_is_the_papers_settings():
    probe = LinearProbeClassifier.paper_preset()
    params = probe.get_params()
    expected = {
        "hidden_layer_sizes": (),
        "solver": "adam",
        "learning_rate_init": 1e-3,  # optim.Adam(lr=0.001)
        "batch_size": 512,  # bsz = 512
        "alpha": 0.0,
        "weight_decay": 0.0,
        "max_iter": 500,  # --n_epochs 500 (probe.sh: 100 for ImageNet)
        "standardize": False,  # raw features
        "early_stopping": False,
        "init": "torch_linear",  # nn.Linear's default initialisation
        "shuffle": False,  # the rows in one order, shuffled once beforehand
    }
    assert {k: params[k] for k in expected} == expected
    mlp = LinearProbeClassifier.paper_preset(mlp=True, n_epochs=100, device="cpu")
    assert mlp.hidden_layer_sizes == ("n_features",) and mlp.max_iter == 100
    assert mlp.device == "cpu"


@pytest.mark.parametrize("mlp", [False, True])
def test_preset_trains_like_the_papers_loop(digits, mlp):
    X_train, X_test, y_train, y_test = digits
    n_epochs = 200
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a fixed schedule
        probe = LinearProbeClassifier.paper_preset(
            mlp=mlp, n_epochs=n_epochs, device="cpu", random_state=0
        ).fit(X_train, y_train)
    assert probe.n_iter_ == n_epochs and probe.mean_ is None
    d = X_train.shape[1]
    expected_shapes = [(d, d), (d, 10)] if mlp else [(d, 10)]
    assert [w.shape for w in probe.coefs_] == expected_shapes
    paper = _paper_probe(X_train, y_train, X_test, y_test, n_epochs, mlp=mlp)
    # the same model and optimiser: the last epochs agree within a few points
    # (the initialisation and the per-epoch shuffling differ)
    assert abs(probe.score(X_test, y_test) - paper[-1]) < 0.03
    assert probe.score(X_test, y_test) > 0.9


def test_n_features_is_checked():
    with pytest.raises(ValueError, match="'n_features'"):
        LinearProbeClassifier(hidden_layer_sizes=("wide",)).fit(np.eye(4), [0, 1, 0, 1])


@pytest.mark.parametrize("mlp", [False, True])
def test_preset_is_the_papers_loop_epoch_by_epoch(digits, mlp):
    """Same seed, rows shuffled once: nn.Linear's initial weights, the same
    mini-batches every epoch, and so the paper's test-accuracy curve, whose
    maximum is the paper's figure (partial_fit: one epoch a call)."""
    X_train, X_test, y_train, y_test = digits
    order = list(range(len(y_train)))
    random.Random(1234).shuffle(order)  # probe.py: random.shuffle(data), once
    X_train, y_train = X_train[order][:700], y_train[order][:700]  # 2 batches
    n_epochs, random_state = 15, 3
    # the probe's documented seed: one int drawn from random_state
    seed = int(np.random.RandomState(random_state).randint(np.iinfo(np.int32).max))
    paper, paper_weights = _paper_probe(
        X_train, y_train, X_test, y_test, n_epochs, mlp=mlp, seed=seed, weights=True
    )
    probe = LinearProbeClassifier.paper_preset(
        mlp=mlp, n_epochs=n_epochs, device="cpu", random_state=random_state
    )
    ours = []
    for _ in range(n_epochs):
        probe.partial_fit(X_train, y_train, classes=np.arange(10))
        ours.append(probe.score(X_test, y_test))
    np.testing.assert_allclose(ours, paper, atol=2 / len(y_test))
    assert max(ours) == pytest.approx(max(paper), abs=2 / len(y_test))
    for ours_w, (w, b) in zip(
        zip(probe.coefs_, probe.intercepts_, strict=True),
        zip(paper_weights[0::2], paper_weights[1::2], strict=True),
        strict=True,
    ):
        np.testing.assert_allclose(ours_w[0], w.T, atol=1e-4)
        np.testing.assert_allclose(ours_w[1], b, atol=1e-4)
    # fit with max_iter epochs is the same probe as the epoch-by-epoch run
    fitted = clone(probe).fit(X_train, y_train)
    np.testing.assert_allclose(fitted.coefs_[-1], probe.coefs_[-1], atol=1e-6)


def test_sound_choices_differ_from_the_papers(digits):
    """init="zero_output" starts the output layer at 0; shuffle=True visits the
    rows in a new order each epoch, so the weights depend on it."""
    X_train, _, y_train, _ = digits
    X_train, y_train = X_train[:600], y_train[:600]
    sound = LinearProbeClassifier.paper_preset(
        n_epochs=1, device="cpu", random_state=0, init="zero_output", shuffle=True
    )
    tiny_step = dict(learning_rate_init=1e-12)
    start = clone(sound).set_params(**tiny_step).fit(X_train, y_train)
    assert np.abs(start.coefs_[0]).max() < 1e-9  # zero start
    paper = LinearProbeClassifier.paper_preset(
        n_epochs=1, device="cpu", random_state=0
    ).set_params(**tiny_step)
    bound = 1 / np.sqrt(X_train.shape[1])
    drawn = paper.fit(X_train, y_train).coefs_[0]
    assert 0.5 * bound < np.abs(drawn).max() <= bound  # nn.Linear's U(-b, b)
    # one order vs a new order per epoch: same first epoch's rows, other weights
    two = dict(max_iter=3, n_iter_no_change=3, batch_size=64)
    fixed = clone(sound).set_params(shuffle=False, **two).fit(X_train, y_train)
    again = clone(sound).set_params(shuffle=False, **two).fit(X_train, y_train)
    reshuffled = clone(sound).set_params(**two).fit(X_train, y_train)
    np.testing.assert_array_equal(fixed.coefs_[0], again.coefs_[0])
    assert not np.allclose(fixed.coefs_[0], reshuffled.coefs_[0])
