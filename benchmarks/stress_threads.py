"""Thread stress: 4 threads x R rounds on one shared model; count wrong results and errors.

Every estimator of a process shares one loaded model (the registry). Each call
here is compared bit for bit with the same call made serially first. Figures:
docs/benchmarks/threads.rst.

Run: python benchmarks/stress_threads.py [ROUNDS]   (default 30)
"""

from __future__ import annotations

import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from skvlm import VLMEmbeddingTransformer
from skvlm.testing import make_tiny_clip, make_tiny_llava, random_images


def _at_once(jobs):
    """Start the callables together in threads; their results or exceptions, in order."""
    barrier = threading.Barrier(len(jobs))

    def start(job):
        barrier.wait()
        try:
            return job()
        except Exception as exc:  # counted, not raised: the point is to count
            return exc

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(start, jobs))


def stress(label, jobs, rounds):
    want = [job() for job in jobs]  # the serial reference
    wrong = errors = calls = 0
    kinds = set()
    for _ in range(rounds):
        for got, expected in zip(_at_once(jobs), want, strict=True):
            calls += 1
            if isinstance(got, Exception):
                errors += 1
                kinds.add(f"{type(got).__name__}: {str(got)[:70]}")
            elif not np.array_equal(got, expected):
                wrong += 1
    print(
        f"{label}: {calls} calls, {wrong} silently wrong, {errors} errors "
        f"{sorted(kinds)[:2]}"
    )


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    warnings.simplefilter("ignore")
    folder = tempfile.mkdtemp()
    clip = make_tiny_clip(folder + "/clip")
    llava = make_tiny_llava(folder + "/llava")
    images = random_images(6, seed=3)

    one = VLMEmbeddingTransformer(clip, layer=[0, 2, -1], batch_size=2).fit(None)
    stress(
        "one CLIP transformer from 4 threads",
        [lambda: one.transform(images)] * 4,
        rounds,
    )
    lang = VLMEmbeddingTransformer(
        llava, stage="language", layer=[0, 1, -1], batch_size=2
    ).fit(None)
    stress(
        "one LLaVA language transformer from 4 threads",
        [lambda: lang.transform(images)] * 4,
        rounds,
    )
    sites = [(0, "mean"), (1, "last"), (2, "image_mean"), (-1, "text_mean")]
    four = [
        VLMEmbeddingTransformer(
            llava, stage="language", layer=layer, pooling=pooling, batch_size=2
        ).fit(None)
        for layer, pooling in sites
    ]
    stress(
        "4 LLaVA transformers at different sites",
        [lambda v=v: v.transform(images) for v in four],
        rounds,
    )


if __name__ == "__main__":
    main()
