"""Pipelines that start with a VLM: importance without rerunning it, and feature-engine.

References are sklearn's own ``permutation_importance`` on the VLM's output, or
sklearn's permutation procedure written out by hand for groups.
"""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import expit
from sklearn.inspection import permutation_importance as sk_permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skvlm import VLMEmbeddingTransformer
from skvlm.inspection import groups_from_feature_names, permutation_importance
from skvlm.selection import RandomProbeSelector

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(n, seed=0):
    """Noise images whose class is the brightness of their top-left quarter."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    images = []
    for label in y:
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        low, high = (200, 256) if label else (0, 56)
        pixels[:16, :16] = rng.integers(low, high, (16, 16, 3))
        images.append(Image.fromarray(pixels))
    return images, y


def forward_count(log):
    return len(log.read())


def vlm_pipeline(path, layer, pooling="mean"):
    return Pipeline(
        [
            ("vlm", VLMEmbeddingTransformer(path, layer=layer, pooling=pooling)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )


# -- permutation importance on the embedding columns -------------------------------------
def _sklearn_permuted_copies(X, groups, n_repeats, random_state):
    """sklearn's permutation loop, written out: (unit, permuted copy of X) pairs.

    A group's columns move together; a unit is a group's position in ``groups``.
    """
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    for unit, columns in enumerate(groups.values()):
        rng = np.random.RandomState(seed)
        shuffling_idx = np.arange(len(X))
        permuted = X.copy()
        for _ in range(n_repeats):
            rng.shuffle(shuffling_idx)
            permuted[:, columns] = permuted[shuffling_idx][:, columns]
            yield unit, permuted.copy()


def _gamma(u, k):
    """Higham's gamma_k: a sum of k rounded products is within gamma_k * sum|terms|."""
    return k * u / (1 - k * u)


@pytest.mark.parametrize("scoring", [None, "neg_log_loss"])
def test_precomputed_vlm_runs_once_and_equals_sklearn(clip_path, forward_log, scoring):
    images, y = planted(20)
    pipe = vlm_pipeline(clip_path, layer=1).fit(images, y)
    Xt = pipe[:1].transform(images)
    forward_log.clear()
    result = permutation_importance(
        pipe,
        images,
        y,
        precomputed_steps="vlm",
        scoring=scoring,
        n_repeats=3,
        random_state=0,
    )
    assert forward_count(forward_log) == len(images)  # the VLM ran once
    assert Xt.dtype == np.float32
    # The reference: sklearn on the VLM's float32 output cast to float64, the
    # arithmetic of skvlm's linear path (it scores baseline and permuted copies
    # in float64; sklearn on the float32 matrix would score in float32).
    X64 = Xt.astype(np.float64)
    rest = pipe[1:]
    expected = sk_permutation_importance(
        rest, X64, y, scoring=scoring, n_repeats=3, random_state=0
    )
    # Both sides score the baseline with the same call on the same values, so it
    # is bit-identical; only the permuted scores differ, by rounding. Derivation
    # (u = 2**-53, gamma_k as in _gamma, Higham 2002, eq. 3.5, any summation
    # order): each decision is d = sum_j z_j c_j + b, z = (x - mean) / scale.
    # sklearn rounds z twice, then sums n products and b: error <= gamma_{n+3}
    # times sum_j |z_j c_j| + |b|. skvlm expands it to x @ (c / scale) +
    # (b - mean / scale @ c) and adds (x[p] - x) * w_j for a permuted column:
    # at most 2n + 8 roundings on terms whose absolute values sum to at most
    # A = sum_j (3 max|x_j| + |mean_j|) |c_j| / scale_j + |b| (|x[p] - x| <=
    # 2 max|x|, and A bounds sklearn's terms too). So the two decisions of a row
    # differ by at most e_d = 2 gamma_{2n+8} A.
    scaler, clf = rest["scale"], rest["clf"]
    n_rows, n = X64.shape
    c = np.abs(clf.coef_.astype(np.float64).ravel())
    A = np.sum((3 * np.abs(X64).max(axis=0) + np.abs(scaler.mean_)) * c / scaler.scale_)
    A += abs(float(clf.intercept_[0]))
    u = np.finfo(np.float64).eps / 2
    e_d = 2 * _gamma(u, 2 * n + 8) * A
    columns = {j: [j] for j in range(n)}
    decisions = np.concatenate(
        [
            rest.decision_function(copy)
            for _, copy in _sklearn_permuted_copies(X64, columns, 3, 0)
        ]
    )
    if scoring is None:
        # Accuracy: a prediction can differ only where |d| <= e_d; no decision
        # comes that close to 0, so every prediction, count and mean is equal.
        assert np.abs(decisions).min() > e_d
        atol = 0.0
    else:
        # Binary log loss: a row's loss -log q, q = expit(+-d), is 1-Lipschitz
        # in d, so decisions e_d apart move it by at most e_d. Evaluating it
        # (expit, 1 - p, log, with |d| <= d_max so q >= expit(-d_max) and no
        # clipping) adds at most 3u / q_min + u * loss_max on each side, and the
        # mean over n_rows rows gamma_{n_rows} * loss_max.
        q_min = expit(-np.abs(decisions).max())
        loss_max = -np.log(q_min)
        atol = e_d + 2 * (3 * u / q_min + (u + _gamma(u, n_rows)) * loss_max)
        assert atol < 1e-9  # the bound is tight enough to mean something
    for key in ("importances", "importances_mean", "importances_std"):
        np.testing.assert_allclose(result[key], expected[key], rtol=0, atol=atol)
    names = pipe[:1].get_feature_names_out()
    np.testing.assert_array_equal(result.feature_names, names)
    assert names[0] == "vision_l1_mean_0"


