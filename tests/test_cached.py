"""The store behind VLMEmbeddingTransformer: one forward pass per image, keys that can't lie."""

import os
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skvlm import (
    FeatureStore,
    FeatureStoreError,
    FeatureStoreWarning,
    VLMEmbeddingTransformer,
)
from skvlm._inputs import image_key
from skvlm.testing import make_tiny_clip, random_images


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
    logged = forward_log.read()
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
    assert len(forward_log.read()) == 4
    for pooling in ("cls", "mean", "max", "pooler"):
        VLMEmbeddingTransformer(
            clip_path, layer=-1, pooling=pooling, cache=str(tmp_path / "s")
        ).fit_transform(images)
    assert len(forward_log.read()) == 4


def test_precompute_fills_the_store(clip_path, tmp_path, forward_log):
    images = random_images(5)
    vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "s").precompute(images)
    assert len(forward_log.read()) == 5
    assert (
        vlm.cache is not None
        and FeatureStore.open(tmp_path / "s").info()["entries"] == 5
    )
    vlm.set_params(layer=1, pooling="max").fit(None).transform(images)
    assert len(forward_log.read()) == 5
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
    assert len(forward_log.read()) == 1
    edited = np.asarray(image).copy()
    edited[:10] = 0
    from PIL import Image

    Image.fromarray(edited).save(b)
    changed = vlm.transform([b])
    assert len(forward_log.read()) == 2
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


def test_other_prompt_or_dtype_never_share_entries(tmp_path, forward_log, llava_path):
    path = llava_path
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
    before = len(forward_log.read())
    for prompt in ("What is it?", "Describe the photo."):
        VLMEmbeddingTransformer(
            path, stage="vision", prompt=prompt, cache=store
        ).fit_transform(images)
    assert len(forward_log.read()) == before + 2
    low = VLMEmbeddingTransformer(path, stage="vision", dtype="bfloat16", cache=store)
    low.fit_transform(images)
    assert len(forward_log.read()) == before + 4


def test_per_row_prompts_are_part_of_the_key(llava_path):
    import pandas as pd

    path = llava_path
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
    assert len(forward_log.read()) == 3


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


def test_design_recipe_runs_unchanged(tmp_path, forward_log, monkeypatch, llava_path):
    """DESIGN.md's user path, on the tiny LLaVA instead of llava-1.5-7b."""
    from sklearn.preprocessing import StandardScaler

    monkeypatch.chdir(tmp_path)
    path = llava_path
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
    assert sorted(forward_log.read()) == sorted(image_key(p) for p in image_paths)
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
    assert (
        len(forward_log.read()) == 3
    )  # one pass per image for the whole grid over layers
    plain = VLMEmbeddingTransformer(clip_path, layer=2, pooling=-2).fit_transform(
        images
    )
    cached = VLMEmbeddingTransformer(clip_path, layer=2, pooling=-2, cache=store)
    np.testing.assert_allclose(cached.fit_transform(images), plain, atol=1e-6)


# -- what a pass keeps (issue 14 item 2) ------------------------------------------


def _stored_sites(path):
    (ns,) = FeatureStore(path).info()["namespaces"].values()
    return ns["sites"]


def test_keep_requested_stores_only_the_asked_sites(clip_path, tmp_path, forward_log):
    images = random_images(3)
    store = FeatureStore(tmp_path / "s", keep="requested")
    vlm = VLMEmbeddingTransformer(clip_path, layer=1, pooling="mean", cache=store)
    vlm.fit_transform(images)
    assert _stored_sites(tmp_path / "s") == ["vision/l1/mean"]
    assert len(forward_log.read()) == 3
    # A site that was not kept is a miss that computes it, never a wrong vector.
    other = clone(vlm).set_params(layer=2, pooling="max")
    plain = clone(other).set_params(cache=None).fit_transform(images)
    np.testing.assert_allclose(other.fit_transform(images), plain, atol=1e-6)
    assert len(forward_log.read()) == 3 + 3 + 3  # first fill, plain, the miss
    assert _stored_sites(tmp_path / "s") == ["vision/l1/mean", "vision/l2/max"]
    np.testing.assert_allclose(other.transform(images), plain, atol=1e-6)
    assert len(forward_log.read()) == 9


def test_keep_layers_and_poolings(clip_path, tmp_path, forward_log):
    images = random_images(2)
    store = FeatureStore(
        tmp_path / "s", keep={"layers": [0, -1], "poolings": ["cls", "mean"]}
    )
    VLMEmbeddingTransformer(
        clip_path, layer=2, pooling="max", cache=store
    ).fit_transform(images)
    assert _stored_sites(tmp_path / "s") == [
        "vision/l0/cls",
        "vision/l0/mean",
        "vision/l2/max",
        "vision/l3/cls",
        "vision/l3/mean",
    ]
    for layer, pooling in ((0, "mean"), (-1, "cls"), (2, "max")):
        cached = VLMEmbeddingTransformer(
            clip_path, layer=layer, pooling=pooling, cache=store
        ).fit_transform(images)
        plain = VLMEmbeddingTransformer(
            clip_path, layer=layer, pooling=pooling
        ).fit_transform(images)
        np.testing.assert_allclose(cached, plain, atol=1e-6)
    assert len(forward_log.read()) == 2 + 3 * 2  # the plain checks ran 3 passes each


