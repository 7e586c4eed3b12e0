"""LinearProbeClassifier.paper_preset against the paper's probe
(feature_analysis/probe.py of GitHub yuhui-zh15/VLMClassifier, transcribed below)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skvlm.classifiers import LinearProbeClassifier


def _paper_probe(X_train, y_train, X_test, y_test, n_epochs, mlp=False, seed=0):
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