def _sklearn_procedure_for_groups(estimator, X, y, groups, n_repeats, random_state):
    """sklearn's permutation loop, written out, with a group's columns moved together."""
    scorer = get_scorer("accuracy")
    baseline = scorer(estimator, X, y)
    scores = np.zeros((len(groups), n_repeats))
    counts = np.zeros(len(groups), dtype=int)
    for unit, permuted in _sklearn_permuted_copies(X, groups, n_repeats, random_state):
        scores[unit, counts[unit]] = scorer(estimator, permuted, y)
        counts[unit] += 1
    return baseline - scores


def test_groups_per_layer_from_feature_names(clip_path, forward_log):
    images, y = planted(20, seed=1)
    pipe = vlm_pipeline(clip_path, layer=[0, -1]).fit(images, y)
    names = pipe[:1].get_feature_names_out()
    groups = groups_from_feature_names(names, by="layer")
    assert list(groups) == ["vision_l0", "vision_l3"]
    assert groups["vision_l3"] == list(range(32, 64))
    Xt = pipe[:1].transform(images).astype(np.float64)
    forward_log.clear()
    result = permutation_importance(
        pipe,
        images,
        y,
        precomputed_steps=1,
        groups=groups,
        scoring="accuracy",
        n_repeats=4,
        random_state=3,
    )
    assert forward_count(forward_log) == len(images)
    np.testing.assert_array_equal(result.group_names, ["vision_l0", "vision_l3"])
    expected = _sklearn_procedure_for_groups(pipe[1:], Xt, y, groups, 4, 3)
    np.testing.assert_allclose(result.importances, expected, atol=1e-9)
    # names work as group members too, since precomputed_steps gives them
    by_name = {k: [names[j] for j in v] for k, v in groups.items()}
    again = permutation_importance(
        pipe,
        images,
        y,
        precomputed_steps="vlm",
        groups=by_name,
        scoring="accuracy",
        n_repeats=4,
        random_state=3,
    )
    np.testing.assert_array_equal(again.importances, result.importances)


# -- composition with feature-engine -----------------------------------------------------
def _selector_pipeline(path, selector):
    return Pipeline(
        [
            (
                "vlm",
                VLMEmbeddingTransformer(path, layer=1, pooling="mean").set_output(
                    transform="pandas"
                ),
            ),
            ("scale", StandardScaler().set_output(transform="pandas")),
            ("select", selector),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )


def _probe_feature_selection():
    fe_selection = pytest.importorskip("feature_engine.selection")
    return fe_selection.ProbeFeatureSelection(
        LogisticRegression(max_iter=1000), n_probes=3, cv=2, random_state=0
    )


GRID = {"vlm__layer": [1, -1], "vlm__pooling": ["mean", "cls"]}


def _labelled(n, seed=0):
    """Images and a y Series whose index is not 0..n-1 (feature-engine checks it)."""
    images, y = planted(n, seed)
    return images, pd.Series(y, index=np.arange(100, 100 + 3 * n, 3), name="label")


@pytest.mark.parametrize("as_frame", [False, True])
def test_feature_engine_probe_selection_in_a_grid_search(
    clip_path, tmp_path, forward_log, as_frame
):
    images, y = _labelled(24)
    pipe = _selector_pipeline(clip_path, _probe_feature_selection())
    # X carries y's index, so every subset GridSearchCV takes keeps matching labels
    if as_frame:
        X = pd.DataFrame({"image": images}, index=y.index)
        pipe.set_params(vlm__cache=str(tmp_path / "store"))
    else:
        X = pd.Series(images, index=y.index)
    search = GridSearchCV(pipe, GRID, cv=StratifiedKFold(2), error_score="raise").fit(
        X, y
    )
    if as_frame:  # 4 sites x 2 folds + refit, and each image ran once
        assert forward_count(forward_log) == len(images)
    assert set(search.best_params_) == set(GRID)
    selected = search.best_estimator_[:3].transform(X)
    assert list(selected.index) == list(y.index)
    assert 0 < selected.shape[1] <= 32
    assert not any("probe" in c for c in selected.columns)
    assert search.best_estimator_.score(X, y) >= 0.9


def test_feature_engine_index_check_fails_without_the_recipe(clip_path):
    # the documented failure: a list X gets a fresh 0..n-1 index, y keeps its labels
    images, y = _labelled(12)
    pipe = _selector_pipeline(clip_path, _probe_feature_selection())
    with pytest.raises(ValueError, match="index"):
        pipe.fit(images, y)
    pipe.fit(images, y.to_numpy())  # the other fix: y as numpy


def test_random_probe_selector_in_a_grid_search_with_a_disk_cache(
    clip_path, tmp_path, forward_log
):
    images, y = _labelled(24, seed=2)
    X = pd.Series(images, index=y.index)
    pipe = _selector_pipeline(
        clip_path, RandomProbeSelector(LogisticRegression(), cv=2, random_state=0)
    )
    pipe.set_params(vlm__cache=tmp_path / "store")
    search = GridSearchCV(pipe, GRID, cv=StratifiedKFold(2), error_score="raise")
    search.fit(X, y)
    assert forward_count(forward_log) == len(images)
    kept = search.best_estimator_["select"].get_feature_names_out()
    assert 0 < len(kept) <= 32
    assert search.best_estimator_.score(X, y) >= 0.9
