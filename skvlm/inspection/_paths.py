"""The two ways permuted scores are computed: linear deltas and batched copies.

Both return, per unit (a column or a group of columns), the scores of
``n_repeats`` permuted copies of X: an array of shape (n_units, n_repeats), or
a dict of such arrays for multi-metric scoring.
"""

from functools import partial

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils.multiclass import type_of_target

from .._sklearn_compat import aggregate_score_dicts
from ._scoring import (
    _OutputsEstimator,
    is_plain_accuracy,
    scorer_uses_only_outputs,
    weighted_accuracy,
)

# Working memory of one chunk (permuted decisions or stacked copies of X).
CHUNK_BYTES = 64 * 2**20


def weights_scorer(scorer, estimator, X, y, sample_weight):
    if sample_weight is not None:
        return scorer(estimator, X, y, sample_weight=sample_weight)
    return scorer(estimator, X, y)


def collect(per_unit):
    """List over units of lists over repeats -> array or dict of arrays."""
    if isinstance(per_unit[0][0], dict):
        dicts = [aggregate_score_dicts(scores) for scores in per_unit]
        return {name: np.array([d[name] for d in dicts]) for name in dicts[0]}
    return np.array(per_unit, dtype=np.float64)


def _split(units, n_chunks):
    n_chunks = max(1, min(n_chunks, len(units)))
    bounds = np.linspace(0, len(units), n_chunks + 1).astype(int)
    return [units[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _n_chunks(n_jobs, n_units, unit_bytes):
    # Enough chunks to keep every job busy and each chunk under CHUNK_BYTES.
    per_chunk = max(1, CHUNK_BYTES // max(unit_bytes, 1))
    n_workers = 1 if n_jobs in (None, 1) else max(1, abs(n_jobs)) * 4
    return max(n_workers, -(-n_units // per_chunk))


def _class_index(y, classes):
    """y as indices into classes_ (-1 when absent), or None if not comparable."""
    y = np.asarray(y)
    if y.ndim != 1 or type_of_target(y) not in ("binary", "multiclass"):
        return None
    numeric = set("biuf")
    if (y.dtype.kind in numeric) != (classes.dtype.kind in numeric):
        return None
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    return np.array([lookup.get(v, -1) for v in y.tolist()], dtype=np.intp)


# ---------------------------------------------------------------- linear path
# Cells (columns x rows) examined at once on the vectorised accuracy path.
_ACCURACY_BLOCK = 2**18


def linear_scores(ld, estimator, scorer, X, y, sample_weight, units, perms, n_jobs):
    """Scores from ``D + (X[p, G] - X[:, G]) @ W[G]``; X is float64 ndarray."""
    D = X @ ld.W + ld.b
    y_index = None
    if ld.is_classifier and is_plain_accuracy(scorer, estimator):
        y_index = _class_index(y, ld.classes)
    if y_index is not None and all(len(u) == 1 for u in units):
        return _accuracy_scores(ld, X, D, y_index, sample_weight, units, perms, n_jobs)
    unit_bytes = X.shape[0] * ld.W.shape[1] * 8 * 3
    chunks = _split(units, _n_chunks(n_jobs, len(units), unit_bytes))
    parts = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_linear_chunk)(
            ld, estimator, scorer, X, D, y, y_index, sample_weight, chunk, perms
        )
        for chunk in chunks
    )
    if y_index is not None:
        return np.concatenate(parts, axis=0)
    return collect([unit for part in parts for unit in part])


def _accuracy_scores(ld, X, D, y_index, sample_weight, units, perms, n_jobs):
    """Accuracy after permuting each column, touching only rows that can flip.

    Permuting column j moves row i's decision to ``D[i] + delta * W[j]``. The
    prediction cannot change while ``|delta| * spread(W[j]) < gap[i]`` (gap:
    top decision minus runner-up), and ``|delta|`` is at most the column's
    range, so most (row, column) cells keep their unpermuted outcome. For the
    others the true class wins on an interval of delta (one pass over the
    classes), after which each repeat is two comparisons per cell.
    """
    W = ld.W
    if W.shape[1] == 1:  # binary "d > 0" is argmax over [0, d], ties to class 0
        D = np.hstack([np.zeros_like(D), D])
        W = np.hstack([np.zeros_like(W), W])
    top2 = np.partition(D, -2, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    correct0 = np.argmax(D, axis=1) == y_index
    weights = np.ones(len(D)) if sample_weight is None else sample_weight
    reach = (X.max(axis=0) - X.min(axis=0)) * (W.max(axis=1) - W.min(axis=1))
    # Margin for rounding: sklearn recomputes X_perm @ W + b in another order.
    reach = reach * (1 + 1e-6) + 1e-12 * (np.abs(D).max() + 1)
    XT = np.ascontiguousarray(X.T)
    cols = np.concatenate(units)
    size = max(1, _ACCURACY_BLOCK // X.shape[0])
    parts = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_accuracy_chunk)(
            XT,
            D,
            W,
            y_index,
            correct0,
            gap,
            reach,
            weights,
            sample_weight is None,
            cols[i : i + size],
            perms,
        )
        for i in range(0, len(cols), size)
    )
    return np.concatenate(parts, axis=0)


def _accuracy_chunk(
    XT, D, W, y_index, correct0, gap, reach, weights, unweighted, cols, perms
):
    Xc, Wc = XT[cols], W[cols]
    jj, ii = np.nonzero(gap[None, :] <= reach[cols][:, None])
    keep = y_index[ii] >= 0  # an unknown label is never predicted
    jj, ii = jj[keep], ii[keep]
    y = y_index[ii]
    lower = np.full(len(ii), -np.inf)
    upper = np.full(len(ii), np.inf)
    Dy, Wy = D[ii, y], Wc[jj, y]
    with np.errstate(divide="ignore", invalid="ignore"):
        for c in range(D.shape[1]):
            a = D[ii, c] - Dy  # class c beats y when a + delta * b > 0
            b = Wc[jj, c] - Wy
            t = -a / b
            np.maximum(lower, np.where(b < 0, t, -np.inf), out=lower)
            np.minimum(upper, np.where(b > 0, t, np.inf), out=upper)
            # b == 0: c's margin never moves; argmax keeps the first maximum.
            beaten = (b == 0) & ((a > 0) | ((a == 0) & (c < y)))
            lower[beaten] = np.inf
    base = np.sum(weights[correct0])
    total = np.sum(weights)
    was = correct0[ii]
    out = np.empty((len(cols), len(perms)))
    for r, p in enumerate(perms):
        delta = Xc[jj, p[ii]] - Xc[jj, ii]
        now = np.where(delta == 0, was, (delta > lower) & (delta < upper))
        change = now.astype(np.float64) - was
        if not unweighted:
            change *= weights[ii]
        out[:, r] = (
            base + np.bincount(jj, weights=change, minlength=len(cols))
        ) / total
    return out


def _permuted_decisions(ld, X, D, chunk, p):
    """Decisions of shape (n_units, n_samples, n_outputs) for permutation p."""
    if all(len(u) == 1 for u in chunk):
        cols = np.concatenate(chunk)
        Xc = X[:, cols]
        delta = (Xc[p] - Xc).T
        return D[None] + delta[:, :, None] * ld.W[cols][:, None, :]
    return np.stack([D + (X[p][:, u] - X[:, u]) @ ld.W[u] for u in chunk])


def _linear_chunk(ld, estimator, scorer, X, D, y, y_index, sample_weight, chunk, perms):
    if y_index is not None:
        out = np.empty((len(chunk), len(perms)))
        for r, p in enumerate(perms):
            pred = ld.predict_index(_permuted_decisions(ld, X, D, chunk, p))
            out[:, r] = weighted_accuracy(pred == y_index, sample_weight)
        return out
    scores = [[None] * len(perms) for _ in chunk]
    for r, p in enumerate(perms):
        decisions = _permuted_decisions(ld, X, D, chunk, p)
        for i, Du in enumerate(decisions):
            stand_in = _OutputsEstimator(estimator, lambda m, Du=Du: getattr(ld, m)(Du))
            scores[i][r] = weights_scorer(scorer, stand_in, X, y, sample_weight)
    return scores


# --------------------------------------------------------------- general path
def general_scores(estimator, scorer, X, y, sample_weight, units, perms, n_jobs):
    """Scores by calling the estimator on permuted copies of X.

    With a scorer that reads only the estimator's outputs and numeric X, many
    permuted copies are stacked into one buffer and predicted in one call;
    otherwise one working copy is permuted in place and restored per unit.
    Either way X is copied once per chunk, never once per column.
    """
    values, columns = _numeric_values(X)
    stack = values is not None and scorer_uses_only_outputs(scorer, estimator)
    unit_bytes = values.nbytes if stack else 0
    chunks = _split(units, _n_chunks(n_jobs, len(units), unit_bytes))
    if stack:
        job = delayed(_stacked_chunk)
        args = (estimator, scorer, values, columns, y, sample_weight, perms)
    else:
        job = delayed(_in_place_chunk)
        args = (estimator, scorer, X, y, sample_weight, perms)
    parts = Parallel(n_jobs=n_jobs)(job(*args, chunk) for chunk in chunks)
    return collect([unit for part in parts for unit in part])


def _numeric_values(X):
    """(ndarray, columns or None) when X is one numeric block, else (None, None)."""
    if hasattr(X, "iloc"):
        dtypes = set(X.dtypes)
        if len(dtypes) != 1 or np.dtype(dtypes.pop()).kind not in "biuf":
            return None, None
        return X.to_numpy(copy=False), X.columns
    if np.asarray(X).dtype.kind not in "biuf":
        return None, None
    return np.asarray(X), None


def _stacked_chunk(estimator, scorer, values, columns, y, sample_weight, perms, chunk):
    n = values.shape[0]
    tasks = [(i, r) for i in range(len(chunk)) for r in range(len(perms))]
    n_blocks = int(np.clip(CHUNK_BYTES // max(values.nbytes, 1), 1, len(tasks)))
    buffer = np.tile(values, (n_blocks, 1))
    scores = [[None] * len(perms) for _ in chunk]
    for start in range(0, len(tasks), n_blocks):
        batch = tasks[start : start + n_blocks]
        for b, (i, r) in enumerate(batch):
            u = chunk[i]
            buffer[b * n : (b + 1) * n, u] = values[perms[r][:, None], u]
        used = buffer[: len(batch) * n]
        outputs = _BatchOutputs(
            estimator, used if columns is None else _frame(used, columns), n
        )
        for b, (i, r) in enumerate(batch):
            stand_in = _OutputsEstimator(estimator, partial(outputs.block, b=b))
            scores[i][r] = weights_scorer(scorer, stand_in, values, y, sample_weight)
        for b, (i, _) in enumerate(batch):
            u = chunk[i]
            buffer[b * n : (b + 1) * n, u] = values[:, u]
    return scores


class _BatchOutputs:
    """One call per response method on the stacked batch, sliced per block."""

    def __init__(self, estimator, X_batch, n_rows):
        self.estimator, self.X_batch, self.n_rows = estimator, X_batch, n_rows
        self.outputs = {}

    def block(self, method, b):
        if method not in self.outputs:
            self.outputs[method] = getattr(self.estimator, method)(self.X_batch)
        return self.outputs[method][b * self.n_rows : (b + 1) * self.n_rows]


def _frame(values, columns):
    import pandas as pd

    return pd.DataFrame(values, columns=columns, copy=False)


def _in_place_chunk(estimator, scorer, X, y, sample_weight, perms, chunk):
    work = X.copy()
    scores = []
    for u in chunk:
        unit_scores = []
        for p in perms:
            _assign(work, X, u, p)
            unit_scores.append(
                weights_scorer(scorer, estimator, work, y, sample_weight)
            )
        _assign(work, X, u, None)
        scores.append(unit_scores)
    return scores


def _assign(work, X, cols, p):
    """work[:, cols] = X[p, cols] (X[:, cols] when p is None), as sklearn does."""
    if hasattr(work, "iloc"):
        for c in cols:
            col = X.iloc[:, c] if p is None else X.iloc[p, c]
            col.index = work.index
            work[work.columns[c]] = col
    else:
        rows = slice(None) if p is None else p[:, None]
        work[:, cols] = X[rows, cols]
