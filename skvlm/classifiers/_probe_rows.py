"""Where a probe's training rows come from: the device, or a lazily read array.

:class:`TensorRows` holds standardised rows on the device; :class:`StreamedRows`
reads the rows of each mini-batch from a
:class:`~skvlm.classifiers._lazy_array.LazyArray` and standardises them as
they arrive. For the same rows both give the same float32 tensors, in
torch-allocated memory, so everything downstream computes the same bits.
:func:`standardisation` computes the statistics in one pass over blocks.
"""

from __future__ import annotations

import numpy as np
import torch

#: The largest magnitude the training dtype (float32) holds.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(X, *, rows=None, feature_names=None, estimator="the probe"):
    """Raise a ValueError naming the first value of ``X`` that float32 cannot hold.

    ``validate_data`` accepts any finite float64, but probes train in float32,
    where a value beyond about 3.4e38 becomes infinite and the fit NaN, with no
    error. This check is shared by every estimator that trains in float32.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        A block of the training data (float32 blocks pass at once).
    rows : ndarray of int, default=None
        The row of the training data each row of ``X`` is (default: 0, 1, ...).
    feature_names : sequence of str, default=None
        Column names, to name the column (``feature_names_in_``).
    estimator : str, default="the probe"
        Who trains in float32, for the message.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.classifiers._probe_rows import check_float32_range
    >>> check_float32_range(np.array([[1.0, 2.0], [3.0, 1e300]]))
    Traceback (most recent call last):
    ...
    ValueError: X[1, 1] = 1e+300 is finite but beyond float32's range ...
    """
    X = np.asarray(X)
    if X.dtype == np.float32 or X.size == 0 or not np.issubdtype(X.dtype, np.floating):
        return
    if X.max() <= FLOAT32_MAX and X.min() >= -FLOAT32_MAX:
        return
    with np.errstate(over="ignore"):
        bad = np.argwhere(np.isinf(X.astype(np.float32)))
    if bad.size:
        row, col = (int(i) for i in bad[0])
        raise _range_error(X[row, col], row, col, rows, feature_names, estimator)


def _range_error(value, row, col, rows, feature_names, estimator, standardised=False):
    row = int(rows[row]) if rows is not None else row
    column = f" (column {feature_names[col]!r})" if feature_names is not None else ""
    problem = (
        "overflows float32 once standardised (its distance from the column mean is over"
        if standardised
        else "is finite but beyond float32's range (largest magnitude"
    )
    return ValueError(
        f"X[{row}, {col}]{column} = {value:g} {problem} {FLOAT32_MAX:.4g}), and "
        f"{estimator} trains in float32: the fit would silently turn it into inf "
        "and every prediction into NaN. Rescale X first, e.g. divide it by a "
        "constant such as np.abs(X).max(), or take a log of its magnitude."
    )


def _check_standardised(block, raw, rows):
    """Raise when standardising in float32 overflowed (values near float32's max)."""
    if np.isfinite(block).all():
        return
    row, col = (int(i) for i in np.argwhere(~np.isfinite(block))[0])
    raise _range_error(raw[row, col], row, col, rows, None, "the probe", True)


def to_tensor(X, rows, mean, scale, device):
    """Rows ``rows`` of ``X``, standardised with ``mean`` and ``scale`` (or not, when
    ``mean`` is None), as a float32 tensor on ``device``.

    Raises a ValueError naming the row and column of a value float32 cannot hold
    (see :func:`check_float32_range`).
    """
    raw = X[rows]  # fancy indexing copies: safe to scale in place
    check_float32_range(raw, rows=rows)
    block = raw.astype(np.float32) if raw.dtype != np.float32 else raw
    if mean is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            block -= mean.astype(np.float32)
            block /= scale.astype(np.float32)
        _check_standardised(block, raw if block is not raw else X[rows], rows)
    return torch.from_numpy(block).to(device)


