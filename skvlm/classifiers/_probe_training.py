"""Training a linear or MLP probe in torch: the network, its objective, the loops.

:class:`~skvlm.classifiers.LinearProbeClassifier` validates its input, carves
the validation rows and keeps the numpy weights; this module does the torch
part and knows nothing of scikit-learn. The loops read their rows from a
source (``_probe_rows``): rows held on the device, or rows read from a lazily
read array one mini-batch at a time; both give the same tensors for the same
rows, so a probe trained from a memmap or a feature store is bitwise the probe
trained from the same array in memory.
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

from ._probe_rows import StreamedRows, TensorRows, as_rows, standardisation, to_tensor

__all__ = [
    "ACTIVATIONS",
    "AdamTrainer",
    "Monitor",
    "ProbeNetwork",
    "StreamedRows",
    "TensorRows",
    "TrainingResult",
    "activate",
    "as_rows",
    "lbfgs_max_evaluations",
    "minibatches",
    "standardisation",
    "to_tensor",
    "train_adam",
    "train_lbfgs",
]

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
        Draws the initial weights.
    init : {"zero_output", "torch_linear"}, default="zero_output"
        ``"zero_output"``: hidden layers drawn as ``nn.Linear`` bounds them, the
        output layer at 0. ``"torch_linear"``: every layer drawn exactly as
        ``torch.nn.Linear`` draws it (``kaiming_uniform_`` with ``a=sqrt(5)``
        on the ``(out, in)`` weight, then the bias), layer by layer: a
        generator seeded with ``s`` gives the weights ``torch.manual_seed(s)``
        gives ``nn.Linear`` modules built in the same order.

    Attributes
    ----------
    params : list of torch.nn.Parameter
        Weight (n_in, n_out), bias (n_out), layer by layer, interleaved.
    """

    def __init__(self, sizes, activation, alpha, device, generator, init="zero_output"):
        self.activation = activation
        self.alpha = alpha
        self.params = []
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if init == "torch_linear":
                w, b = _torch_linear_init(n_in, n_out, generator)
            elif layer == len(sizes) - 2:
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

    @classmethod
    def from_numpy(cls, weights, biases, activation, alpha, device):
        """The network holding trained numpy ``weights`` and ``biases`` (copied)."""
        network = cls.__new__(cls)
        network.activation, network.alpha = activation, alpha
        network.params = []
        for w, b in zip(weights, biases, strict=True):
            # torch.tensor copies into torch's own (aligned) memory.
            network.params.append(torch.nn.Parameter(torch.tensor(w).to(device)))
            network.params.append(torch.nn.Parameter(torch.tensor(b).to(device)))
        return network

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
            loss = loss + self.penalty(n_train)
        return loss

    def penalty(self, n_train):
        """``alpha / (2 n_train)`` times the squared weight matrices."""
        squares = sum((w * w).sum() for w in self.weights)
        return self.alpha / (2 * n_train) * squares

    def evaluate(self, rows, block_size):
        """Unpenalised mean loss and accuracy on held-out rows, without gradients.

        ``rows`` (:class:`TensorRows` or :class:`StreamedRows`) is read
        ``block_size`` rows at a time; the per-block mean losses are combined
        weighted by their rows.
        """
        total, correct, n_rows = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in rows.blocks(block_size):
                logits = self.forward(inputs)
                loss = float(self.objective(logits, targets, 1, penalise=False))
                if self.binary:
                    pred = (logits[:, 0] > 0).long()
                else:
                    pred = logits.argmax(1)
                total += loss * targets.shape[0]
                correct += int((pred == targets).sum())
                n_rows += targets.shape[0]
        return total / n_rows, correct / n_rows

    def snapshot(self):
        """A copy of the current weights on the CPU."""
        return [p.detach().to("cpu", copy=True) for p in self.params]

    @staticmethod
    def to_numpy(tensors):
        """``(weights, biases)``: lists of numpy arrays, layer by layer."""
        arrays = [copy.deepcopy(t.numpy()) for t in tensors]
        return arrays[0::2], arrays[1::2]


def _torch_linear_init(n_in, n_out, generator):
    """``nn.Linear(n_in, n_out)``'s initial weight (transposed) and bias."""
    # kaiming_uniform_(weight, a=sqrt(5)), its arithmetic written out: the
    # generator argument of torch.nn.init is newer than the oldest torch we support
    a = math.sqrt(5)
    gain = math.sqrt(2.0 / (1 + a**2))
    std = gain / math.sqrt(n_in)
    bound = math.sqrt(3.0) * std
    weight = torch.empty(n_out, n_in).uniform_(-bound, bound, generator=generator)
    bound = 1.0 / math.sqrt(n_in)
    bias = torch.empty(n_out).uniform_(-bound, bound, generator=generator)
    return weight.T.contiguous(), bias


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


