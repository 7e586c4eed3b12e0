"""CKA against the formulas of Kornblith et al. (2019) and Song et al. (2012),
written here in plain numpy; RSA against scipy's RDMs and Spearman correlation."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from skvlm.analysis import cka, rsa


def _hsic_biased(K, L):
    n = len(K)
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def _hsic_unbiased(K, L):
    # Song et al. 2012, eq. 5: zero the diagonals, then three terms.
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ K @ L @ one
    ) / (n * (n - 3))


def _cka_reference(K, L, hsic):
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def _rbf(X, sigma=1.0):
    sq = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    median = np.median(sq[np.triu_indices(len(X), 1)])
    return np.exp(-sq / (2 * sigma**2 * median))


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(25, 7))
    Y = X @ rng.normal(size=(7, 11)) + 0.5 * rng.normal(size=(25, 11))
    return X, Y


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_formula(pair, debiased):
    X, Y = pair
    hsic = _hsic_unbiased if debiased else _hsic_biased
    expected = _cka_reference(X @ X.T, Y @ Y.T, hsic)
    assert cka(X, Y, debiased=debiased) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_rbf_cka_matches_formula(pair, debiased, sigma):
    X, Y = pair
    hsic = _hsic_unbiased if debiased else _hsic_biased
    expected = _cka_reference(_rbf(X, sigma), _rbf(Y, sigma), hsic)
    got = cka(X, Y, kernel="rbf", debiased=debiased, sigma=sigma)
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(pair, debiased):
    X, _ = pair
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(7, 7)))
    assert cka(X, 4.0 * X @ Q, debiased=debiased) == pytest.approx(1.0, abs=1e-10)
    assert cka(X, 0.1 * X, kernel="rbf", debiased=debiased) == pytest.approx(1.0)
    # CKA centres the features: a translation changes nothing either.
    assert cka(X, X + 3.0, debiased=debiased) == pytest.approx(1.0, abs=1e-10)


def test_not_invariant_to_anisotropic_scaling(pair):
    X, _ = pair
    assert cka(X, X * np.arange(1, 8) ** 2) < 0.99


def test_debiased_removes_the_bias_of_unrelated_wide_features():
    # Few samples, many features: biased CKA of independent noise is far from 0.
    rng = np.random.default_rng(0)
    biased, debiased = [], []
    for _ in range(20):
        X, Y = rng.normal(size=(20, 200)), rng.normal(size=(20, 200))
        biased.append(cka(X, Y))
        debiased.append(cka(X, Y, debiased=True))
    assert np.mean(biased) > 0.8
    assert abs(np.mean(debiased)) < 0.05
    assert all(d < b for d, b in zip(debiased, biased, strict=True))


def test_symmetric_and_bounded(pair):
    X, Y = pair
    assert cka(X, Y) == pytest.approx(cka(Y, X))
    assert 0 < cka(X, Y) < 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": "cosine"}, "kernel='cosine'"),
        ({"sigma": 0}, "sigma"),
    ],
)
def test_bad_parameters(pair, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cka(*pair, **kwargs)


def test_bad_inputs(pair):
    X, Y = pair
    with pytest.raises(ValueError, match="25 rows and Y has 24"):
        cka(X, Y[:-1])
    with pytest.raises(ValueError, match="must be 2-D"):
        cka(X[:, 0], Y)
    with pytest.warns(RuntimeWarning, match="X does not vary"):
        assert np.isnan(cka(np.ones_like(X), Y))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        cka(bad, Y)


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
def test_rsa_matches_scipy_spearman_of_rdms(pair, metric):
    pytest.importorskip("rsatoolbox")
    X, Y = pair
    expected = spearmanr(pdist(X, metric), pdist(Y, metric)).statistic
    assert rsa(X, Y, metric=metric) == pytest.approx(expected, rel=1e-8)


def test_rsa_pearson_comparison(pair):
    pytest.importorskip("rsatoolbox")
    X, Y = pair
    expected = np.corrcoef(pdist(X, "correlation"), pdist(Y, "correlation"))[0, 1]
    assert rsa(X, Y, compare="corr") == pytest.approx(expected, rel=1e-8)


def test_rsa_bad_parameters(pair):
    with pytest.raises(ValueError, match="metric='cityblock'"):
        rsa(*pair, metric="cityblock")
    with pytest.raises(ValueError, match="compare='pearson'"):
        rsa(*pair, compare="pearson")
