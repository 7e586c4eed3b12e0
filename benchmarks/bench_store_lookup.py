"""Micro-benchmark: what the FeatureStore lookups of a whole GridSearchCV cost.

A ``GridSearchCV`` over 12 layers x 4 poolings with 5-fold CV on 200 images asks
the store, for every candidate (one site) and every fold, for the 160 training
rows and then the 40 test rows: 480 lookups. This script fills a store with
random vectors of the real sizes and replays that sequence of lookups in several
settings, side by side in one run:

- the floor: the same row selections from one in-RAM numpy array per site;
- ``first search``: a new store object on the directory (as in a new process, a
  loky worker or a later session: empty memory cache), float32 and float16;
- ``repeat search``: the same search again on that object (memory cache filled);
- ``no cache``: ``memory_cache_bytes=0``, every lookup reads the disk;
- ``memory store``: the in-memory store.

Two shapes: CLIP ViT-B/32 vision (768 dims per site) and LLaVA-1.5-7B language
(4096 dims per site, 33 layers x 5 poolings kept per image, float16), whose
entries are too large to decode whole, so lookups read single sites.

Run: ``python benchmarks/bench_store_lookup.py``.
"""

import argparse
import os
import platform
import shutil
import tempfile
import time

import numpy as np

from skvlm.store import FeatureStore

N_IMAGES, N_FOLDS = 200, 5
# ENV.md: a ViT-B/32-sized CLIP vision tower runs about 9.5 images/s here.
FORWARD_SECONDS = N_IMAGES / 9.5


def _grid(layers, poolings, stage):
    return [f"{stage}/l{layer}/{p}" for layer in layers for p in poolings]


def _fill(store, namespace, keys, stored_sites, dim, batch=16):
    rng = np.random.default_rng(0)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        vectors = {
            s: rng.normal(size=(len(chunk), dim)).astype(np.float32)
            for s in stored_sites
        }
        store.write(namespace, chunk, vectors)
    return time.perf_counter() - start, time.process_time() - cpu


def _folds(n):
    order = np.random.default_rng(1).permutation(n)
    for test in np.array_split(order, N_FOLDS):
        yield np.setdiff1d(order, test), test


def _search(lookup, keys, grid):
    """Replay the search's lookups: (wall seconds, CPU seconds), n lookups."""
    start, cpu = time.perf_counter(), time.process_time()
    n = 0
    for site in grid:
        for train, test in _folds(len(keys)):
            for rows in (train, test):
                vectors, hit = lookup([keys[i] for i in rows], [site])
                assert hit.all()
                n += 1
    return (time.perf_counter() - start, time.process_time() - cpu), n


def _floor(keys, grid, dim):
    arrays = {s: np.ones((len(keys), dim), np.float32) for s in grid}
    index = {k: i for i, k in enumerate(keys)}

    def lookup(ks, sites):
        rows = [index[k] for k in ks]
        return {s: arrays[s][rows] for s in sites}, np.ones(len(ks), bool)

    return lookup


def run_shape(name, dim, stored_sites, grid, root, n_images, dtype):
    keys = [f"{i:064x}" for i in range(n_images)]
    ns = "0" * 64
    print(
        f"\n== {name}: {n_images} images, {len(stored_sites)} sites x {dim} "
        f"dims stored ({dtype}), grid of {len(grid)} sites x {N_FOLDS} folds"
    )
    path = os.path.join(root, name)
    store = FeatureStore(path, dtype=dtype)
    fill_s, fill_cpu = _fill(store, ns, keys, stored_sites, dim)
    info = store.info()
    print(
        f"fill: {fill_s:.2f} s wall, {fill_cpu:.2f} s CPU "
        f"({n_images / fill_s:.0f} entries/s), "
        f"{info['bytes'] / n_images / 1e6:.2f} MB per image on disk"
    )
    floor_s, n = _search(_floor(keys, grid, dim), keys, grid)
    rows = [("numpy floor", floor_s, "")]
    # A new object has an empty memory cache, like a new process: its first
    # search reads every entry once; repeating the search reads nothing.
    fresh = FeatureStore(path, dtype=dtype)
    for label in ("first search", "repeat search"):
        seconds, _ = _search(lambda k, st: fresh.lookup(ns, k, st), keys, grid)
        rows.append((label, seconds, ""))
    # Every lookup reads the disk here: time 4 grid points, scale to the grid.
    nocache = FeatureStore(path, dtype=dtype, memory_cache_bytes=0)
    seconds, _ = _search(lambda k, st: nocache.lookup(ns, k, st), keys, grid[:4])
    scaled = tuple(t * len(grid) / 4 for t in seconds)
    rows.append(("no cache", scaled, " (from 4 grid points)"))
    for label, (wall, cpu), note in rows:
        print(
            f"{label:>20}: {wall * 1e3:8.1f} ms wall, {cpu * 1e3:8.1f} ms CPU for "
            f"{n} lookups ({wall / n * 1e6:6.0f} us each), x{wall / floor_s[0]:6.1f} "
            f"the floor, {wall / FORWARD_SECONDS:.2%} of one forward pass{note}"
        )
    shutil.rmtree(path)
    return rows


def run_memory(dim, stored_sites, grid, n_images):
    keys = [f"{i:064x}" for i in range(n_images)]
    store = FeatureStore()
    _fill(store, "ns", keys, stored_sites, dim)
    (wall, cpu), n = _search(lambda k, st: store.lookup("ns", k, st), keys, grid)
    print(
        f"{'memory store':>20}: {wall * 1e3:8.1f} ms wall, {cpu * 1e3:8.1f} ms CPU "
        f"for {n} lookups ({wall / n * 1e6:6.0f} us each)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llava-images", type=int, default=N_IMAGES)
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    print(
        f"one forward pass over {N_IMAGES} images taken as {FORWARD_SECONDS:.0f} s "
        "(ENV.md: ViT-B/32 vision tower, 9.5 images/s on this CPU)"
    )
    root = tempfile.mkdtemp(prefix="bench-store-")
    try:
        # Four poolings of 768 dims at each of the 13 vision layers (the fourth,
        # an int position, stands for any other pooling of the same size).
        poolings = ["cls", "mean", "max", "1"]
        clip_stored = _grid(range(13), poolings, "vision")
        clip_grid = _grid(range(1, 13), poolings, "vision")
        for dtype in ("float32", "float16"):
            run_shape(
                f"clip-b32-{dtype}", 768, clip_stored, clip_grid, root, N_IMAGES, dtype
            )
        run_memory(768, clip_stored, clip_grid, N_IMAGES)
        llava_stored = _grid(
            range(33), ["last", "mean", "max", "image_mean", "text_mean"], "language"
        )
        llava_grid = _grid(
            range(0, 33, 3)[:12],
            ["last", "mean", "image_mean", "text_mean"],
            "language",
        )
        run_shape(
            "llava-7b-float16",
            4096,
            llava_stored,
            llava_grid,
            root,
            args.llava_images,
            "float16",
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