def minibatches(rows, batch_size, generator, shuffle=True) -> Iterator:
    """``(inputs, targets)`` mini-batches of one epoch of a row source.

    With ``shuffle``, the rows come in the order of one ``torch.randperm``
    drawn from ``generator``; without, in the source's order.
    """
    rows = as_rows(rows)
    n_rows = rows.n_rows
    if shuffle:
        order = torch.randperm(n_rows, generator=generator)
    else:
        order = torch.arange(n_rows)
    for begin in range(0, n_rows, batch_size):
        yield rows.take(order[begin : begin + batch_size])


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

    def state_arrays(self):
        """The optimiser's moments and step counts as numpy arrays, per parameter."""
        state = self.optimizer.state_dict()["state"]
        return {
            index: {
                name: value.detach().cpu().numpy().copy() for name, value in s.items()
            }
            for index, s in state.items()
        }

    def load_state_arrays(self, arrays):
        """Restore what :meth:`state_arrays` returned (bitwise)."""
        state_dict = self.optimizer.state_dict()
        state_dict["state"] = {
            index: {name: torch.tensor(value) for name, value in s.items()}
            for index, s in arrays.items()
        }
        self.optimizer.load_state_dict(state_dict)

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
    shuffle=True,
    verbose=0,
):
    """Epochs of mini-batch Adam until patience runs out or ``max_iter`` epochs.

    Parameters
    ----------
    network : ProbeNetwork
    train : TensorRows, StreamedRows or tuple of torch.Tensor
        The training rows (a tuple: ``(inputs, targets)`` on the network's
        device).
    validation : TensorRows, StreamedRows, tuple of torch.Tensor or None
        Held-out rows, evaluated ``batch_size`` rows at a time: patience
        follows their loss, and the weights of the epoch with the lowest one
        are kept. Without them, patience follows the training loss and the
        last weights are kept.
    learning_rate, weight_decay : float
    batch_size : int
        Capped at the number of training rows.
    max_iter : int
        Most epochs.
    tol : float
    n_iter_no_change : int
    generator : torch.Generator
        Shuffles the rows of each epoch.
    shuffle : bool
        Visit the rows in a new random order each epoch (else in order).
    verbose : int
        Print one line per epoch when > 0.

    Returns
    -------
    result : TrainingResult
    """
    train = as_rows(train)
    if validation is not None:
        validation = as_rows(validation)
    n_train = train.n_rows
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
            trainer.epoch(minibatches(train, batch_size, generator, shuffle))
        )
        if validation is None:
            monitor.update(epoch, loss_curve[-1])
            message = ""
        else:
            val_loss, score = network.evaluate(validation, batch_size)
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


def train_lbfgs(network, train, *, max_iter, tol, block_size=None, verbose=0):
    """Full-batch L-BFGS with a strong Wolfe line search on every training row.

    Stops when the objective or the weights change by less than ``tol``, when
    the largest absolute gradient entry is at most ``tol``, or at ``max_iter``
    iterations or :func:`lbfgs_max_evaluations` loss evaluations (then
    ``converged`` is False). ``loss_curve`` holds the objective at every
    evaluation, line-search trials included.

    Parameters
    ----------
    network : ProbeNetwork
    train : TensorRows, StreamedRows or tuple of torch.Tensor
        Every training row. Rows on the device are used in one piece; a
        :class:`StreamedRows` source is read ``block_size`` rows at a time for
        each evaluation, its blocks' gradients summed (the same full-batch
        objective and gradient, up to float32 rounding).
    max_iter : int
    tol : float
    block_size : int, default=None
        Rows per block of a streamed source.
    verbose : int

    Returns
    -------
    result : TrainingResult
    """
    train = as_rows(train)
    n_train = train.n_rows
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

    def full_batch():
        inputs, targets = train.everything()
        loss = network.objective(network.forward(inputs), targets, n_train)
        loss.backward()
        return loss.detach()

    def streamed():
        total = 0.0
        for inputs, targets in train.blocks(block_size):
            share = targets.shape[0] / n_train
            part = network.objective(network.forward(inputs), targets, 1, False)
            (part * share).backward()
            total += float(part.detach()) * share
        if network.alpha:
            penalty = network.penalty(n_train)
            penalty.backward()
            total += float(penalty.detach())
        return torch.tensor(total)

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = full_batch() if isinstance(train, TensorRows) else streamed()
        loss_curve.append(float(loss))
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
