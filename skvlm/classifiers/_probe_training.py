"""Training a linear or MLP probe in torch: the network, its objective, the loops.

:class:`~skvlm.classifiers.LinearProbeClassifier` validates its input, carves
the validation rows, standardises and keeps the numpy weights; this module does
the torch part and knows nothing of scikit-learn. The Adam loop is built from
parts that work one mini-batch at a time (:class:`AdamTrainer.step`,
:class:`Monitor`), so training from batches that never sit in memory together
reuses them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit

ACTIVATIONS = ("identity", "logistic", "relu", "tanh")


def activate(z, activation, xp):
    """Apply ``activation`` to ``z``; ``xp`` is the torch or numpy namespace."""
    if activation == "relu":
        return xp.clip(z, 0, None) if xp is np else xp.relu(z)
    if activation == "tanh":
        return xp.tanh(z)
    if activation == "logistic":
        return expit(z) if xp is np else xp.sigmoid(z)
    return z


def to_tensor(X, rows, mean, scale, device):
    """Rows ``rows`` of ``X``, standardised with ``mean`` and ``scale`` (or not, when
    ``mean`` is None), as a float32 tensor on ``device``."""
    block = X[rows].astype(np.float32)  # a copy, safe to scale in place
    if mean is not None:
        block -= mean.astype(np.float32)
        block /= scale.astype(np.float32)
    return torch.from_numpy(block).to(device)


class ProbeNetwork:
    """A probe's weights and biases as torch leaf tensors, with its objective.

    Parameters
    ----------
    sizes : list of int
        Widths from the input to the output: ``[n_features, *hidden, n_outputs]``
        (one output for a binary problem, one logit per class otherwise).
    activation : {"identity", "logistic", "relu", "tanh"}
        Activation of the hidden layers.
    alpha : float
        L2 penalty on the weight matrices (see :meth:`objective`).
    device : str or torch.device
    generator : torch.Generator
        Draws the hidden layers' initial weights; the output layer starts at 0.

    Attributes
    ----------
    params : list of torch.nn.Parameter
        Weight (n_in, n_out), bias (n_out), layer by layer, interleaved.
    """

    def __init__(self, sizes, activation, alpha, device, generator):
        self.activation = activation
        self.alpha = alpha
        self.params = []
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if layer == len(sizes) - 2:
                # The output layer starts at zero, as LogisticRegression does: a
                # random start adds logit noise that, without weight decay, the
                # directions the data barely constrain never lose.
                w, b = torch.zeros(n_in, n_out), torch.zeros(n_out)
            else:
                # nn.Linear's default init, drawn from a local generator so the
                # caller's global torch RNG stays as it was.
                bound = 1.0 / math.sqrt(n_in)
                w = (torch.rand(n_in, n_out, generator=generator) * 2 - 1) * bound
                b = (torch.rand(n_out, generator=generator) * 2 - 1) * bound
            self.params.append(torch.nn.Parameter(w.to(device)))
            self.params.append(torch.nn.Parameter(b.to(device)))

    @property
    def weights(self):
        return self.params[0::2]

    @property
    def biases(self):
        return self.params[1::2]

    @property
    def binary(self):
        """True when the network has one output: the logit of the second class."""
        return self.params[-1].shape[0] == 1

    def forward(self, inputs):
        """Logits (rows, n_outputs) of standardised ``inputs`` (rows, n_features)."""
        out = inputs
        n_layers = len(self.params) // 2
        for layer in range(n_layers):
            out = out @ self.params[2 * layer] + self.params[2 * layer + 1]
            if layer < n_layers - 1:
                out = activate(out, self.activation, torch)
        return out

    def objective(self, logits, targets, n_train, penalise=True):
        """Mean cross-entropy plus ``alpha / (2 n_train)`` times the squared weights."""
        if logits.shape[1] == 1:
            loss = F.binary_cross_entropy_with_logits(
                logits[:, 0], targets.to(logits.dtype)
            )
        else:
            loss = F.cross_entropy(logits, targets)
        if self.alpha and penalise:
            squares = sum((w * w).sum() for w in self.weights)
            loss = loss + self.alpha / (2 * n_train) * squares
        return loss

    def evaluate(self, inputs, targets, n_train):
        """Unpenalised loss and accuracy on held-out rows, without gradients."""
        with torch.no_grad():
            logits = self.forward(inputs)
            loss = float(self.objective(logits, targets, n_train, penalise=False))
            if self.binary:
                pred = (logits[:, 0] > 0).long()
            else:
                pred = logits.argmax(1)
            accuracy = float((pred == targets).float().mean())
        return loss, accuracy

    def snapshot(self):
        """A copy of the current weights on the CPU."""
        return [p.detach().to("cpu", copy=True) for p in self.params]

    @staticmethod
    def to_numpy(tensors):
        """``(weights, biases)``: lists of numpy arrays, layer by layer."""
        arrays = [copy.deepcopy(t.numpy()) for t in tensors]
        return arrays[0::2], arrays[1::2]


@dataclass
class TrainingResult:
    """What a training run leaves: the kept weights and the run's history."""

    weights: list
    biases: list
    n_iter: int
    best_epoch: int
    loss_curve: list
    validation_scores: list | None
    validation_loss_curve: list | None
    #: False when the run stopped at its iteration (or evaluation) budget.
    converged: bool


