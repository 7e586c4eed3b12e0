"""One model shared by threads: results equal serial ones, and no hook outlives a call.

The registry hands every estimator of a process the same loaded model, and the
extraction path registers forward hooks on it. These tests run the same work
serially and from several threads at once and compare every number.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.testing import random_images

N_THREADS = 4


def _hooks(model):
    """skvlm's hooks left on a model (HF installs output-capturing hooks of its own)."""
    return sum(
        hook.__module__.startswith("skvlm")
        for m in model.modules()
        for hook in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    )


def _run_together(jobs):
    """Run callables at the same moment in threads; return their results in order."""
    barrier = threading.Barrier(len(jobs))

    def start(job):
        barrier.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(start, jobs))


@pytest.mark.parametrize("stage", ["vision", "language"])
def test_one_transformer_called_from_threads_equals_serial(
    clip_path, llava_path, stage
):
    path = clip_path if stage == "vision" else llava_path
    images = random_images(6, seed=3)
    vlm = VLMEmbeddingTransformer(path, stage=stage, layer=[0, 1, -1], batch_size=2)
    expected = vlm.fit(None).transform(images)
    for _ in range(3):
        results = _run_together([lambda: vlm.transform(images)] * N_THREADS)
        for got in results:
            np.testing.assert_array_equal(got, expected)
    model = load_adapter(path, device="cpu").model
    assert _hooks(model) == 0


def test_the_hook_count_sees_skvlm_hooks(clip_path):
    # The check above can fail: during a capture, the hooks are there.
    adapter = load_adapter(clip_path, device="cpu")
    batch = adapter.prepare(random_images(1))
    seen = []
    adapter.capture(batch, "vision", [1], lambda *_: seen.append(_hooks(adapter.model)))
    assert seen == [1]
    assert _hooks(adapter.model) == 0


def test_transformers_at_different_sites_share_the_model(llava_path):
    images = random_images(5, seed=4)
    sites = [(0, "mean"), (1, "last"), (2, "image_mean"), (-1, "text_mean")]
    vlms = [
        VLMEmbeddingTransformer(
            llava_path, stage="language", layer=layer, pooling=pooling, batch_size=2
        ).fit(None)
        for layer, pooling in sites
    ]
    expected = [vlm.transform(images) for vlm in vlms]
    for _ in range(3):
        results = _run_together([lambda v=vlm: v.transform(images) for vlm in vlms])
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_array_equal(got, want)
    assert _hooks(load_adapter(llava_path, device="cpu").model) == 0


def test_threads_at_other_stages_do_not_see_each_others_passes(llava_path):
    # The vision stage stops early inside the tower the language stage also
    # runs: an early exit meant for one thread must never reach the other.
    images = random_images(4, seed=5)
    vision = VLMEmbeddingTransformer(llava_path, stage="vision", layer=0).fit(None)
    language = VLMEmbeddingTransformer(llava_path, stage="language", layer=-1).fit(None)
    want_v, want_l = vision.transform(images), language.transform(images)
    for _ in range(5):
        got = _run_together(
            [lambda: vision.transform(images), lambda: language.transform(images)] * 2
        )
        for g, want in zip(got, [want_v, want_l] * 2, strict=True):
            np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("cache", [False, True])
def test_grid_search_with_threads_equals_serial(clip_path, tmp_path, cache):
    images = random_images(12, seed=6)
    y = np.array([0, 1, 2] * 4)
    pipe = make_pipeline(
        VLMEmbeddingTransformer(
            clip_path, pooling="mean", cache=str(tmp_path / "store") if cache else None
        ),
        LogisticRegression(max_iter=200),
    )
    grid = {
        "vlmembeddingtransformer__layer": [0, 1, 2, 3],
        "vlmembeddingtransformer__pooling": ["mean", "max"],
    }
    serial = GridSearchCV(pipe, grid, cv=3, n_jobs=1).fit(images, y)
    with joblib.parallel_backend("threading", n_jobs=N_THREADS):
        threaded = GridSearchCV(pipe, grid, cv=3, n_jobs=N_THREADS).fit(images, y)
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        np.testing.assert_array_equal(
            threaded.cv_results_[key], serial.cv_results_[key]
        )
    assert _hooks(load_adapter(clip_path, device="cpu").model) == 0


def test_generation_in_a_thread_leaves_other_threads_batches_alone(llava_path):
    # Generation pads on the left, flipping the shared tokenizer's padding side
    # while it runs. Every pooling is masked and LLaVA's positions follow the
    # attention mask, so a transform padded on the left by accident differs only
    # by float rounding (measured: 2.4e-7): compared at 1e-5, not bit for bit.
    from skvlm import VLMGenerativeClassifier

    images = random_images(6, seed=7)
    prompts = ["Hi", "What type of object is in this photo?", "a b c"] * 2
    import pandas as pd

    X = pd.DataFrame({"image": images, "prompt": prompts})
    vlm = VLMEmbeddingTransformer(
        llava_path, stage="language", layer=-1, pooling=0, batch_size=6
    ).fit(None)
    expected = vlm.transform(X)
    clf = VLMGenerativeClassifier(
        llava_path, strategy="open_ended", max_new_tokens=2, batch_size=3
    ).fit(images, np.array(["a", "b", "c"] * 2))
    want_answers = clf.generate(X)
    for _ in range(3):
        got = _run_together([lambda: vlm.transform(X), lambda: clf.generate(X)] * 2)
        np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[2], expected, rtol=1e-5, atol=1e-5)
        assert got[1] == want_answers and got[3] == want_answers
