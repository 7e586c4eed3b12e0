"""The store behind VLMEmbeddingTransformer: one forward pass per image, keys that can't lie."""

import os
import warnings

import numpy as np
import pytest
from joblib.externals.loky import get_reusable_executor
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skvlm import FeatureStore, FeatureStoreWarning, VLMEmbeddingTransformer
from skvlm._inputs import image_key
from skvlm.testing import make_tiny_clip, make_tiny_llava, random_images


@pytest.fixture
def forward_log(tmp_path, monkeypatch):
    """Each image run through a model appends its content key to this file."""
    path = tmp_path / "forwards.log"
    monkeypatch.setenv("SKVLM_FORWARD_LOG", str(path))
    # loky workers inherit the environment when they start: start fresh ones.
    get_reusable_executor().shutdown(wait=True)
    yield lambda: path.read_text().split() if path.exists() else []
    get_reusable_executor().shutdown(wait=True)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_runs_each_image_once(clip_path, tmp_path, forward_log, n_jobs):
    images = random_images(20, seed=4)
    y = np.arange(20) % 2
    pipe = Pipeline(
        [
            ("vlm", VLMEmbeddingTransformer(clip_path, cache=tmp_path / "store")),
            ("clf", LogisticRegression(max_iter=200)),
        ]
    )
    grid = {"vlm__layer": [0, 1, 2, 3], "vlm__pooling": ["cls", "mean", "max"]}
    GridSearchCV(pipe, grid, cv=5, n_jobs=n_jobs).fit(images, y)
    logged = forward_log()
    expected = sorted(image_key(im) for im in images)
    assert sorted(logged) == expected  # every image exactly once


def test_cached_equals_uncached_for_every_site(clip_path, tmp_path):
    images = random_images(5, seed=6)
    store = FeatureStore(tmp_path / "s")
    for layer in (0, 2, [1, -1]):
        for pooling in ("cls", "mean", "max", -1):
            kwargs = dict(layer=layer, pooling=pooling)
            plain = VLMEmbeddingTransformer(clip_path, **kwargs).fit_transform(images)
            cached = VLMEmbeddingTransformer(clip_path, cache=store, **kwargs)
            np.testing.assert_allclose(cached.fit_transform(images), plain, atol=1e-6)
            np.testing.assert_allclose(cached.transform(images), plain, atol=1e-6)


def test_second_transform_runs_no_forward(clip_path, tmp_path, forward_log):
    images = random_images(4)
    VLMEmbeddingTransformer(clip_path, layer=0, cache=tmp_path / "s").fit_transform(
        images
    )
    assert len(forward_log()) == 4
    for pooling in ("cls", "mean", "max", "pooler"):
        VLMEmbeddingTransformer(
            clip_path, layer=-1, pooling=pooling, cache=str(tmp_path / "s")
        ).fit_transform(images)
    assert len(forward_log()) == 4


def test_precompute_fills_the_store(clip_path, tmp_path, forward_log):
    images = random_images(5)
    vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "s").precompute(images)
    assert len(forward_log()) == 5
    assert (
        vlm.cache is not None
        and FeatureStore.open(tmp_path / "s").info()["entries"] == 5
    )
    vlm.set_params(layer=1, pooling="max").fit(None).transform(images)
    assert len(forward_log()) == 5
    with pytest.raises(ValueError, match="cache is None"):
        VLMEmbeddingTransformer(clip_path).precompute(images)


def test_renamed_file_hits_and_edited_file_misses(clip_path, tmp_path, forward_log):
    image = random_images(1)[0]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    image.save(a)
    vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "s").fit(None)
    first = vlm.transform([a])
    os.rename(a, b)
    np.testing.assert_array_equal(vlm.transform([b]), first)
    assert len(forward_log()) == 1
    edited = np.asarray(image).copy()
    edited[:10] = 0
    from PIL import Image

    Image.fromarray(edited).save(b)
    changed = vlm.transform([b])
    assert len(forward_log()) == 2
    np.testing.assert_allclose(
        changed, VLMEmbeddingTransformer(clip_path).fit_transform([b]), atol=1e-6
    )


def test_other_weights_never_share_entries(tmp_path):
    images = random_images(3)
    first = make_tiny_clip(tmp_path / "m", seed=0)
    store = FeatureStore(tmp_path / "s")
    before = VLMEmbeddingTransformer(first, cache=store).fit_transform(images)
    make_tiny_clip(tmp_path / "m", seed=1)  # retrained weights at the same path
    from skvlm import clear_model_cache

    clear_model_cache()
    after = VLMEmbeddingTransformer(first, cache=store).fit_transform(images)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(
        after, VLMEmbeddingTransformer(first).fit_transform(images), atol=1e-6
    )
    assert len(store.info()["namespaces"]) == 2


