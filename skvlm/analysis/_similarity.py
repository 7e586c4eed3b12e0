"""Representation similarity: CKA (Kornblith et al. 2019) and RSA over RDMs."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
from scipy.spatial.distance import pdist, squareform

__all__ = ["cka", "rsa"]

_KERNELS = ("linear", "rbf")
_RDM_METRICS = ("correlation", "euclidean")
_COMPARISONS = ("spearman", "corr", "kendall", "tau-a", "rho-a", "cosine")


def _as_matrix(X, name):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}; "
            "reshape it, e.g. X.reshape(len(X), -1)."
        )
    if not np.isfinite(X).all():
        raise ValueError(
            f"{name} holds NaN or infinite values (rows {np.flatnonzero(~np.isfinite(X).all(axis=1))[:10].tolist()}); "
            "drop those rows from both inputs."
        )
    return X


def _pair(X, Y, *, min_samples):
    X, Y = _as_matrix(X, "X"), _as_matrix(Y, "Y")
    if len(X) != len(Y):
        raise ValueError(
            f"X has {len(X)} rows and Y has {len(Y)}; both must hold the same "
            "samples in the same order (one row per image)."
        )
    if len(X) < min_samples:
        raise ValueError(
            f"X and Y have {len(X)} rows; this measure needs at least {min_samples}."
        )
    return X, Y


def _gram(X, kernel, sigma):
    if kernel == "linear":
        return X @ X.T
    sq = squareform(pdist(X, "sqeuclidean"))
    # Kornblith et al.'s bandwidth: a fraction of the median distance between rows.
    median = np.median(sq[np.triu_indices_from(sq, k=1)])
    width = sigma**2 * median
    if width == 0:
        raise ValueError(
            "kernel='rbf' needs rows that differ: the median distance between the "
            "rows of X (or Y) is 0. Use kernel='linear' or drop duplicate rows."
        )
    return np.exp(-sq / (2 * width))


def _hsic(K, L, debiased):
    """HSIC of two Gram matrices, up to a factor that cancels in CKA."""
    if not debiased:
        Kc = K - K.mean(axis=0) - K.mean(axis=1)[:, None] + K.mean()
        return float(np.sum(Kc * L))
    # U-centring (Szekely and Rizzo 2014): <U(K), U(L)> / (n (n - 3)) is the
    # unbiased HSIC estimator of Song et al. (2012).
    return float(np.sum(_u_centre(K) * _u_centre(L)))


def _u_centre(K):
    n = len(K)
    K = K.copy()
    np.fill_diagonal(K, 0)
    rows = K.sum(axis=1) / (n - 2)
    total = K.sum() / ((n - 1) * (n - 2))
    U = K - rows[:, None] - rows[None, :] + total
    np.fill_diagonal(U, 0)
    return U


def cka(X, Y, *, kernel="linear", debiased=False, sigma=1.0):
    """Centred kernel alignment between two representations of the same samples.

    CKA (Kornblith et al. 2019) is the HSIC of the two representations'
    Gram matrices, normalised: ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.
    Linear CKA is invariant to orthogonal transforms and isotropic scaling of
    either representation, and the two may have different widths.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        The same samples, in the same order.
    kernel : {"linear", "rbf"}, default="linear"
        ``rbf``: a Gaussian kernel whose bandwidth is ``sigma`` times the
        median distance between rows (as in Kornblith et al.'s code).
    debiased : bool, default=False
        Use the unbiased HSIC estimator of Song et al. (2012) (as in
        Nguyen et al. 2021 and thingsvision's ``unbiased=True``). The biased
        estimator overstates the similarity of unrelated representations when
        features outnumber samples; the debiased one is near 0 for them (and
        may be slightly negative).
    sigma : float, default=1.0
        The RBF bandwidth as a fraction of the median distance; ignored by the
        linear kernel.

    Returns
    -------
    float
        1 for representations equal up to the invariances; 0 for unrelated ones
        (in expectation, when debiased). NaN, with a ``RuntimeWarning``, when
        X or Y is the same for every sample.

    References
    ----------
    Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network
    Representations Revisited", ICML 2019. Song, Smola, Gretton, Bedo and
    Borgwardt, "Feature Selection via Dependence Maximization", JMLR 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.analysis import cka
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 8))
    >>> Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    >>> round(cka(X, 3 * X @ Q), 6)
    1.0
    >>> cka(X, rng.normal(size=(50, 8))) < 0.5
    True
    """
    if kernel not in _KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {_KERNELS}.")
    if isinstance(sigma, bool) or not isinstance(sigma, Real) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}.")
    X, Y = _pair(X, Y, min_samples=4 if debiased else 2)
    K, L = _gram(X, kernel, sigma), _gram(Y, kernel, sigma)
    xy = _hsic(K, L, debiased)
    xx, yy = _hsic(K, K, debiased), _hsic(L, L, debiased)
    if xx <= 0 or yy <= 0:
        # As scipy's correlations do for a constant input: NaN and a warning.
        warnings.warn(
            f"{'X' if xx <= 0 else 'Y'} does not vary across samples (its centred "
            "Gram matrix is 0: e.g. a CLS token before the first block), so CKA "
            "is undefined and NaN is returned.",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(xy / np.sqrt(xx * yy))


def _rsatoolbox():
    try:
        import rsatoolbox
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rsa needs rsatoolbox for its RDMs and their comparison: "
            "pip install 'skvlm[analysis]' (or pip install rsatoolbox)."
        ) from exc
    return rsatoolbox


def rsa(X, Y, *, metric="correlation", compare="spearman"):
    """Representational similarity analysis: compare the two RDMs.

    Each representation gives a representational dissimilarity matrix (RDM,
    the distance between every pair of samples); RSA correlates the two RDMs.
    RDMs and their comparison are rsatoolbox's (``calc_rdm``, ``compare``),
    an optional dependency: ``pip install 'skvlm[analysis]'``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        The same samples (conditions), in the same order.
    metric : {"correlation", "euclidean"}, default="correlation"
        The RDM's dissimilarity: 1 - Pearson correlation between two rows, or
        their Euclidean distance (rsatoolbox's ``calc_rdm`` methods).
    compare : {"spearman", "corr", "kendall", "tau-a", "rho-a", "cosine"}, default="spearman"
        How the two RDMs' upper triangles are compared (rsatoolbox's
        ``compare`` methods).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.analysis import rsa
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 6))
    >>> round(rsa(X, 2 * X + 1, metric="euclidean"), 6)
    1.0
    """
    if metric not in _RDM_METRICS:
        raise ValueError(f"metric={metric!r} is not one of {_RDM_METRICS}.")
    if compare not in _COMPARISONS:
        raise ValueError(f"compare={compare!r} is not one of {_COMPARISONS}.")
    X, Y = _pair(X, Y, min_samples=3)
    rsatoolbox = _rsatoolbox()
    rdms = [
        rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(M), method=metric)
        for M in (X, Y)
    ]
    return float(
        np.asarray(rsatoolbox.rdm.compare(rdms[0], rdms[1], method=compare)).item()
    )
