"""extract_features on a local Ray cluster: 1 vs 2 CPU actors, and the Ray overhead.

A small CLIP (vision hidden 256, 6 layers, 224 px images, patch 32) fills a
fresh FeatureStore with every site of the vision stage for N images, four ways:

- ``local``: ``VLMEmbeddingTransformer.precompute`` in this process, torch on 1
  thread (what one actor gets);
- ``ray x1``: ``extract_features`` with 1 actor (1 CPU);
- ``ray x2``: ``extract_features`` with 2 actors (1 CPU each);
Two figures per run: the wall time of the whole call (Ray's includes starting
the actors and loading the model in each), and the steady throughput, from
the first to the last image run through the model. The latter is read from
the file of a ``skvlm.testing.KeyLog`` callback, which every process running
the model (the Ray actors get the estimator's callbacks) appends to, polled by
a thread here.

Run: python benchmarks/bench_ray.py [--n-images 400] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import torch
from _common import machine


class Watcher:
    """Times when the forward log grows: first and last image through a model."""

    def __init__(self, path):
        self.path, self.stop = path, threading.Event()

    def __enter__(self):
        open(self.path, "w").close()
        self.first = self.last = None
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        size = 0
        while not self.stop.is_set():
            now, new = time.perf_counter(), os.path.getsize(self.path)
            if new > size:
                size, self.last = new, now
                self.first = self.first or now
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.stop.clear()
        with open(self.path) as f:
            self.lines = sum(1 for _ in f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    log = tempfile.mktemp(suffix=".log")
    import ray

    from skvlm import VLMEmbeddingTransformer
    from skvlm.distributed import extract_features
    from skvlm.testing import KeyLog, make_tiny_clip, random_images

    torch.set_num_threads(1)
    root = tempfile.mkdtemp()
    model = str(
        make_tiny_clip(
            f"{root}/clip",
            vision=dict(
                hidden_size=256,
                intermediate_size=1024,
                num_hidden_layers=6,
                num_attention_heads=4,
                image_size=224,
                patch_size=32,
            ),
        )
    )
    paths = []
    for i, image in enumerate(random_images(args.n_images, seed=1)):
        paths.append(f"{root}/img/{i}.png")
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        image.resize((256, 256)).save(paths[-1])
    est = VLMEmbeddingTransformer(
        model, batch_size=args.batch_size, callbacks=[KeyLog(log)]
    )

    print(machine())
    print(f"{args.n_images} images, batch {args.batch_size}, load {os.getloadavg()}")
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"ray.init: {time.perf_counter() - t:.1f} s")

    def local():
        est.set_params(cache=tempfile.mkdtemp(dir=root)).precompute(paths, verbose=0)

    def on_ray(n_actors, items):
        def run():
            result = extract_features(
                est, items, tempfile.mkdtemp(dir=root), num_actors=n_actors
            )
            assert result.n_computed == len(items), result

        return run

    runs = {
        "local (1 thread)": local,
        "ray, 1 actor": on_ray(1, paths),
        "ray, 2 actors": on_ray(2, paths),
    }
    local()  # warm: loads the model in this process
    n = args.n_images
    wall, steady = {}, {}
    for name, fn in runs.items():
        start = time.perf_counter()
        with Watcher(log) as watch:
            fn()
        wall[name] = time.perf_counter() - start
        assert watch.lines == n, (name, watch.lines)
        # The first batch's images appear at once: count the images after it.
        steady[name] = (n - args.batch_size) / (watch.last - watch.first)
        print(
            f"{name:18s} {wall[name]:6.1f} s wall, {n / wall[name]:6.1f} images/s "
            f"overall, {steady[name]:6.1f} images/s steady (load "
            f"{os.getloadavg()[0]:.1f})"
        )
    local, one, two = runs  # the three names, in order
    print()
    print(f"2 actors / 1 actor, steady throughput:  {steady[two] / steady[one]:.2f}")
    print(f"2 actors / 1 actor, whole call:         {wall[one] / wall[two]:.2f}")
    print(f"1 actor / local, steady throughput:     {steady[one] / steady[local]:.2f}")
    print(f"1 actor / local, whole call time:       {wall[one] / wall[local]:.2f}")
    print(
        f"fixed cost of the Ray call (1 actor):   {wall[one] - n / steady[one]:.1f} s"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
