"""The two documented recipes that failed on multiclass data (issue 15, item 6).

``tests/test_docs_examples.py`` runs the pages as written; these tests check what
the pages claim about the recipes, on the ten digit classes: the laptop search of
``searching.rst`` runs no forward pass and asks only for poolings its stage has,
and the feature-engine recipe of ``importance.rst`` keeps columns in every fold,
where feature-engine's defaults did not.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skvlm import VLMEmbeddingTransformer
from skvlm.datasets import load_digit_images

fe_selection = pytest.importorskip("feature_engine.selection")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # These tests fit hundreds of small LogisticRegressions: with two OpenBLAS
    # threads per xdist worker on a loaded machine they ran 20 times slower.
    with threadpool_limits(limits=1):
        yield


def forward_count(log):
    return len(log.read())


def test_laptop_search_reads_the_warmed_store_and_runs_no_forward_pass(
    tmp_path, forward_log
):
    digits = load_digit_images(n_per_class=5, variation=0.5, random_state=0)
    assert len(set(digits.target)) == 10
    store = tmp_path / "feats"

    def llava(stage):
        return VLMEmbeddingTransformer(
            "skvlm/tiny-llava", stage=stage, dtype="float32", cache=store
        )

    llava("language").precompute(digits.images, verbose=0)
    assert forward_count(forward_log) == len(digits.images)

    grid = {"vlm__layer": [1, 2, 3], "vlm__pooling": ["last", "mean", "image_mean"]}
    laptop = Pipeline(
        [("vlm", llava("language")), ("probe", LogisticRegression(max_iter=1000))]
    )
    search = GridSearchCV(laptop, grid, cv=StratifiedKFold(5), error_score="raise")
    search.fit(digits.images, digits.target)
    assert forward_count(forward_log) == len(digits.images)  # all from the store
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()

    # The page's old laptop search reused the vision-stage pipeline with this grid.
    vision = Pipeline(
        [("vlm", llava("vision")), ("probe", LogisticRegression(max_iter=1000))]
    )
    with pytest.raises(ValueError, match="'last'"):
        GridSearchCV(vision, grid, cv=2, error_score="raise").fit(
            digits.images, digits.target
        )


@pytest.fixture(scope="module")
def site_features():
    """Standardised tiny-clip features of 100 digits (10 classes) at six sites."""
    digits = load_digit_images(n_per_class=10, variation=0.5, random_state=0)
    features = {}
    for layer in (1, 2, 3):
        for pooling in ("cls", "mean"):
            vlm = VLMEmbeddingTransformer(
                "skvlm/tiny-clip", stage="vision", layer=layer, pooling=pooling
            ).set_output(transform="pandas")
            scaler = StandardScaler().set_output(transform="pandas")
            features[layer, pooling] = scaler.fit_transform(
                vlm.fit_transform(digits.images)
            )
    return features, pd.Series(digits.target, name="digit")


def _kept_per_fold(features, y, scale, **selector_params):
    """Columns ProbeFeatureSelection keeps on each training fold of each site."""
    kept = []
    for X in features.values():
        for train, _ in StratifiedKFold(5).split(X, y):
            selector = fe_selection.ProbeFeatureSelection(
                LogisticRegression(max_iter=1000),
                n_probes=10,
                cv=3,
                random_state=0,
                **selector_params,
            ).fit(X.iloc[train] * scale, y.iloc[train])
            kept.append(len(selector.variables_) - len(selector.features_to_drop_))
    return kept


def test_feature_engine_defaults_fail_on_multiclass_digits(site_features):
    # What the recipe used to do: standardised columns, feature-engine's scoring.
    features, y = site_features
    with pytest.warns(UserWarning, match="Scoring failed"):  # roc_auc, 10 classes
        kept = _kept_per_fold(features, y, scale=1.0)
    assert min(kept) == 0  # some folds keep no column at all
    assert np.median(kept) <= 2


def test_feature_engine_recipe_keeps_columns_in_every_fold(site_features):
    # The documented recipe: columns at the probes' scale, a multiclass scorer.
    features, y = site_features
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Scoring failed")
        kept = _kept_per_fold(features, y, scale=3.0, scoring="accuracy")
    assert min(kept) >= 1
    assert np.median(kept) >= 5
