"""LinearProbeCV: the folds x Cs of a logistic-regression search as batched fits.

The problems of a cross-validated search over ``C`` share their rows: fold ``f``'s
training rows are all the rows, weighted 0 outside the fold. So the logits of
every problem are one matrix product, ``X @ V`` with ``V`` of shape
``(n_features, n_problems * n_outputs)``, and so is the gradient (where folds
are small, each fold's problems read only its rows instead). Per-fold
standardisation is folded into the weights (``(x - mean_f) / scale_f @ W`` is
``x @ (W / scale_f) - mean_f @ (W / scale_f)``), so it costs nothing either.
:func:`batched_lbfgs` then runs L-BFGS on each problem with its own history,
line search and stopping test: a problem that has converged is frozen and no
longer computed, and no problem waits for, or stops, another.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._sklearn_compat import Interval, StrOptions, validate_parameters
from ..models import resolve_device
from ._base import scores_to_proba
from ._lazy_array import LazyArray, MemoryArray, is_lazy

# Below this many multiply-adds per matrix product a CPU fit runs on one thread:
# starting and syncing a thread pool then costs more than the product, and on a
# loaded machine spinning pools made small fits ten times slower.
_SMALL_PRODUCT = 1 << 26
_HISTORY = 10  # correction pairs kept, as scipy's L-BFGS-B (maxcor) for sklearn
_ARMIJO = 1e-4
# Sites stacked for batched products up to this size (a copy of their features).
_STACK_BYTES = 1 << 29
# Folds with fewer training rows than features (and than this) are solved in
# their rows' span; the (n, n) eigendecomposition limits n.
_SPAN_ROWS = 4097
_MAX_BACKTRACKS = 40


# -- the batched problem --------------------------------------------------------
class BatchedLogistic:
    """The objectives of many L2-penalised logistic regressions on the same rows.

    Problem ``p`` minimises ``sum_i w_pi * loss(y_i, z_pi) / sum_i w_pi +
    penalty_p / 2 * ||W_p||^2`` (sklearn's scaling of ``C * sum of losses +
    ||W||^2 / 2``, with ``penalty_p = 1 / (C_p * sum_i w_pi)``), where ``z_p =
    (x - mean_p) / scale_p @ W_p + b_p``. The parameters of a problem are one
    ``(n_features + 1, n_outputs)`` block (the last row the intercept).

    Parameters
    ----------
    sources : list of callables
        The feature matrices (sites) of the problems, all with the same rows:
        ``source()`` yields ``(start, stop, X_block)`` float tensors on the
        device, centred by the source's mean; one block for rows in memory.
    targets : tensor of shape (n_rows,)
        Class index of each row.
    weights : tensor of shape (n_problems, n_rows)
        Row weights (0 outside a problem's training rows, class weights inside).
    penalty : tensor of shape (n_problems,)
    mean, scale : tensors of shape (n_problems, n_features) or None
    n_outputs : int
        1 (binary: one logit, the sigmoid loss) or the number of classes
        (multinomial).
    fit_intercept : bool
    groups : list of (int, int array or None)
        The source of each group of problems and the rows its problems read
        (a fold's training rows; None: every row, held-out rows weighing 0).
    problem_group : int array of shape (n_problems,)
        The group of each problem.
    """

    def __init__(
        self,
        sources,
        targets,
        weights,
        penalty,
        mean,
        scale,
        n_outputs,
        fit_intercept,
        groups,
        problem_group,
    ):
        self.sources = sources
        self.targets = targets
        self.weights = weights / weights.sum(dim=1, keepdim=True)
        self.penalty = penalty
        self.mean, self.scale = mean, scale
        self.n_outputs = n_outputs
        self.fit_intercept = fit_intercept
        self.groups = [
            (source, None if rows is None else np.sort(np.asarray(rows)))
            for source, rows in groups
        ]
        self.problem_group = np.asarray(problem_group)
        self.problem_source = np.array([self.groups[g][0] for g in problem_group])
        self.problem_source_tensor = torch.as_tensor(
            self.problem_source, device=weights.device
        )
        self.device = weights.device
        self._row_cache = {}
        self._stack = self._stacked_sources()

    def preconditioner(self, row_weights, factors=None):
        """``P(q, index)``: an inverse of the problems' Hessian at zero, applied to q.

        At ``W = 0`` every probability is uniform, and the Hessian of problem
        ``p`` is ``S_p / kappa + penalty_p`` on each output's weights (``S_p``
        the weighted second moments of the rows the weights act on, ``kappa``
        4 for the sigmoid and the number of classes for the softmax, whose
        class-mean direction is left to the penalty) and ``1 / kappa`` on the
        intercepts. One eigendecomposition per source, of the moments of all
        its rows, serves every problem of the source (its folds' moments
        differ from them by sampling only; ``row_weights`` of shape (n_rows,)
        are the rows' own weights, so that a problem's path does not depend on
        which others share the batch; ``factors``, one per source, replace
        them where the caller knows better). With fewer rows than features the
        decomposition is of the rows' ``(n, n)`` kernel, and the directions
        outside the rows' span (where the data have no curvature, and the
        solution has no part) get the mean curvature. Applying ``P`` costs two
        ``(d, d)`` (or ``(d, n)``) products per step against the ``(rows, d)``
        products of an evaluation. L-BFGS with ``P`` as its initial inverse
        Hessian then takes a near-Newton first step for every ``C``, where
        plain L-BFGS starts along the gradient.
        """
        if factors is None:  # else given: (eigenvalues, eigenvectors, in_span)
            factors = [
                self._factor(source, row_weights) for source in range(len(self.sources))
            ]
        kappa = 4.0 if self.n_outputs == 1 else float(self.n_outputs)
        if all(vectors is None for _, vectors, _ in factors):
            return self._diagonal_preconditioner(factors, kappa)
        return self._eigen_preconditioner(factors, kappa)

    def _diagonal_preconditioner(self, factors, kappa):
        """``preconditioner``'s ``P`` where each source's moments are diagonal."""
        values = torch.stack([v for v, _, _ in factors])  # (sources, d)

        def apply(q, index):
            curvature = values[self.problem_source_tensor[index]] / kappa
            inverse = 1 / (curvature + self.penalty[index].unsqueeze(1))
            out = torch.empty_like(q)
            out[:, :-1, :] = q[:, :-1, :] * inverse.unsqueeze(-1)
            out[:, -1, :] = kappa * q[:, -1, :]
            return out

        return apply

    def _eigen_preconditioner(self, factors, kappa):
        """``preconditioner``'s ``P``, every source's problems in batched products."""
        rank = max(len(values) for values, _, _ in factors)
        n_features = factors[0][1].shape[0]
        vectors = factors[0][1].new_zeros(len(factors), n_features, rank)
        # Padded directions get an infinite curvature: no step along them.
        values = torch.full((len(factors), rank), torch.inf, dtype=vectors.dtype)
        values = values.to(self.device)
        for s, (v, Q, _) in enumerate(factors):
            values[s, : len(v)], vectors[s, :, : len(v)] = v, Q
        floor = torch.stack([v.mean() for v, _, _ in factors]) / kappa
        span = factors[0][2]

        def apply(q, index):
            sources, row, slot, width = self._layout(index)
            n_sources, k = len(sources), q.shape[2]
            Q = vectors if n_sources == len(factors) else vectors[sources]
            flat = q.new_zeros(n_sources, n_features, width, k)
            flat[row, :, slot, :] = q[:, :-1, :]
            flat = flat.view(n_sources, n_features, width * k)
            penalty = q.new_zeros(n_sources, 1, width)
            penalty[row, 0, slot] = self.penalty[index]
            rotated = torch.bmm(Q.transpose(1, 2), flat)  # (sources, rank, width*k)
            inverse = 1 / (values[sources].unsqueeze(-1) / kappa + penalty)
            if span:  # outside the rows' span: 1 / floor; inside, the difference
                outside = 1 / (floor[sources].view(-1, 1, 1) + penalty)
                inverse = inverse - outside
            scaled = rotated.view(n_sources, rank, width, k) * inverse.unsqueeze(-1)
            step = torch.bmm(Q, scaled.view(n_sources, rank, width * k))
            if span:
                rest = flat.view(n_sources, n_features, width, k) * outside.unsqueeze(
                    -1
                )
                step = step + rest.view(n_sources, n_features, width * k)
            out = torch.empty_like(q)
            out[:, :-1, :] = step.view(n_sources, n_features, width, k)[row, :, slot, :]
            out[:, -1, :] = kappa * q[:, -1, :]
            return out

        return apply

    def _factor(self, source, weights):
        """``(eigenvalues, eigenvectors, in_span)`` of one source's moments."""
        blocks = list(self.sources[source]())
        n_features = blocks[0][2].shape[1]
        n_rows = sum(stop - start for start, stop, _ in blocks)

        total = weights.sum()
        first = sum((weights[a:b].unsqueeze(1) * X).sum(dim=0) for a, b, X in blocks)
        first = first / total
        if n_rows < n_features:  # the (n, n) kernel of the weighted rows
            root = (weights / total).sqrt().unsqueeze(1)
            B = torch.cat(
                [
                    root[a:b] * (X - first if self.scale is not None else X)
                    for a, b, X in blocks
                ]
            )
            if self.scale is not None:
                scale = B.square().sum(dim=0).sqrt()
                B = B / torch.where(scale > 0, scale, torch.ones_like(scale))
            values, U = torch.linalg.eigh(B @ B.T)
            keep = values > values.amax().clamp(min=0) * 1e-6
            values = values[keep]
            return values, B.T @ (U[:, keep] / values.sqrt()), True
        gram = sum(X.T @ (weights[a:b].unsqueeze(1) * X) for a, b, X in blocks)
        gram = gram / total
        if self.scale is not None:  # each problem's features are standardised
            gram = gram - torch.outer(first, first)
            scale = gram.diagonal().clamp(min=0).sqrt()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            gram = gram / torch.outer(scale, scale)
        values, vectors = torch.linalg.eigh(gram)
        return values.clamp(min=0), vectors, False

    def effective(self, theta, index):
        """``(V, c)``: weights and intercepts in the (centred) raw feature space."""
        W, b = theta[:, :-1, :], theta[:, -1, :]
        if self.scale is None:
            return W, b
        V = W / self.scale[index].unsqueeze(-1)
        c = b - torch.einsum("pd,pdk->pk", self.mean[index], V)
        return V, c

    @property
    def stacks(self):
        """Whether the sources run as one batched product (``bmm``)."""
        return self._stack is not None

    def _group_rows(self, group, start, stop):
        """Rows ``start:stop`` of ``group`` as block offsets (None: all of them)."""
        key = (group, start)
        if key not in self._row_cache:
            rows = self.groups[group][1]
            if rows is None:
                return None
            lo, hi = np.searchsorted(rows, [start, stop])
            offsets = None
            if hi - lo != stop - start:
                offsets = torch.as_tensor(rows[lo:hi] - start, device=self.device)
            self._row_cache[key] = offsets
        return self._row_cache[key]

    def _stacked_sources(self):
        """The sources as one ``(sources, rows, d)`` tensor, where they fit.

        Sites of one width held in memory, every problem reading all rows: the
        products of all of them are then one batched product (``bmm``) rather
        than one small product per site, whose per-call costs dominate for
        the few hundred rows of a layer search.
        """
        tensors = [getattr(source, "_tensor", None) for source in self.sources]
        if len(tensors) < 2 or any(t is None for t in tensors):
            return None
        if any(rows is not None for _, rows in self.groups):
            return None
        if len({t.shape for t in tensors}) > 1:
            return None
        if sum(t.numel() * t.element_size() for t in tensors) > _STACK_BYTES:
            return None
        return torch.stack(tensors)

    def largest_raw(self, bases, tol):
        """``largest(g, index)`` for problems solved in the bases' coordinates.

        The gradient of a problem solved in the coordinates of an orthonormal
        basis ``Q`` of its rows' span is ``Q g`` in the features' own
        coordinates, where the tolerance is meant (sklearn's): its largest
        entry, computed source by source in batched products.
        """
        n_features = bases.shape[1]

        def largest(g, index):
            # |Q g| is at most ||g|| and its largest entry at least
            # ||g|| / sqrt(d): only problems in between need the product.
            norm = g.flatten(1).norm(dim=1)
            out = torch.where(norm <= tol, norm, norm / n_features**0.5)
            unsure = ((norm > tol) & (norm / n_features**0.5 <= tol)).nonzero()
            unsure = unsure.flatten()
            if unsure.numel():
                out[unsure] = exact(g[unsure], index[unsure])
            return out

        def exact(g, index):
            sources, row, slot, width = self._layout(index)
            n_sources, (_, rank, k) = len(sources), g.shape
            flat = g.new_zeros(n_sources, rank - 1, width, k)
            flat[row, :, slot, :] = g[:, :-1, :]
            Q = bases if n_sources == len(bases) else bases[sources]
            raw = torch.bmm(Q, flat.view(n_sources, rank - 1, width * k))
            raw = raw.view(n_sources, -1, width, k).abs().amax(dim=(1, 3))
            return torch.maximum(raw[row, slot], g[:, -1, :].abs().amax(dim=1))

        return largest

    def _layout(self, index):
        """Problems ``index`` by source: ``(sources, row, slot, width)``."""
        source = self.problem_source[index.cpu().numpy()]
        sources, row, counts = np.unique(
            source, return_inverse=True, return_counts=True
        )
        order = np.argsort(row, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.empty(len(source), dtype=np.int64)
        slot[order] = np.arange(len(source)) - starts[row[order]]
        device = self.device
        return (
            torch.as_tensor(sources, device=device),
            torch.as_tensor(row, device=device),
            torch.as_tensor(slot, device=device),
            int(counts.max()),
        )

    def _stacked_terms(self, V, c, index):
        """The data part of the objective, every source in one ``bmm``."""
        sources, row, slot, width = self._layout(index)
        n_sources, (_, n_rows, n_features), k = (
            len(sources),
            self._stack.shape,
            V.shape[2],
        )
        X = self._stack if n_sources == len(self.sources) else self._stack[sources]
        V_pad = V.new_zeros(n_sources, n_features, width, k)
        V_pad[row, :, slot, :] = V
        c_pad = c.new_zeros(n_sources, width, k)
        c_pad[row, slot] = c
        w_pad = V.new_zeros(n_sources, width, n_rows)  # padding problems weigh 0
        w_pad[row, slot] = self.weights[index]
        z = torch.bmm(X, V_pad.view(n_sources, n_features, width * k))
        z = z.view(n_sources, n_rows, width, k) + c_pad.unsqueeze(1)
        w = w_pad.transpose(1, 2).unsqueeze(-1)  # (sources, rows, width, 1)
        point, residual = _loss_terms(z, self.targets.view(1, -1, 1, 1))
        loss = (w * point).sum(dim=(1, 3), dtype=torch.float64)
        residual *= w
        grad_V = torch.bmm(
            X.transpose(1, 2), residual.view(n_sources, n_rows, width * k)
        ).view(n_sources, n_features, width, k)
        grad_c = residual.sum(dim=1)
        return loss[row, slot], grad_V[row, :, slot, :], grad_c[row, slot]

    def __call__(self, theta, index):
        """``(objective, gradient)`` of the problems ``index`` at ``theta``."""
        V, c = self.effective(theta, index)
        if self._stack is not None:
            loss, grad_V, grad_c = self._stacked_terms(V, c, index)
        else:
            loss, grad_V, grad_c = self._looped_terms(V, c, index)
        W = theta[:, :-1, :]
        if self.scale is not None:
            grad_V = grad_V - self.mean[index].unsqueeze(-1) * grad_c.unsqueeze(1)
            grad_W = grad_V / self.scale[index].unsqueeze(-1)
        else:
            grad_W = grad_V
        penalty = self.penalty[index]
        grad_W = grad_W + penalty.view(-1, 1, 1) * W
        loss = loss + 0.5 * penalty.double() * (W * W).sum(
            dim=(1, 2), dtype=torch.float64
        )
        if not self.fit_intercept:
            grad_c = torch.zeros_like(grad_c)
        return loss, torch.cat([grad_W, grad_c.unsqueeze(1)], dim=1)

    def _looped_terms(self, V, c, index):
        """The data part of the objective, one product per group of problems."""
        n_problems, n_features, k = V.shape
        # The objective sums in float64 even for float32 rows: the stopping and
        # line-search tests compare objectives to 64 float64 epsilons, as sklearn.
        loss = torch.zeros(n_problems, dtype=torch.float64, device=V.device)
        grad_V = torch.zeros_like(V)
        grad_c = torch.zeros_like(c)
        problem_group = self.problem_group[index.cpu().numpy()]
        for group in np.unique(problem_group):
            chosen = torch.as_tensor(
                np.flatnonzero(problem_group == group), device=V.device
            )
            n_chosen = chosen.numel()
            flat = V[chosen].permute(1, 0, 2).reshape(n_features, n_chosen * k)
            zero = not bool(flat.any())  # a start from zero: no product for logits
            weights = self.weights[index[chosen]]
            part_V = torch.zeros_like(flat)
            for start, stop, X in self.sources[self.groups[group][0]]():
                # Only the group's rows: a fold's held-out rows weigh 0 anyway.
                offsets = self._group_rows(group, start, stop)
                y = self.targets[start:stop]
                w = weights[:, start:stop]
                if offsets is not None:
                    X, y, w = X[offsets], y[offsets], w[:, offsets]
                if X.shape[0] == 0:
                    continue
                if zero:
                    z = c[chosen].unsqueeze(0).expand(X.shape[0], -1, -1).clone()
                else:
                    z = (X @ flat).view(X.shape[0], n_chosen, k)
                    z += c[chosen].unsqueeze(0)
                w = w.T.unsqueeze(-1)  # (rows, problems, 1)
                point, residual = _loss_terms(z, y.view(-1, 1, 1))
                loss[chosen] += (w * point).sum(dim=(0, 2), dtype=torch.float64)
                residual *= w
                part_V += X.T @ residual.reshape(X.shape[0], n_chosen * k)
                grad_c[chosen] += residual.sum(dim=0)
            grad_V[chosen] = part_V.view(n_features, n_chosen, k).permute(1, 0, 2)
        return loss, grad_V, grad_c

    def reprice(self, theta, value, gradient, before, after):
        """``(value, gradient)`` at ``theta`` with the penalties of ``after``.

        ``value`` and ``gradient`` were computed with the penalties of the
        problems ``before``; the data part is the same for ``after`` when the
        two share their rows (one fold, another ``C``), so a warm start along
        the C path costs no evaluation.
        """
        W = theta[:, :-1, :]
        change = self.penalty[after] - self.penalty[before]
        value = value + 0.5 * change.double() * (W * W).sum(
            dim=(1, 2), dtype=torch.float64
        )
        gradient = gradient.clone()
        gradient[:, :-1, :] += change.view(-1, 1, 1) * W
        return value, gradient


def _loss_terms(z, y):
    """Per-row losses and ``dloss/dz`` of logits ``z`` (..., outputs).

    ``y`` holds the class indices, broadcastable to ``z[..., :1]``. One output
    is the sigmoid loss (``y`` in {0, 1}); several are the softmax loss.
    Returns ``(point, residual)`` of shapes ``(..., 1)`` and ``z``'s.
    """
    if z.shape[-1] == 1:
        yb = y.to(z.dtype)
        return torch.nn.functional.softplus(z) - yb * z, torch.sigmoid(z) - yb
    picks = y.expand(*z.shape[:-1], 1)
    residual = torch.log_softmax(z, dim=-1)
    point = -torch.gather(residual, -1, picks)
    residual.exp_().scatter_add_(-1, picks, torch.full_like(point, -1.0))
    return point, residual


@dataclass
class BatchedResult:
    theta: torch.Tensor
    objective: torch.Tensor
    gradient: torch.Tensor
    n_iter: np.ndarray
    converged: np.ndarray


def _dot(a, b):
    return torch.linalg.vecdot(a.flatten(1), b.flatten(1))


def batched_lbfgs(
    objective,
    theta,
    *,
    max_iter,
    tol,
    history=_HISTORY,
    precondition=None,
    start=None,
    largest=None,
):
    """Minimise every problem of ``objective`` from ``theta``, each on its own.

    L-BFGS with ``history`` correction pairs and a backtracking (Armijo) line
    search, per problem: directions, step lengths, histories and stopping
    tests are all per problem, only the matrix products are shared. A problem
    stops when the largest absolute entry of its gradient is at most ``tol``
    (sklearn's ``gtol``), when its objective changes by less than ``64 * eps``
    relative (sklearn's ``ftol``), when its line search fails, or after
    ``max_iter`` iterations. A stopped problem is no longer computed.
    ``precondition(q, index)``, when given, is the initial inverse Hessian of
    the problems ``index`` (otherwise the usual scaled identity). ``start``,
    ``(value, gradient)`` at ``theta`` when already known, saves the first
    evaluation. ``largest(g, index)``, when given, is the largest absolute
    entry of the problems' gradients in the coordinates the tolerance is
    meant in (the default: ``g``'s own).

    Returns
    -------
    result : BatchedResult
    """
    n_problems, device = theta.shape[0], theta.device
    every = torch.arange(n_problems, device=device)
    f, g = objective(theta, every) if start is None else start
    theta, f, g = theta.clone(), f.clone(), g.clone()  # the results, per problem
    eps = 64 * torch.finfo(torch.float64).eps
    n_iter = torch.zeros(n_problems, dtype=torch.long, device=device)
    converged = torch.ones(n_problems, dtype=torch.bool, device=device)
    # The working set: the running problems only, compacted when some stop, so
    # that a step reads and writes whole tensors rather than gathering rows.
    if largest is None:
        largest = lambda g, index: g.abs().amax(dim=(1, 2))  # noqa: E731
    ids = (largest(g, every) > tol).nonzero().flatten()
    w_theta, w_f, w_g = theta[ids], f[ids], g[ids]
    # (history, problems, ...): each slot one contiguous block for the two-loop
    S = torch.zeros((history, ids.numel(), *theta.shape[1:]), dtype=theta.dtype)
    S = S.to(device)
    Y = torch.zeros_like(S)
    rho = torch.zeros((ids.numel(), history), dtype=theta.dtype, device=device)
    gamma = torch.ones(ids.numel(), dtype=theta.dtype, device=device)
    for iteration in range(max_iter):
        n_working = ids.numel()
        if n_working == 0:
            break
        if precondition is None:
            initial = lambda q, gamma=gamma: gamma.view(-1, 1, 1) * q  # noqa: E731
        else:
            initial = lambda q, ids=ids: precondition(q, ids)  # noqa: E731
        direction = -_two_loop(w_g, S, Y, rho, initial, iteration)
        slope = _dot(direction, w_g)
        bad = slope >= 0  # numerically no descent: restart from the gradient
        if bad.any():
            direction[bad] = -w_g[bad]
            slope = _dot(direction, w_g)
            rho[bad] = 0
        step = torch.ones(n_working, dtype=theta.dtype, device=device)
        if iteration == 0 and precondition is None:
            step = torch.clamp(1.0 / w_g.flatten(1).norm(dim=1), max=1.0)
        f_new, g_new = w_f.clone(), w_g.clone()
        accepted = torch.zeros(n_working, dtype=torch.bool, device=device)
        for _ in range(_MAX_BACKTRACKS):
            todo = (~accepted).nonzero().flatten()
            if todo.numel() == 0:
                break
            if todo.numel() == n_working:
                trial = w_theta + step.view(-1, 1, 1) * direction
            else:
                trial = w_theta[todo] + step[todo].view(-1, 1, 1) * direction[todo]
            f_t, g_t = objective(trial, ids[todo])
            ok = f_t <= w_f[todo] + _ARMIJO * (step[todo] * slope[todo]).double()
            ok &= torch.isfinite(f_t)
            done = todo[ok]
            f_new[done], g_new[done] = f_t[ok], g_t[ok]
            accepted[done] = True
            step[todo[~ok]] *= 0.5
        s = step.view(-1, 1, 1) * direction
        s[~accepted] = 0
        y = g_new - w_g
        sy, yy = _dot(s, y), _dot(y, y)
        slot = iteration % history
        good = accepted & (sy > 1e-10 * yy.clamp(min=1e-300))
        S[slot] = s
        Y[slot] = y
        rho[:, slot] = torch.where(good, 1.0 / sy.clamp(min=1e-300), 0.0)
        gamma = torch.where(good, sy / yy.clamp(min=1e-300), gamma)
        w_theta += s
        change = (w_f - f_new) / torch.maximum(
            torch.maximum(w_f.abs(), f_new.abs()), torch.ones_like(f_new)
        )
        w_f, w_g = f_new, g_new
        small = largest(w_g, ids) <= tol
        stop = small | (accepted & (change <= eps)) | ~accepted
        if stop.any():
            out, keep = ids[stop], (~stop).nonzero().flatten()
            theta[out], f[out], g[out] = w_theta[stop], w_f[stop], w_g[stop]
            n_iter[out] = iteration + 1
            ids, w_theta, w_f, w_g = ids[keep], w_theta[keep], w_f[keep], w_g[keep]
            S, Y, rho, gamma = S[:, keep], Y[:, keep], rho[keep], gamma[keep]
    # Stopped (tolerance met, no progress left, or no descent step found) is
    # converged; only a problem still running at max_iter is not.
    theta[ids], f[ids], g[ids] = w_theta, w_f, w_g
    n_iter[ids] = max_iter
    converged[ids] = False
    return BatchedResult(theta, f, g, n_iter.cpu().numpy(), converged.cpu().numpy())


def _two_loop(g, S, Y, rho, initial, iteration):
    """The L-BFGS direction ``H g`` of each problem; empty slots have ``rho = 0``."""
    history = S.shape[0]
    q = g.clone()
    order = [(iteration - 1 - j) % history for j in range(min(iteration, history))]
    alphas = {}
    for j in order:  # newest to oldest
        alphas[j] = rho[:, j] * _dot(S[j], q)
        q -= alphas[j].view(-1, 1, 1) * Y[j]
    r = initial(q)
    for j in reversed(order):
        beta = rho[:, j] * _dot(Y[j], r)
        r += (alphas[j] - beta).view(-1, 1, 1) * S[j]
    return r


def _row_spans(sources, train_sets, mean, scale, row_weights):
    """Each (site, fold)'s training rows as coordinates in their own span.

    For site ``s`` and fold ``f``, the rows the problems' weights act on
    (centred, and standardised with the fold's ``mean``/``scale`` when given)
    are ``X``; an orthonormal basis ``Q`` of the span of the fold's training
    rows comes from the eigendecomposition of their ``(n, n)`` Gram matrix
    (float64, the folds of a site batched), and every row's coordinates are
    ``X @ Q``. Directions of eigenvalue below ``1e-10`` of the largest are
    left out (their columns are zero); every basis has ``max n_train``
    columns.

    Returns
    -------
    bases : tensor of shape (sites * folds, n_features, r)
        In the rows' dtype, on their device.
    coords : list of tensors of shape (n_rows, r)
    factors : list of (moments, None, False)
        The preconditioner's factors: the coordinates' weighted second moments
        over the fold's training rows, diagonal in the basis (exactly so with
        equal row weights; None stands for the identity eigenvectors).
    """
    n_folds = len(train_sets)
    rank = max(len(train) for train in train_sets)
    device = sources[0]._tensor.device
    dtype = sources[0]._tensor.dtype
    # (folds, rank) row indices, padded with row 0 under a zero mask
    index = np.zeros((n_folds, rank), dtype=np.int64)
    present = np.zeros((n_folds, rank))
    for f, train in enumerate(train_sets):
        index[f, : len(train)], present[f, : len(train)] = np.sort(train), 1.0
    weights = np.asarray(row_weights, dtype=np.float64)[index] * present
    weights /= weights.sum(axis=1, keepdims=True)
    index = torch.as_tensor(index, device=device)
    present = torch.as_tensor(present, device=device)
    weights = torch.as_tensor(weights, device=device)
    bases, coords, factors = [], [], []
    for s, rows in enumerate(sources):
        X = rows._tensor.double().unsqueeze(0)  # (1, n, d)
        if mean is not None:
            part = slice(s * n_folds, (s + 1) * n_folds)
            X = (X - torch.as_tensor(mean[part], device=device).unsqueeze(1)) / (
                torch.as_tensor(scale[part], device=device).unsqueeze(1)
            )  # (folds, n, d)
        X = X.expand(n_folds, -1, -1)
        T = torch.gather(X, 1, index.unsqueeze(-1).expand(-1, -1, X.shape[2]))
        T = T * present.unsqueeze(-1)  # (folds, rank, d), padding rows zero
        values, U = torch.linalg.eigh(T @ T.transpose(1, 2))
        keep = values > values.amax(dim=1, keepdim=True).clamp(min=0) * 1e-10
        inverse_root = torch.where(keep, values.clamp(min=1e-300).rsqrt(), 0.0)
        Q = T.transpose(1, 2) @ (U * inverse_root.unsqueeze(1))  # (folds, d, rank)
        # The coordinates in the working dtype (float32 rows stay float32).
        Q = Q.to(dtype)
        Z = X.to(dtype) @ Q  # (folds, n, rank)
        train_Z = torch.gather(Z, 1, index.unsqueeze(-1).expand(-1, -1, rank))
        moments = (weights.to(dtype).unsqueeze(-1) * train_Z**2).sum(dim=1)
        bases.append(Q)
        for f in range(n_folds):
            coords.append(Z[f])
            factors.append((moments[f], None, False))
    return torch.cat(bases), coords, factors


# -- rows on the device -----------------------------------------------------------
class _Rows:
    """The rows of X on the device, centred by their global mean, in blocks."""

    def __init__(self, X, dtype, device, block_size, center=True):
        self.X, self.dtype, self.device = X, dtype, device
        self.block_size = block_size
        self.n_rows, self.n_features = X.n_rows, X.n_features
        # Centring is a change of intercept: exact only where there is one
        # (fitted, or the folds' standardisation means).
        self.center = _mean(X, block_size) if center else np.zeros(X.n_features)
        self._tensor = None
        if isinstance(X, MemoryArray):
            block = np.asarray(X.source, dtype=dtype) - self.center.astype(dtype)
            self._tensor = torch.from_numpy(block).to(device)

    @classmethod
    def of(cls, tensor):
        """Rows already on the device, as they are (no centring)."""
        rows = cls.__new__(cls)
        rows.X, rows.dtype, rows.device = None, tensor.dtype, tensor.device
        rows.n_rows, rows.n_features = tensor.shape
        rows.block_size = rows.n_rows
        rows.center = np.zeros(rows.n_features)
        rows._tensor = tensor
        return rows

    def __call__(self):
        if self._tensor is not None:
            yield 0, self.n_rows, self._tensor
            return
        for start, stop in self.X.blocks(self.block_size):
            block = self.X.block(start, stop).astype(self.dtype)
            block -= self.center.astype(self.dtype)
            yield start, stop, torch.from_numpy(block).to(self.device)

    def fold_moments(self, masks):
        """``(mean, scale)`` of each mask's rows (centred space), shape (m, d)."""
        n_masks = masks.shape[0]
        total = np.zeros((n_masks, self.n_features))
        square = np.zeros((n_masks, self.n_features))
        for start, stop, block in self():
            block = block.cpu().numpy().astype(np.float64)
            m = masks[:, start:stop].astype(np.float64)
            total += m @ block
            square += m @ (block * block)
        count = masks.sum(axis=1, keepdims=True)
        mean = total / count
        var = np.maximum(square / count - mean * mean, 0.0)
        std = np.sqrt(var)
        # StandardScaler's rule: a constant column keeps scale 1.
        scale = np.where(
            std < 10 * np.finfo(np.float64).eps * (1 + np.abs(mean)), 1, std
        )
        return mean, scale


def _mean(X, block_size):
    total = np.zeros(X.n_features)
    for start, stop in X.blocks(block_size):
        total += X.block(start, stop).astype(np.float64).sum(axis=0)
    return total / X.n_rows


# -- the estimator ----------------------------------------------------------------
class LinearProbeCV(ClassifierMixin, BaseEstimator):
    """Logistic-regression probe with ``C`` chosen by cross-validation, batched.

    The probe counterpart of ``LogisticRegressionCV(solver="lbfgs")``: the
    folds are fitted together, in batched L-BFGS runs in torch (weights of
    shape ``(problems, features, classes)``), on the CPU or a GPU, along the
    path of ``Cs`` in increasing order, each ``C`` started from the previous
    one's solution of its fold, as ``LogisticRegressionCV`` does one fold at a
    time. Each problem keeps its own L-BFGS history, line search and stopping
    test, so no problem stops another early or late, and the Hessian of the
    problems at zero (one eigendecomposition of the rows' second moments)
    serves as L-BFGS's initial inverse Hessian, which makes the first step
    nearly a Newton step. Then, as ``LogisticRegressionCV``, the ``C`` with
    the best mean score over folds is refitted on all rows, started from the
    folds' mean solution.

    The objective is sklearn's: ``C * sum_i s_i * loss_i + ||W||^2 / 2`` with
    the intercept not penalised, the multinomial (softmax) loss for several
    classes and one logit (sigmoid) for two, ``s_i`` the class weight of row
    ``i``. With ``standardize=True`` (the default), the features are
    standardised with each training fold's mean and standard deviation, as
    ``make_pipeline(StandardScaler(), LogisticRegression(C=C))`` does, and
    ``W`` is penalised in that space; ``coef_`` is given in the raw feature
    space.

    ``X`` may be read lazily (a numpy memmap, an h5py or zarr dataset, a
    :class:`skvlm.store.StoreFeatures`): it is then read ``batch_size`` rows
    at a time at every loss evaluation, so memory stays one block of rows
    plus the weights.

    Parameters
    ----------
    Cs : int or array-like of float, default=10
        Inverse regularisation strengths; an int ``n`` stands for
        ``np.logspace(-4, 4, n)``, as in ``LogisticRegressionCV``.
    cv : int, cross-validation generator or iterable, default=None
        The folds; None is 5-fold ``StratifiedKFold``, as in
        ``LogisticRegressionCV``.
    scoring : str, callable or None, default=None
        The scorer that chooses ``C``; None is accuracy.
    refit : bool, default=True
        Refit on all rows with the best ``C``. With False, ``coef_`` is the
        mean of the folds' coefficients at each fold's best ``C`` and ``C_``
        the mean of those ``C`` (``LogisticRegressionCV``'s rule).
    class_weight : dict, "balanced" or None, default=None
        Weight of each class in the loss; "balanced" is computed on all of
        ``y`` (as ``LogisticRegressionCV`` does).
    fit_intercept : bool, default=True
        Fit an (unpenalised) intercept.
    standardize : bool, default=True
        Standardise each fold with its training rows' statistics (constant
        features keep scale 1). False is ``LogisticRegressionCV`` on raw
        features.
    max_iter : int, default=100
        L-BFGS iterations per problem, as ``LogisticRegression.max_iter``.
    tol : float, default=1e-4
        A problem stops when no entry of its gradient exceeds ``tol`` in
        absolute value (the loss averaged over the training rows, as sklearn
        scales it), or its objective no longer changes.
    batch_size : int, default=4096
        Rows per matrix product (and per read of a lazily read ``X``).
    n_jobs : int or None, default=None
        Torch's CPU threads during ``fit`` (set, then restored; -1 is every
        core). None uses one
        thread when each step's matrix product is small (below about 67
        million multiply-adds, e.g. a few hundred rows), where thread start-up
        costs more than it saves, and torch's setting otherwise. Unused on a
        GPU.
    device : str, default="auto"
        Torch device: "auto" picks cuda, then mps, then cpu.
    random_state : int, RandomState instance or None, default=None
        Unused by the deterministic solver; accepted so that a search or a
        pipeline can set it everywhere. The folds come from ``cv``.
    verbose : int, default=0
        Print one line per batched run when > 0.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    Cs_ : ndarray of shape (n_Cs,)
    C_ : float
        The chosen ``C``.
    scores_ : ndarray of shape (n_folds, n_Cs)
        The score of each fold's test rows at each ``C``.
    coefs_paths_ : ndarray of shape (n_folds, n_Cs, n_outputs, n_dof)
        The coefficients (raw feature space) of each problem, intercept last
        when fitted (``n_dof = n_features + fit_intercept``); ``n_outputs`` is
        1 for a binary problem. As the non-legacy
        ``LogisticRegressionCV.coefs_paths_`` without its l1-ratio axis.
    n_iter_ : ndarray of shape (n_folds, n_Cs)
        L-BFGS iterations of each problem.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        When ``X`` had string column names.

    See Also
    --------
    sklearn.linear_model.LogisticRegressionCV : The same search, one problem at a time.
    skvlm.classifiers.LinearProbeClassifier : One probe (Adam or L-BFGS, or an MLP).

    Notes
    -----
    Computation is in ``X``'s dtype (float32 features train in float32, as on a
    GPU); in float64 the results equal ``LogisticRegressionCV``'s to the
    solvers' tolerance. Each problem reads only its fold's training rows. The
    speed against ``LogisticRegressionCV`` is measured in
    :ref:`bench_probe_cv`.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skvlm.classifiers import LinearProbeCV
    >>> X, y = load_iris(return_X_y=True)
    >>> probe = LinearProbeCV(Cs=[0.01, 1.0, 100.0], cv=3, device="cpu").fit(X, y)
    >>> probe.scores_.shape, probe.coef_.shape
    ((3, 3), (3, 4))
    >>> float(probe.C_) in (0.01, 1.0, 100.0)
    True
    >>> probe.score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict = {
        "Cs": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "cv": ["cv_object"],
        "scoring": [StrOptions(set()), callable, str, None],
        "refit": ["boolean"],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "fit_intercept": ["boolean"],
        "standardize": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        Cs=10,
        *,
        cv=None,
        scoring=None,
        refit=True,
        class_weight=None,
        fit_intercept=True,
        standardize=True,
        max_iter=100,
        tol=1e-4,
        batch_size=4096,
        n_jobs=None,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.Cs = Cs
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.class_weight = class_weight
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Fit every (fold, C) problem, batched; choose ``C``; refit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features, in memory or lazily read.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : LinearProbeCV
        """
        self._fit_together([self], [X], y)
        return self

    def fit_many(self, Xs, y):
        """One fitted copy of this probe per feature matrix, fitted together.

        The feature matrices of a layer search (one per site, the same images
        in the same order) share their labels and folds: their problems run
        in the same batched L-BFGS runs (matrices of one width together), so
        a search over many sites costs one solver loop, not one per site.
        Each result equals ``clone(self).fit(X, y)`` for its ``X``.

        Parameters
        ----------
        Xs : sequence of array-like of shape (n_samples, n_features_s)
            The feature matrices, in memory or lazily read.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        probes : list of LinearProbeCV
            Fitted clones of this probe, one per matrix of ``Xs``, in order.

        Examples
        --------
        >>> import numpy as np
        >>> from skvlm.classifiers import LinearProbeCV
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1, 2], 20)
        >>> layers = [rng.normal(size=(60, 5)) + y[:, None] * s for s in (0.1, 2.0)]
        >>> probes = LinearProbeCV(Cs=[1.0], cv=3, device="cpu").fit_many(layers, y)
        >>> [round(float(p.scores_.mean()), 2) for p in probes][1]
        1.0
        """
        if isinstance(Xs, np.ndarray) or not hasattr(Xs, "__len__") or not len(Xs):
            raise ValueError(
                "Xs must be a non-empty list of feature matrices (one per site, "
                "the same rows); for one matrix call fit(X, y)."
            )
        probes = [clone(self) for _ in Xs]
        self._fit_together(probes, list(Xs), y)
        return probes

    def _fit_together(self, probes, Xs, y):
        """Fit ``probes[s]`` on ``Xs[s]``: one batched solve per feature width."""
        validate_parameters(self)
        checked = []
        for probe, X in zip(probes, Xs, strict=True):
            X_s, y_s = probe._check_data(X, y, reset=True)
            if checked and X_s.n_rows != checked[0].n_rows:
                raise ValueError(
                    f"Xs[{len(checked)}] has {X_s.n_rows} rows and Xs[0] "
                    f"{checked[0].n_rows}; every matrix needs the same rows."
                )
            checked.append(X_s)
        y = y_s
        classes, y_index = self._check_targets(y)
        Cs = self._check_Cs()
        folds = list(
            check_cv(self.cv, y, classifier=True).split(np.zeros((len(y), 1)), y)
        )
        n_folds, n_cs = len(folds), len(Cs)
        common = dict(
            row_weights=self._row_weights(y, classes),
            fit_intercept=self.fit_intercept,
            standardize=self.standardize,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            device=resolve_device(self.device),
            n_jobs=self.n_jobs,
        )
        by_width = {}
        for s, X in enumerate(checked):
            by_width.setdefault(X.n_features, []).append(s)
        n_iter, converged = [], []
        for sites in by_width.values():
            result = fit_sites(
                [checked[s] for s in sites],
                y_index,
                len(classes),
                [train for train, _ in folds],
                Cs,
                **common,
            )
            per_site = len(result.coefs) // len(sites)
            for i, s in enumerate(sites):
                part = slice(i * per_site, (i + 1) * per_site)
                probe = probes[s]
                probe.classes_, probe.Cs_ = classes, Cs
                coefs = result.coefs[part].reshape(
                    n_folds, n_cs, *result.coefs.shape[1:]
                )
                probe._coefs = coefs
                probe.coefs_paths_ = coefs if self.fit_intercept else coefs[..., :-1]
                probe.n_iter_ = result.n_iter[part].reshape(n_folds, n_cs)
                probe.scores_ = probe._fold_scores(checked[s], y, folds, coefs)
                n_iter.append(result.n_iter[part])
                converged.append(result.converged[part])
            if self.refit:  # sites of one width and one chosen C, refitted together
                best = {
                    s: int(np.argmax(probes[s].scores_.mean(axis=0))) for s in sites
                }
                for c in sorted(set(best.values())):
                    chosen = [s for s in sites if best[s] == c]
                    final = fit_sites(
                        [checked[s] for s in chosen],
                        y_index,
                        len(classes),
                        [np.arange(checked[0].n_rows)],
                        np.array([Cs[c]]),
                        # As LogisticRegressionCV: from the folds' mean solution,
                        # which leaves a step or two: no preconditioner to build.
                        precondition=False,
                        init=np.stack(
                            [probes[s]._coefs[:, c].mean(axis=0) for s in chosen]
                        ),
                        **common,
                    )
                    for i, s in enumerate(chosen):
                        probes[s].C_ = float(Cs[c])
                        coef = final.coefs[i]
                        probes[s].coef_ = coef[:, :-1]
                        probes[s].intercept_ = coef[:, -1].copy()
                    n_iter.append(final.n_iter)
                    converged.append(final.converged)
            else:
                for s in sites:
                    probe = probes[s]
                    per_fold = np.argmax(probe.scores_, axis=1)
                    probe.C_ = float(np.mean(Cs[per_fold]))
                    coef = np.mean(
                        [probe._coefs[f, c] for f, c in enumerate(per_fold)], axis=0
                    )
                    probe.coef_, probe.intercept_ = coef[:, :-1], coef[:, -1].copy()
        for probe in probes:
            del probe._coefs
        n_iter, converged = np.concatenate(n_iter), np.concatenate(converged)
        if not converged.all():
            warnings.warn(
                f"LinearProbeCV: {int((~converged).sum())} of {converged.size} "
                f"problems reached max_iter={self.max_iter} L-BFGS iterations "
                f"(the most took {int(n_iter.max())}) before tol was met; raise "
                "max_iter (a nearly separable problem at a large C converges "
                "slowly), or drop the largest Cs.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if self.verbose:
            print(
                f"LinearProbeCV: {len(probes)} feature matrices x {n_folds} folds "
                f"x {n_cs} Cs, iterations median {int(np.median(n_iter))}"
            )

    def _check_data(self, X, y, reset):
        if not is_lazy(X):
            X, y = validate_data(
                self, X, y, dtype=(np.float64, np.float32), reset=reset
            )
            return MemoryArray(X), y
        X = LazyArray(X)
        y = column_or_1d(y, warn=True)
        if y.shape[0] != X.n_rows:
            raise ValueError(
                f"X has {X.n_rows} rows and y has {y.shape[0]} labels; give one "
                "label per row."
            )
        self.n_features_in_ = X.n_features
        self.__dict__.pop("feature_names_in_", None)
        return X, y

    def _check_targets(self, y):
        check_classification_targets(y)
        target_type = type_of_target(y)
        if target_type not in ("binary", "multiclass"):
            raise ValueError(
                f"LinearProbeCV supports binary and multiclass targets; y is "
                f"{target_type!r}. Pass one label per row."
            )
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                "LinearProbeCV needs at least 2 classes in y; got only one class "
                f"({classes[0]!r}). Give rows of two classes or more."
            )
        return classes, y_index

    def _check_Cs(self):
        if isinstance(self.Cs, Integral):
            return np.logspace(-4, 4, self.Cs)
        Cs = np.asarray(self.Cs, dtype=np.float64).ravel()
        if Cs.size == 0 or not np.all(np.isfinite(Cs)) or np.any(Cs <= 0):
            raise ValueError(
                f"Cs must be an int or a non-empty list of positive floats; got "
                f"{self.Cs!r}."
            )
        return Cs

    def _row_weights(self, y, classes):
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, dict):
            unknown = set(self.class_weight) - set(classes.tolist())
            if unknown:
                raise ValueError(
                    f"class_weight has keys {sorted(unknown, key=str)} that are not "
                    f"classes of y ({classes.tolist()}); key it by class label."
                )
        per_class = compute_class_weight(self.class_weight, classes=classes, y=y)
        return per_class[np.searchsorted(classes, y)]

    def _fold_scores(self, X, y, folds, coefs):
        n_folds, n_cs = coefs.shape[:2]
        scores = np.empty((n_folds, n_cs))
        scorer = None if self.scoring is None else check_scoring(self, self.scoring)
        for f, (_, test) in enumerate(folds):
            X_test = X.rows(np.sort(test))
            y_test = y[np.sort(test)]
            if scorer is None:  # accuracy: every C's decisions in one product
                k = coefs.shape[2]
                weights = coefs[f, :, :, :-1].reshape(n_cs * k, -1)
                z = X_test @ weights.T.astype(X_test.dtype)
                z = z.reshape(len(test), n_cs, k) + coefs[f, :, :, -1]
                index = z[:, :, 0] > 0 if k == 1 else z.argmax(axis=2)
                labels = self.classes_[index.astype(int)]
                scores[f] = np.mean(labels == y_test[:, None], axis=0)
                continue
            for c in range(n_cs):
                scores[f, c] = scorer(self._shell(coefs[f, c]), X_test, y_test)
        return scores

    def _shell(self, coef):
        """A fitted LogisticRegression holding ``coef`` (a scorer's estimator)."""
        shell = LogisticRegression()
        shell.classes_ = self.classes_
        shell.coef_, shell.intercept_ = coef[:, :-1], coef[:, -1]
        shell.n_features_in_ = coef.shape[1] - 1
        return shell

    # -------------------------------------------------------------- predict
    def decision_function(self, X):
        """Logits; 1-D (the logit of ``classes_[1]``) for a binary problem.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        check_is_fitted(self)
        if is_lazy(X):
            X = LazyArray(X)
            parts = [X.block(a, b) for a, b in X.blocks(self.batch_size)]
            X = np.concatenate(parts) if parts else np.zeros((0, X.n_features))
        else:
            X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but LinearProbeCV is expecting "
                f"{self.n_features_in_} features as input."
            )
        z = X @ self.coef_.T.astype(X.dtype) + self.intercept_.astype(X.dtype)
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X):
        """Class probabilities (sigmoid for binary, softmax otherwise).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return scores_to_proba(self.decision_function(X))

    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        z = self.decision_function(X)
        index = (z > 0).astype(int) if z.ndim == 1 else z.argmax(axis=1)
        return self.classes_[index]