def minibatches(inputs, targets, batch_size, generator) -> Iterator:
    """``(inputs, targets)`` mini-batches of one epoch, rows in a random order."""
    n_rows = inputs.shape[0]
    order = torch.randperm(n_rows, generator=generator).to(inputs.device)
    for begin in range(0, n_rows, batch_size):
        rows = order[begin : begin + batch_size]
        yield inputs[rows], targets[rows]


class AdamTrainer:
    """Mini-batch Adam (AdamW with ``weight_decay``) on a :class:`ProbeNetwork`.

    Weight decay applies to the weight matrices, not the biases. ``n_train``
    scales the ``alpha`` penalty of the objective: the number of training rows.
    """

    def __init__(self, network, *, learning_rate, weight_decay, n_train):
        self.network = network
        self.n_train = n_train
        self.optimizer = torch.optim.AdamW(
            [
                {"params": network.weights, "weight_decay": weight_decay},
                {"params": network.biases, "weight_decay": 0.0},
            ],
            lr=learning_rate,
        )

    def step(self, inputs, targets):
        """One optimiser step on one mini-batch; returns its objective."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.network.objective(
            self.network.forward(inputs), targets, self.n_train
        )
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def epoch(self, batches: Iterable):
        """Step through ``batches``; returns the row-weighted mean objective."""
        total, rows = 0.0, 0
        for inputs, targets in batches:
            total += self.step(inputs, targets) * inputs.shape[0]
            rows += inputs.shape[0]
        return total / rows


class Monitor:
    """Which epoch is best so far, and whether patience has run out.

    An epoch improves when its monitored loss is below the best one by more
    than ``tol``; training stops after ``n_iter_no_change`` epochs in a row
    without improvement.
    """

    def __init__(self, tol, n_iter_no_change):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.best_loss = np.inf
        self.best_epoch = 0
        self.best_params = None
        self.no_improvement = 0

    def update(self, epoch, loss, network=None):
        """Record ``epoch``'s loss; snapshot ``network`` when it is the best yet."""
        improved = loss < self.best_loss - self.tol
        if improved:
            self.best_loss, self.best_epoch = loss, epoch
            if network is not None:
                self.best_params = network.snapshot()
        self.no_improvement = 0 if improved else self.no_improvement + 1
        return improved

    @property
    def stop(self):
        return self.no_improvement >= self.n_iter_no_change