def test_other_prompt_or_dtype_never_share_entries(tmp_path, forward_log):
    path = make_tiny_llava(tmp_path / "llava")
    images = random_images(2)
    store = FeatureStore(tmp_path / "s")
    a = VLMEmbeddingTransformer(
        path, stage="language", prompt="What is it?", cache=store
    )
    b = clone(a).set_params(prompt="Describe the photo.")
    fa, fb = a.fit_transform(images), b.fit_transform(images)
    assert not np.allclose(fa, fb)
    for est, got in ((a, fa), (b, fb)):
        plain = clone(est).set_params(cache=None).fit_transform(images)
        np.testing.assert_allclose(got, plain, atol=1e-5)
    # The vision stage does not read the prompt: both prompts share its entries.
    before = len(forward_log())
    for prompt in ("What is it?", "Describe the photo."):
        VLMEmbeddingTransformer(
            path, stage="vision", prompt=prompt, cache=store
        ).fit_transform(images)
    assert len(forward_log()) == before + 2
    low = VLMEmbeddingTransformer(path, stage="vision", dtype="bfloat16", cache=store)
    low.fit_transform(images)
    assert len(forward_log()) == before + 4


def test_per_row_prompts_are_part_of_the_key(tmp_path):
    import pandas as pd

    path = make_tiny_llava(tmp_path / "llava")
    image = random_images(1)[0]
    X = pd.DataFrame(
        {"image": [image, image], "prompt": ["What is it?", "Describe it."]}
    )
    vlm = VLMEmbeddingTransformer(path, stage="language", cache=FeatureStore())
    got = vlm.fit_transform(X)
    assert not np.allclose(got[0], got[1])
    plain = VLMEmbeddingTransformer(path, stage="language").fit_transform(X)
    np.testing.assert_allclose(got, plain, atol=1e-5)


def test_clones_share_the_store_object(clip_path):
    store = FeatureStore()
    vlm = VLMEmbeddingTransformer(clip_path, cache=store)
    assert clone(vlm).cache is store


def test_damaged_entry_is_recomputed_with_a_warning(clip_path, tmp_path, forward_log):
    images = random_images(2)
    vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "s").fit(None)
    expected = vlm.transform(images)
    (pack,) = (tmp_path / "s").rglob("*.pack")
    pack.write_bytes(pack.read_bytes()[:-7])  # the second image's entry is cut
    FeatureStore.open(tmp_path / "s").clear_memory_cache()
    with pytest.warns(FeatureStoreWarning, match=f"{pack.name}.*truncated"):
        got = vlm.transform(images)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert len(forward_log()) == 3


def test_float16_store_hits_and_misses_agree(clip_path, tmp_path):
    images = random_images(3)
    store = FeatureStore(tmp_path / "s", dtype="float16")
    vlm = VLMEmbeddingTransformer(clip_path, pooling="mean", cache=store).fit(None)
    first = vlm.transform(images)
    np.testing.assert_array_equal(vlm.transform(images), first)
    plain = VLMEmbeddingTransformer(clip_path, pooling="mean").fit_transform(images)
    np.testing.assert_allclose(first, plain, rtol=2e-3, atol=2e-3)


def test_on_error_nan_with_a_store(clip_path, tmp_path):
    images = random_images(2)
    X = [images[0], str(tmp_path / "missing.png"), images[1]]
    vlm = VLMEmbeddingTransformer(clip_path, on_error="nan", cache=tmp_path / "s")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out = vlm.fit_transform(X)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def test_design_recipe_runs_unchanged(tmp_path, forward_log, monkeypatch):
    """DESIGN.md's user path, on the tiny LLaVA instead of llava-1.5-7b."""
    from sklearn.preprocessing import StandardScaler

    monkeypatch.chdir(tmp_path)
    path = make_tiny_llava(tmp_path / "llava")
    image_paths = []
    for i, image in enumerate(random_images(12, seed=8)):
        image.save(tmp_path / f"{i}.png")
        image_paths.append(str(tmp_path / f"{i}.png"))
    labels = np.arange(12) % 2
    pipe = Pipeline(
        [
            (
                "vlm",
                VLMEmbeddingTransformer(
                    path, stage="language", layer=-1, pooling="last", cache="feats/"
                ),
            ),
            ("scale", StandardScaler()),
            ("probe", LogisticRegression(max_iter=1000)),
        ]
    )
    search = GridSearchCV(
        pipe,
        {"vlm__layer": range(0, 4, 2), "vlm__pooling": ["last", "mean", "image_mean"]},
        cv=3,
    )
    search.fit(image_paths, labels)  # each image goes through the VLM once
    assert sorted(forward_log()) == sorted(image_key(p) for p in image_paths)
    assert len(search.cv_results_["params"]) == 6


def test_an_int_position_is_stored_at_every_layer_in_one_pass(
    clip_path, tmp_path, forward_log
):
    images = random_images(3)
    store = FeatureStore(tmp_path / "s")
    for layer in range(4):
        VLMEmbeddingTransformer(
            clip_path, layer=layer, pooling=-2, cache=store
        ).fit_transform(images)
    assert len(forward_log()) == 3  # one pass per image for the whole grid over layers
    plain = VLMEmbeddingTransformer(clip_path, layer=2, pooling=-2).fit_transform(
        images
    )
    cached = VLMEmbeddingTransformer(clip_path, layer=2, pooling=-2, cache=store)
    np.testing.assert_allclose(cached.fit_transform(images), plain, atol=1e-6)
