"""The probe's torch training parts, one mini-batch at a time."""

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.datasets import load_iris
from sklearn.metrics import log_loss

from skvlm.classifiers._probe_training import (
    AdamTrainer,
    Monitor,
    ProbeNetwork,
    minibatches,
    to_tensor,
    train_adam,
)


@pytest.fixture
def iris():
    X, y = load_iris(return_X_y=True)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    return to_tensor(X, np.arange(len(y)), mean, scale, "cpu"), torch.as_tensor(y)


def test_objective_is_log_loss_plus_the_scaled_l2_term(iris):
    inputs, targets = iris
    network = ProbeNetwork([4, 5, 3], "tanh", 0.7, "cpu", torch.Generator())
    for p in network.params:  # the output layer starts at zero: move it
        torch.nn.init.normal_(p.data, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = network.forward(inputs).numpy()
        got = float(network.objective(network.forward(inputs), targets, 40))
    squares = sum(float((w.detach() ** 2).sum()) for w in network.weights)
    expected = log_loss(targets.numpy(), softmax(logits, axis=1)) + 0.7 / 80 * squares
    assert got == pytest.approx(expected, rel=1e-5)


def test_monitor_counts_patience_from_the_last_real_improvement():
    monitor = Monitor(tol=0.1, n_iter_no_change=2)
    assert monitor.update(1, 1.0)
    assert not monitor.update(2, 0.95)  # better, but not by more than tol
    assert not monitor.stop
    assert monitor.update(3, 0.8)
    assert not monitor.update(4, 0.8)
    assert not monitor.update(5, 0.75)
    assert monitor.stop and (monitor.best_epoch, monitor.best_loss) == (3, 0.8)


def test_the_parts_stepped_by_hand_are_the_training_loop(iris):
    # A caller with its own batches (streaming) composes the same parts.
    inputs, targets = iris
    settings = dict(learning_rate=0.05, weight_decay=0.01)
    looped = train_adam(
        ProbeNetwork([4, 3], "relu", 0.1, "cpu", torch.Generator()),
        (inputs, targets),
        batch_size=32,
        max_iter=5,
        tol=1e-4,
        n_iter_no_change=10,
        generator=torch.Generator().manual_seed(0),
        **settings,
    )
    network = ProbeNetwork([4, 3], "relu", 0.1, "cpu", torch.Generator())
    trainer = AdamTrainer(network, n_train=len(targets), **settings)
    generator = torch.Generator().manual_seed(0)
    curve = [
        trainer.epoch(minibatches((inputs, targets), 32, generator)) for _ in range(5)
    ]
    assert curve == looped.loss_curve
    assert not looped.converged and looped.n_iter == 5
    weights, _ = ProbeNetwork.to_numpy(network.snapshot())
    np.testing.assert_array_equal(weights[0], looped.weights[0])