def test_auto_keeps_the_asked_pooling_at_every_layer_for_large_passes(
    clip_path, tmp_path, forward_log, monkeypatch
):
    from skvlm.store import _keep

    images = random_images(2)
    # The tiny CLIP's 13 sites x 32 floats stand in for a 7B language stage.
    monkeypatch.setattr(_keep, "AUTO_BYTES_PER_IMAGE", 1000)
    store = FeatureStore(tmp_path / "s")
    VLMEmbeddingTransformer(clip_path, layer=1, pooling="mean", cache=store).fit(
        None
    ).transform(images)
    assert _stored_sites(tmp_path / "s") == [f"vision/l{i}/mean" for i in range(4)]
    for layer in range(4):  # a grid over layers at that pooling: no pass
        VLMEmbeddingTransformer(
            clip_path, layer=layer, pooling="mean", cache=store
        ).fit_transform(images)
    assert len(forward_log.read()) == 2
    VLMEmbeddingTransformer(clip_path, layer=1, pooling="cls", cache=store).fit(
        None
    ).transform(images)
    assert len(forward_log.read()) == 4  # another pooling: one more pass


def test_a_fill_shows_its_estimate_and_writes_about_that(clip_path, tmp_path, capsys):
    images = random_images(6)
    vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "s", verbose=1)
    vlm.fit(None).precompute(images)
    err = capsys.readouterr().err
    assert "skvlm store fill: " in err and "6 images x 13 sites x 32 float32" in err
    estimate = FeatureStore(tmp_path / "s").plan([], [], 32)  # for its arithmetic
    per_image = 13 * (32 * 4 + 100) + 200
    assert f"({per_image / 1000:.3g} kB per image" in err
    written = FeatureStore(tmp_path / "s").info()["bytes"]
    assert abs(written - 6 * per_image) < 0.15 * written  # the estimate is honest
    assert estimate.bytes_per_image == 0


def test_a_fill_past_max_bytes_is_refused_before_the_model_runs(
    clip_path, tmp_path, forward_log
):
    images = random_images(4)
    store = FeatureStore(tmp_path / "s", max_bytes=5_000)
    vlm = VLMEmbeddingTransformer(clip_path, layer=1, pooling="mean", cache=store)
    with pytest.raises(FeatureStoreError) as excinfo:
        vlm.fit_transform(images)
    message = str(excinfo.value)
    assert "max_bytes=5000" in message and "4 images x 13 sites" in message
    assert "keep='requested' 1.71 kB" in message  # 4 x (32 x 4 + 100 + 200)
    assert "keep={'poolings': ['mean']} (the asked pooling at every layer) 4.45 kB" in (
        message  # 4 x (4 x (32 x 4 + 100) + 200)
    )
    assert forward_log.read() == []  # refused before any forward pass
    small = FeatureStore(tmp_path / "s", max_bytes=5_000, keep="requested")
    got = clone(vlm).set_params(cache=small).fit_transform(images)
    plain = clone(vlm).set_params(cache=None).fit_transform(images)
    np.testing.assert_allclose(got, plain, atol=1e-6)


# -- a cache that cannot work fails at fit (issue 15 item 4) -------------------------


def test_a_bad_cache_fails_at_fit(clip_path, tmp_path):
    (tmp_path / "file").write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    for cache, match in ((tmp_path / "file", "is a file"), (foreign, "not a skvlm")):
        with pytest.raises(FeatureStoreError, match=match):
            VLMEmbeddingTransformer(clip_path, cache=cache).fit(None)
    store = tmp_path / "s"
    VLMEmbeddingTransformer(clip_path, cache=store).fit_transform(random_images(2))
    (pack,) = store.rglob("*.pack")
    pack.unlink()
    pack.mkdir()  # an entry replaced by a directory
    FeatureStore.open(store).clear_memory_cache()
    with pytest.raises(FeatureStoreError, match=f"{pack.name}' is a directory"):
        VLMEmbeddingTransformer(clip_path, cache=store).fit(None)


def test_a_read_only_store_serves_and_computes_misses(clip_path, tmp_path, monkeypatch):
    from test_store import _deny_writes_under

    images = random_images(3)
    store = FeatureStore(tmp_path / "s")
    vlm = VLMEmbeddingTransformer(clip_path, cache=store).fit(None)
    first = vlm.transform(images[:2])
    _deny_writes_under(monkeypatch, tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(vlm.transform(images[:2]), first)  # hits
    with pytest.warns(FeatureStoreWarning, match="cannot be written") as record:
        got = vlm.transform(images)  # a miss: computed, not stored
        again = vlm.transform(images)
    assert len(record) == 1
    plain = VLMEmbeddingTransformer(clip_path).fit_transform(images)
    np.testing.assert_allclose(got, plain, atol=1e-6)
    np.testing.assert_allclose(again, plain, atol=1e-6)
    parent = tmp_path / "locked"
    parent.mkdir()
    _deny_writes_under(monkeypatch, parent)
    with pytest.raises(FeatureStoreError, match="cannot be created"):
        VLMEmbeddingTransformer(clip_path, cache=parent / "s").fit(None)


def test_probe_layers_runs_once_per_stage_whatever_the_size(
    clip_path, tmp_path, forward_log, monkeypatch
):
    from skvlm.probing import probe_layers
    from skvlm.store import _keep

    # As for a 7B language stage, the default keep would not keep every site.
    monkeypatch.setattr(_keep, "AUTO_BYTES_PER_IMAGE", 1000)
    images = random_images(6)
    y = np.arange(6) % 2
    for cache in (None, tmp_path / "s"):
        probe_layers(
            VLMEmbeddingTransformer(clip_path, cache=cache),
            images,
            y,
            stages="vision",
            layers=[0, -1],
            poolings=["cls", "mean"],
            cv=2,
        )
    assert len(forward_log.read()) == 6 * 2  # one pass per image, for each call