def train_adam(
    network,
    train,
    validation=None,
    *,
    learning_rate,
    weight_decay,
    batch_size,
    max_iter,
    tol,
    n_iter_no_change,
    generator,
    verbose=0,
):
    """Epochs of mini-batch Adam until patience runs out or ``max_iter`` epochs.

    Parameters
    ----------
    network : ProbeNetwork
    train : tuple of torch.Tensor
        ``(inputs, targets)`` of the training rows, on the network's device.
    validation : tuple of torch.Tensor or None
        Held-out ``(inputs, targets)``: patience follows their loss, and the
        weights of the epoch with the lowest one are kept. Without them,
        patience follows the training loss and the last weights are kept.
    learning_rate, weight_decay : float
    batch_size : int
        Capped at the number of training rows.
    max_iter : int
        Most epochs.
    tol : float
    n_iter_no_change : int
    generator : torch.Generator
        Shuffles the rows of each epoch.
    verbose : int
        Print one line per epoch when > 0.

    Returns
    -------
    result : TrainingResult
    """
    inputs, targets = train
    n_train = inputs.shape[0]
    batch_size = min(batch_size, n_train)
    trainer = AdamTrainer(
        network,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        n_train=n_train,
    )
    monitor = Monitor(tol, n_iter_no_change)
    loss_curve = []
    scores = [] if validation is not None else None
    validation_losses = [] if validation is not None else None
    converged = False
    for epoch in range(1, max_iter + 1):
        start = time.perf_counter()
        loss_curve.append(
            trainer.epoch(minibatches(inputs, targets, batch_size, generator))
        )
        if validation is None:
            monitor.update(epoch, loss_curve[-1])
            message = ""
        else:
            val_loss, score = network.evaluate(*validation, n_train)
            scores.append(score)
            validation_losses.append(val_loss)
            # Selection and patience follow the validation loss: accuracy on a
            # small split ties and jumps, the loss moves smoothly.
            monitor.update(epoch, val_loss, network)
            message = f", validation accuracy {score:.4f}, loss {val_loss:.4f}"
        if verbose:
            print(
                f"epoch {epoch}: training loss {loss_curve[-1]:.4f}"
                f"{message} ({time.perf_counter() - start:.2f} s)"
            )
        if monitor.stop:
            converged = True
            break
    if monitor.best_params is not None:
        kept, best_epoch = monitor.best_params, monitor.best_epoch
    else:
        kept, best_epoch = [p.detach().to("cpu") for p in network.params], epoch
    weights, biases = ProbeNetwork.to_numpy(kept)
    return TrainingResult(
        weights=weights,
        biases=biases,
        n_iter=epoch,
        best_epoch=best_epoch,
        loss_curve=loss_curve,
        validation_scores=scores,
        validation_loss_curve=validation_losses,
        converged=converged,
    )


def lbfgs_max_evaluations(max_iter):
    """The loss evaluations L-BFGS may spend: torch's default, 1.25 * max_iter."""
    return max_iter * 5 // 4


def train_lbfgs(network, train, *, max_iter, tol, verbose=0):
    """Full-batch L-BFGS with a strong Wolfe line search on every training row.

    Stops when the objective or the weights change by less than ``tol``, when
    the largest absolute gradient entry is at most ``tol``, or at ``max_iter``
    iterations or :func:`lbfgs_max_evaluations` loss evaluations (then
    ``converged`` is False). ``loss_curve`` holds the objective at every
    evaluation, line-search trials included.

    Parameters
    ----------
    network : ProbeNetwork
    train : tuple of torch.Tensor
        ``(inputs, targets)`` of every training row.
    max_iter : int
    tol : float
    verbose : int

    Returns
    -------
    result : TrainingResult
    """
    inputs, targets = train
    n_train = inputs.shape[0]
    max_eval = lbfgs_max_evaluations(max_iter)
    optimizer = torch.optim.LBFGS(
        network.params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_eval,
        tolerance_grad=tol,
        tolerance_change=tol,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    loss_curve = []

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = network.objective(network.forward(inputs), targets, n_train)
        loss.backward()
        loss_curve.append(float(loss.detach()))
        if verbose:
            print(f"evaluation {len(loss_curve)}: {loss_curve[-1]:.6f}")
        return loss

    optimizer.step(closure)
    state = optimizer.state[network.params[0]]
    n_iter = int(state.get("n_iter", 0))
    # torch stops silently at max_iter iterations or max_eval evaluations.
    hit_budget = n_iter >= max_iter or state.get("func_evals", 0) >= max_eval
    weights, biases = ProbeNetwork.to_numpy(network.snapshot())
    return TrainingResult(
        weights=weights,
        biases=biases,
        n_iter=n_iter,
        best_epoch=n_iter,
        loss_curve=loss_curve,
        validation_scores=None,
        validation_loss_curve=None,
        converged=not hit_budget,
    )
