"""Thread stress: 4 threads x R rounds on one shared model; count wrong results and errors.

Every estimator of a process shares one loaded model (the registry). Each call
here is compared bit for bit with the same call made serially first.

Run: python benchmarks/stress_threads.py [ROUNDS]   (default 30)
"""

import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

warnings.simplefilter("ignore")
from skvlm import VLMEmbeddingTransformer
from skvlm.testing import make_tiny_clip, make_tiny_llava, random_images

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
d = tempfile.mkdtemp()
clip, llava = make_tiny_clip(d + "/c"), make_tiny_llava(d + "/l")
images = random_images(6, seed=3)


def run(label, jobs):
    wrong = errors = calls = 0
    kinds = set()
    want = [job() for job in jobs]  # serial reference
    for _ in range(ROUNDS):
        barrier = threading.Barrier(len(jobs))

        def start(job):
            barrier.wait()
            try:
                return job()
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(len(jobs)) as pool:
            got = list(pool.map(start, jobs))
        for g, w in zip(got, want):
            calls += 1
            if isinstance(g, Exception):
                errors += 1
                kinds.add(type(g).__name__ + ": " + str(g)[:70])
            elif not np.array_equal(g, w):
                wrong += 1
    print(
        f"{label}: {calls} calls, {wrong} silently wrong, {errors} errors {sorted(kinds)[:2]}"
    )


one = VLMEmbeddingTransformer(clip, layer=[0, 2, -1], batch_size=2).fit(None)
run("one CLIP transformer from 4 threads", [lambda: one.transform(images)] * 4)
lang = VLMEmbeddingTransformer(
    llava, stage="language", layer=[0, 1, -1], batch_size=2
).fit(None)
run(
    "one LLaVA language transformer from 4 threads",
    [lambda: lang.transform(images)] * 4,
)
sites = [(0, "mean"), (1, "last"), (2, "image_mean"), (-1, "text_mean")]
four = [
    VLMEmbeddingTransformer(
        llava, stage="language", layer=l, pooling=p, batch_size=2
    ).fit(None)
    for l, p in sites
]
run(
    "4 LLaVA transformers at different sites",
    [lambda v=v: v.transform(images) for v in four],
)
