"""The extraction path: batches, workers, keys, namespaces, store fills."""

import os
import threading

import numpy as np
import pandas as pd
import pytest

from skvlm import ImageLoadError, VLMEmbeddingTransformer
from skvlm._extraction import Extraction, resolve_workers
from skvlm.models import load_adapter
from skvlm.store import FeatureStore
from skvlm.testing import random_images


def _with_bad_rows(images, bad=(1, 6)):
    items = list(images)
    for i in bad:
        items[i] = b"not an image"
    return items


@pytest.mark.parametrize("n_workers", [0, 1, 3])
def test_results_do_not_depend_on_the_worker_count(clip_path, llava_path, n_workers):
    images = _with_bad_rows(random_images(9, seed=2))
    clip = Extraction(
        load_adapter(clip_path, device="cpu"),
        "vision",
        batch_size=2,
        on_error="nan",
        n_workers=0,
    )
    failed_serial = []
    want = clip.transform(images, None, [0, 2, 3], "mean", failed_serial)
    clip.n_workers = n_workers
    failed = []
    got = clip.transform(images, None, [0, 2, 3], "mean", failed)
    np.testing.assert_array_equal(got, want)
    assert failed == failed_serial == [1, 6]
    assert np.isnan(got[[1, 6]]).all() and not np.isnan(np.delete(got, [1, 6], 0)).any()

    prompts = ["Hi", "What is it?", "Name the digit, please", "a", "b c"] * 2
    llava = Extraction(
        load_adapter(llava_path, device="cpu"), "language", batch_size=3, n_workers=0
    )
    items = random_images(10, seed=3)
    want = llava.transform(items, prompts, [1, 3], "last", [])
    llava.n_workers = n_workers
    np.testing.assert_array_equal(
        llava.transform(items, prompts, [1, 3], "last", []), want
    )


def test_an_unreadable_image_raises_from_a_worker_naming_it(clip_path):
    images = _with_bad_rows(random_images(7, seed=1), bad=(5,))
    ex = Extraction(load_adapter(clip_path, device="cpu"), "vision", batch_size=2)
    ex.n_workers = 2
    with pytest.raises(ImageLoadError, match=r"X\[5\]"):
        ex.transform(images, None, [1], "cls", [])


def test_workers_prepare_ahead_and_stop_with_the_consumer(clip_path):
    ex = Extraction(
        load_adapter(clip_path, device="cpu"), "vision", batch_size=1, n_workers=2
    )
    seen = []
    original = ex.prepare

    def prepare(items, row_prompts, rows, failed):
        seen.append((rows[0], threading.current_thread().name))
        return original(items, row_prompts, rows, failed)

    ex.prepare = prepare
    batches = ex.batches(random_images(8), None, [(1, "cls")], [])
    next(batches)
    batches.close()  # the consumer stops early: no worker is left running
    assert all(name.startswith("skvlm-prepare") for _, name in seen)
    assert len(seen) <= 1 + ex.n_workers + 1  # a bounded prefetch, not all 8
    assert not [t for t in threading.enumerate() if t.name.startswith("skvlm-prepare")]


def test_the_transformer_passes_n_workers_and_checks_it(clip_path):
    images = random_images(5, seed=4)
    a = VLMEmbeddingTransformer(clip_path, batch_size=2, n_workers=0).fit_transform(
        images
    )
    b = VLMEmbeddingTransformer(clip_path, batch_size=2, n_workers=2).fit_transform(
        images
    )
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="n_workers"):
        VLMEmbeddingTransformer(clip_path, n_workers=-1).fit()


def test_resolve_workers():
    assert resolve_workers(0) == 0
    assert resolve_workers("auto", "cpu") == 0
    assert 1 <= resolve_workers("auto", "cuda:0") <= 8 or (os.cpu_count() or 1) == 1
    with pytest.raises(TypeError, match="n_workers must be an int"):
        resolve_workers(1.5)
    with pytest.raises(ValueError, match=">= 0"):
        resolve_workers(-2)


def test_fill_then_serve_computes_each_image_once(clip_path, monkeypatch):
    adapter = load_adapter(clip_path, device="cpu")
    ex = Extraction(adapter, "vision", batch_size=2, n_workers=1)
    images = random_images(5, seed=5)
    calls = []
    extract = adapter.extract
    monkeypatch.setattr(
        adapter, "extract", lambda batch, *a: calls.append(1) or extract(batch, *a)
    )
    store = FeatureStore()
    space, keys, computed, fallback = ex.fill(store, images, None, [], position=-2)
    assert computed == list(range(5)) and not fallback
    n_passes = len(calls)
    # Every named pooling of every layer, and the asked position, is a hit now.
    for layer, pooling in [(0, "cls"), (2, "max"), (3, "pooler"), (1, -2)]:
        want = Extraction(adapter, "vision", n_workers=0).transform(
            images, None, [layer], pooling, []
        )
        got = ex.transform(images, None, [layer], pooling, [], store=store)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert len(calls) == n_passes + 4  # the four references, none for the store
    assert ex.namespace()[0] == space


def test_namespace_follows_the_prompt_where_the_stage_reads_it(llava_path):
    adapter = load_adapter(llava_path, device="cpu")
    lang = [Extraction(adapter, "language", prompt=p) for p in ("What?", "Who?")]
    vision = [Extraction(adapter, "vision", prompt=p) for p in ("What?", "Who?")]
    assert lang[0].namespace()[0] != lang[1].namespace()[0]
    assert vision[0].namespace()[0] == vision[1].namespace()[0]
    assert lang[0].namespace(["a", "b"])[1]["prompt"] == "<per-row>"
    frame = pd.DataFrame({"image": random_images(2), "prompt": ["a", "b"]})
    keys = lang[0].keys(list(frame["image"]), list(frame["prompt"]), [])
    same_image = lang[0].keys(list(frame["image"])[:1] * 2, ["a", "b"], [])
    assert keys[0] == same_image[0] and same_image[0] != same_image[1]


def test_a_stage_the_model_lacks_is_refused(clip_path):
    with pytest.raises(ValueError, match=r"its stages are \['vision', 'projector'\]"):
        Extraction(load_adapter(clip_path, device="cpu"), "language")


# -- a decompression bomb on a dynamic-resolution family (issue 23) -------------------------
@pytest.fixture(scope="module", params=["llava_next", "qwen2_vl"])
def dynamic_path(request, tmp_path_factory):
    """A family whose batches are sorted by image area (dynamic resolution)."""
    from skvlm import testing

    builder = getattr(testing, f"make_tiny_{request.param}")
    return builder(tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("stage", ["vision", "language"])
def test_a_decompression_bomb_goes_through_on_error_when_batches_sort_by_area(
    dynamic_path, tmp_path, monkeypatch, stage
):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(bomb)
    good = random_images(2, seed=4)
    # 10,000 px is over twice the limit: PIL's Image.open raises
    # DecompressionBombError, also from the header read that sorts the batches.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    X = [good[0], str(bomb), good[1]]
    vlm = VLMEmbeddingTransformer(
        dynamic_path, stage=stage, pooling="mean", on_error="nan", device="cpu"
    ).fit(None)
    with pytest.warns(UserWarning, match=r"indices \[1\]"):
        out = vlm.transform(X)
    assert np.isnan(out[1]).all()
    np.testing.assert_array_equal(out[[0, 2]], vlm.transform([good[0], good[1]]))
    vlm.set_params(on_error="raise")
    with pytest.raises(ImageLoadError, match=r"X\[1\].*bomb\.png.*MAX_IMAGE_PIXELS"):
        vlm.transform(X)