@contextlib.contextmanager
def _threads(device, n_jobs, product):
    """Torch's CPU threads for a fit: ``n_jobs``, or 1 for a small product."""
    if device.type != "cpu" or (n_jobs is None and product >= _SMALL_PRODUCT):
        yield
        return
    before = torch.get_num_threads()
    if n_jobs is None:
        n_threads = 1
    else:  # sklearn's convention: -1 is every core, -2 all but one...
        n_threads = n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs
    torch.set_num_threads(max(1, int(n_threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- the batched fit of folds x Cs ---------------------------------------------------
@dataclass
class FoldsResult:
    coefs: np.ndarray  # (n_problems, n_outputs, n_features + 1), raw space
    n_iter: np.ndarray
    converged: np.ndarray


def fit_folds(X, y_index, n_classes, train_sets, Cs, **kwargs):
    """Fit the problems (train set ``f``, ``C``) of one feature matrix; see fit_sites."""
    return fit_sites([X], y_index, n_classes, train_sets, Cs, **kwargs)


def fit_sites(
    Xs,
    y_index,
    n_classes,
    train_sets,
    Cs,
    *,
    row_weights=None,
    fit_intercept=True,
    standardize=True,
    max_iter=100,
    tol=1e-4,
    batch_size=4096,
    device="cpu",
    n_jobs=None,
    path="warm",
    precondition=True,
    init=None,
):
    """Fit the problems (site ``s``, train set ``f``, ``C``) for every s, f, C, batched.

    Problem ``(s * len(train_sets) + f) * len(Cs) + c`` trains on the rows
    ``train_sets[f]`` of ``Xs[s]`` with ``Cs[c]``. Each of ``Xs`` is a
    ``MemoryArray`` or ``LazyArray``, all with the same rows and width;
    ``y_index`` holds the class index of every row (a control task passes
    permuted ones).

    ``path="warm"`` runs the Cs in increasing order, every (site, fold)'s
    problems together, each C started from the previous C's solution of its
    (site, fold) (the path ``LogisticRegressionCV`` follows, one fold at a
    time); ``"batch"`` runs every problem together from zero.
    ``precondition`` gives L-BFGS the problems' Hessian at zero as its initial
    inverse Hessian (:meth:`BatchedLogistic.preconditioner`). ``init``, of
    shape ``(n_problems, n_outputs, n_features + 1)`` in the raw feature
    space, starts the problems there instead of at zero.

    Returns
    -------
    result : FoldsResult
        Coefficients in the raw feature space, intercept last.
    """
    device = torch.device(device)
    n_sites, n_folds, n_cs = len(Xs), len(train_sets), len(Cs)
    dtypes = {getattr(X.source, "dtype", None) for X in Xs}
    dtype = np.float32 if dtypes == {np.dtype(np.float32)} else np.float64
    center = fit_intercept or standardize
    sources = [_Rows(X, dtype, device, batch_size, center=center) for X in Xs]
    n_rows, n_features = Xs[0].n_rows, Xs[0].n_features
    masks = np.zeros((n_folds, n_rows), dtype=bool)
    for f, train in enumerate(train_sets):
        masks[f, train] = True
    base = np.ones(n_rows) if row_weights is None else np.asarray(row_weights, float)
    weights = np.tile(np.repeat(masks * base, n_cs, axis=0), (n_sites, 1))
    penalty = 1.0 / (np.tile(Cs, n_sites * n_folds) * weights.sum(axis=1))
    n_outputs = 1 if n_classes == 2 else n_classes
    if standardize:  # (sites * folds, d), each problem's row repeated per C
        moments = [rows.fold_moments(masks) for rows in sources]
        mean = np.repeat(np.concatenate([m for m, _ in moments]), n_cs, axis=0)
        scale = np.repeat(np.concatenate([s for _, s in moments]), n_cs, axis=0)
    # Each problem's offset from raw features: its source's centre (and fold mean).
    offset = np.repeat(
        np.stack([rows.center for rows in sources]), n_folds * n_cs, axis=0
    )
    if standardize:
        offset = offset + mean
    factors = None
    reduce = max(len(train) for train in train_sets) < min(n_features, _SPAN_ROWS)
    reduce &= all(rows._tensor is not None for rows in sources)
    if reduce:
        # Fewer training rows than features: the solution lies in the span of
        # the fold's (standardised) training rows, so each (site, fold) is
        # solved exactly in the coordinates of an orthonormal basis of that
        # span (at most n_train of them, not n_features), with a diagonal
        # Hessian at zero there.
        fold_mean = None if not standardize else mean[::n_cs]
        fold_scale = None if not standardize else scale[::n_cs]
        bases, coords, factors = _row_spans(
            sources, train_sets, fold_mean, fold_scale, base
        )
        sources = [_Rows.of(z) for z in coords]
        groups = [(g, None) for g in range(n_sites * n_folds)]
        problem_group = np.repeat(np.arange(n_sites * n_folds), n_cs)
    # Reading only a fold's own rows pays where folds are small; K-fold
    # training sets hold most rows, and one wide product over all rows
    # (held-out rows weigh 0) runs faster than a narrow one per fold.
    elif masks.mean() < 0.5:
        groups = [(site, train) for site in range(n_sites) for train in train_sets]
        problem_group = np.repeat(np.arange(n_sites * n_folds), n_cs)
    else:
        groups = [(site, None) for site in range(n_sites)]
        problem_group = np.repeat(np.arange(n_sites), n_folds * n_cs)

    def tensor(values):
        return torch.as_tensor(np.asarray(values, dtype=dtype), device=device)

    objective = BatchedLogistic(
        sources,
        torch.as_tensor(np.asarray(y_index, dtype=np.int64), device=device),
        tensor(weights),
        tensor(penalty),
        tensor(mean) if standardize and not reduce else None,
        tensor(scale) if standardize and not reduce else None,
        n_outputs,
        fit_intercept,
        groups,
        problem_group,
    )
    n_dof = sources[0].n_features
    n_problems = weights.shape[0]
    if init is None:
        theta = tensor(np.zeros((n_problems, n_dof + 1, n_outputs)))
    else:  # raw-space (problems, outputs, features + 1) to the solver's theta
        V = np.transpose(np.asarray(init, dtype=np.float64), (0, 2, 1))
        W = V[:, :-1, :] * (scale[:, :, None] if standardize else 1.0)
        b = V[:, -1, :] + np.einsum("pd,pdk->pk", offset, V[:, :-1, :])
        if reduce:  # the weights' coordinates in their fold's basis
            W = W.reshape(len(bases), n_cs, n_features, n_outputs)
            Qt = bases.transpose(1, 2).double().cpu().numpy()[:, None]
            W = np.matmul(Qt, W).reshape(n_problems, -1, n_outputs)
        if not fit_intercept:
            b = np.zeros_like(b)
        theta = tensor(np.concatenate([W, b[:, None, :]], axis=1))
    if path == "batch" or n_cs == 1:
        runs = [np.arange(n_problems)]
    else:  # one run per C, increasing, every (site, fold)'s problem at that C
        firsts = np.arange(n_sites * n_folds) * n_cs
        runs = [firsts + c for c in np.argsort(Cs, kind="stable")]
    # One product: a group's problems, or every group's when they are stacked
    # into one batched product (which threads split by source).
    stacked = objective.stacks
    per_group = len(runs[0]) if stacked else max(len(runs[0]) // len(groups), 1)
    product = min(batch_size, n_rows) * n_dof * per_group * n_outputs
    n_iter = np.zeros(n_problems, dtype=int)
    converged = np.ones(n_problems, dtype=bool)
    with _threads(device, n_jobs, product):
        largest = objective.largest_raw(bases, tol) if reduce else None
        if precondition:
            precondition = objective.preconditioner(tensor(base), factors)
        else:
            precondition = None
        previous = result = None
        for run in runs:
            chosen = torch.as_tensor(run, device=device)
            values = theta[chosen].clone()
            known = None
            if previous is not None and init is None:
                # Warm start along the C path: the previous C's solution, whose
                # loss and gradient only need the new penalty.
                values = result.theta.clone()
                known = objective.reprice(
                    values, result.objective, result.gradient, previous, chosen
                )
            result = batched_lbfgs(
                lambda values, index, chosen=chosen: objective(values, chosen[index]),
                values,
                max_iter=max_iter,
                tol=tol,
                precondition=None
                if precondition is None
                else lambda q, index, chosen=chosen: precondition(q, chosen[index]),
                start=known,
                largest=None
                if largest is None
                else lambda g, index, chosen=chosen: largest(g, chosen[index]),
            )
            theta[chosen] = result.theta
            n_iter[run], converged[run] = result.n_iter, result.converged
            previous = chosen
    if reduce:  # back from each fold's basis to the raw feature space
        n_groups, rank = len(bases), bases.shape[2]
        coords = theta[:, :-1, :].reshape(n_groups, n_cs, rank, -1)
        V = torch.matmul(bases.unsqueeze(1), coords)  # in the rows' dtype
        V = V.reshape(n_problems, n_features, -1).cpu().numpy().astype(np.float64)
        theta = theta.cpu().numpy().astype(np.float64)
        if standardize:
            V = V / scale[:, :, None]
        c = theta[:, -1, :] - np.einsum("pd,pdk->pk", offset, V)
    else:
        every = torch.arange(n_problems, device=device)
        V, c = objective.effective(theta, every)
        V = V.cpu().numpy().astype(np.float64)
        c = c.cpu().numpy().astype(np.float64)
        centers = np.repeat(
            np.stack([rows.center for rows in sources]), n_folds * n_cs, 0
        )
        c = c - np.einsum("pd,pdk->pk", centers, V)  # undo each source's centring
    theta_all = np.concatenate([V, c[:, None, :]], axis=1)
    coefs = np.transpose(theta_all, (0, 2, 1))  # (problems, outputs, features + 1)
    return FoldsResult(coefs, n_iter, converged)