def standardisation(X, rows, block_size):
    """``(mean, scale)`` of the rows ``rows`` of ``X``, in float64, in one pass.

    ``X`` is read ``block_size`` of its rows at a time (``X.block``: a
    :class:`~skvlm.classifiers._lazy_array.LazyArray` or ``MemoryArray``); each
    block's moments are merged into the running ones with Chan et al.'s
    pairwise update, so memory stays one block whatever the rows. The scale is
    the population standard deviation; constant columns keep scale 1, as
    ``StandardScaler`` does.
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    n_seen = 0
    mean = np.zeros(X.n_features)
    m2 = np.zeros(X.n_features)
    for start, stop in X.blocks(block_size):
        low, high = np.searchsorted(rows, [start, stop])
        if low == high:
            continue
        chunk = X.block(start, stop)
        if high - low < stop - start:
            chunk = chunk[rows[low:high] - start]
            check_float32_range(chunk, rows=rows[low:high])
        else:
            check_float32_range(chunk, rows=np.arange(start, stop))
        chunk = chunk.astype(np.float64)
        n_block = chunk.shape[0]
        block_mean = chunk.mean(axis=0)
        chunk -= block_mean
        block_m2 = np.einsum("ij,ij->j", chunk, chunk)
        total = n_seen + n_block
        delta = block_mean - mean
        mean += delta * (n_block / total)
        m2 += block_m2 + delta * delta * (n_seen * n_block / total)
        n_seen = total
    std = np.sqrt(m2 / n_seen)
    return mean, np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)


class TensorRows:
    """Training rows standardised on the device, with their class indices.

    Parameters
    ----------
    inputs : torch.Tensor of shape (n_rows, n_features)
    targets : torch.Tensor of shape (n_rows,)
    """

    def __init__(self, inputs, targets):
        self.inputs, self.targets = inputs, targets

    @property
    def n_rows(self):
        return self.inputs.shape[0]

    def take(self, positions):
        """``(inputs, targets)`` of the rows at ``positions`` (a copy)."""
        positions = positions.to(self.inputs.device)
        return self.inputs[positions], self.targets[positions]

    def blocks(self, size):
        """``(inputs, targets)`` of consecutive blocks of ``size`` rows."""
        for begin in range(0, self.n_rows, size):
            # A copy, as StreamedRows gives: the same alignment, the same sums.
            end = begin + size
            yield self.inputs[begin:end].clone(), self.targets[begin:end]

    def everything(self):
        return self.inputs, self.targets


class StreamedRows:
    """Rows of a lazily read array, standardised as they are read.

    Row ``i`` of this source is row ``index[i]`` of ``X``; :meth:`take` reads
    the rows of one mini-batch (in increasing order, the cheap order for a
    file) and puts them back in the batch's order. Nothing but the batch is
    held.

    Parameters
    ----------
    X : LazyArray or MemoryArray
    index : ndarray of int
        Rows of ``X``, in this source's order.
    targets : ndarray of int
        Class index of each row of ``X`` (all of them).
    mean, scale : ndarray or None
        Standardisation (None: raw features).
    device : torch.device
    """

    def __init__(self, X, index, targets, mean, scale, device):
        self.X = X
        self.index = np.asarray(index, dtype=np.int64)
        self.targets = np.asarray(targets)
        self.mean = None if mean is None else mean.astype(np.float32)
        self.scale = None if scale is None else scale.astype(np.float32)
        self.device = device

    @property
    def n_rows(self):
        return self.index.shape[0]

    def read(self, rows):
        """``(inputs, targets)`` of rows ``rows`` of ``X``, in that order."""
        order = np.argsort(rows, kind="stable")
        ascending = rows[order]
        block = self.X.rows(ascending)
        # A torch-allocated buffer, as TensorRows' copies are: the same values
        # at the same alignment give the same matrix products, bit for bit.
        inputs = torch.empty((rows.shape[0], self.X.n_features), dtype=torch.float32)
        out = inputs.numpy()
        check_float32_range(block, rows=ascending)
        out[order] = block  # float64 to float32 rounds as astype does
        if self.mean is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                out -= self.mean
                out /= self.scale
            _check_standardised(out[order], block, ascending)
        targets = torch.as_tensor(self.targets[rows])
        return inputs.to(self.device), targets.to(self.device)

    def take(self, positions):
        """``(inputs, targets)`` of this source's rows at ``positions``."""
        return self.read(self.index[positions.cpu().numpy()])

    def blocks(self, size):
        """``(inputs, targets)`` of consecutive blocks of ``size`` rows."""
        for begin in range(0, self.n_rows, size):
            yield self.read(self.index[begin : begin + size])


def as_rows(train):
    """A row source: ``train`` itself, or :class:`TensorRows` of a tensor pair."""
    if isinstance(train, tuple):
        return TensorRows(*train)
    return train
