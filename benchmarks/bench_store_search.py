"""A whole GridSearchCV over layers x poolings with a FeatureStore vs one transform.

A ViT-B/32-sized CLIP (random weights) and 200 digit images rendered at 224x224
(saved as PNG files, passed as paths), ``GridSearchCV(Pipeline([vlm,
LogisticRegression(max_iter=200)]), {layer: 1..12, pooling: 4 poolings}, cv=5)``.
Side by side in one run, with one BLAS thread and one scikit-learn OpenMP thread
for the probes (torch keeps its threads):

- ``one transform``: one plain ``transform`` of the 200 images at the last
  layer (no store), timed before, between and after the other settings, since
  the machine is shared;
- ``store48``: poolings ``cls``, ``mean``, ``max`` and the int position ``-1``
  (last patch token). Only ``cls``, ``mean`` and ``max`` exist at every layer
  (``pooler`` only at the last), and the store keeps every *named* pooling on
  the first pass but an int position only at the layers the estimator asked,
  so the store is warmed first with ``precompute`` at
  ``layer=list(range(13)), pooling=-1`` (one pass that keeps every named
  pooling and position -1 at every layer); the time counts the warm-up and the
  search, split into forward pass, keys, lookups and probe fits;
- ``probe``: the probe's CPU cost per fit and lbfgs iterations, alone on the
  stored features, with and without a StandardScaler;
- ``no store`` and ``joblib.Memory`` (``Pipeline(memory=...)``, first search
  and the same search again): too long to run in full, so 2 candidates (layers
  1 and 12, ``mean``) on the first fold are run and the full search
  extrapolated, assuming the cost per candidate grows linearly with the layer
  (without a store the transform stops at the requested layer);
- ``store37`` (``--with-cold``): no warm-up, 12 layers x {cls, mean, max} plus
  ``pooler`` at layer 12 (37 candidates), the plain recipe of the user guide.

- ``probe_layers48`` (``--probe-layers``): the same 48 sites and 5 folds
  through ``probe_layers``, whose default probe (``LinearProbeCV`` with
  ``C=1``: per fold a StandardScaler and a logistic regression) fits the 5
  folds of a site as one batched problem; no refit (a report, not an
  estimator). The time counts the forward pass (one per image, the store's
  warm-up included) and every probe. ``--probe-layers-only`` runs it between
  two plain transforms and nothing else.

``--probe NearestCentroid`` swaps in a near-free probe, so the search measures
everything but the probe; ``--short`` runs only the 48-candidate search between
two plain transforms. Each image run through the model appends a line to the
file of a ``skvlm.testing.KeyLog`` callback; the script counts them per setting (a store search must log
exactly 200). Results print as each setting ends.

Run (from benchmarks/): python bench_store_search.py [--short] [--with-cold]
[--probe-layers | --probe-layers-only] [--probe NearestCentroid] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import traceback
import warnings
from collections import defaultdict

import numpy as np
from _common import clip_tower as build_clip_b32
from _common import machine
from joblib import Memory
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController, threadpool_limits

import skvlm._extraction as extraction
import skvlm.store._serving as serving
from skvlm import VLMEmbeddingTransformer
from skvlm._inputs import image_key
from skvlm.datasets import load_digit_images

LAYERS = range(1, 13)
PROBE_LAYERS = (1, 4, 8, 12)
N_FOLDS = 5


def make_images(n_images, folder):
    """``n_images`` digits at 224x224 as PNG files (paths) with their labels."""
    n_per_class = n_images // 10
    images, y = load_digit_images(
        size=224, n_per_class=n_per_class, variation=0.5, return_X_y=True
    )
    paths = []
    for i, image in enumerate(images):
        paths.append(os.path.join(folder, f"{i:04d}.png"))
        image.save(paths[-1])
    return paths, np.asarray(y), images


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


@contextlib.contextmanager
def forward_log():
    """Yield a callable counting the images run through a model meanwhile.

    A ``skvlm.testing.KeyLog`` callback becomes the default ``callbacks`` of
    every ``VLMEmbeddingTransformer`` built in the block (those of
    ``probe_layers`` and of grid-search clones included); its file's lines
    are the forward passes.
    """
    from skvlm import VLMEmbeddingTransformer
    from skvlm.testing import KeyLog

    log = KeyLog(tempfile.mktemp(suffix=".log"))
    defaults = VLMEmbeddingTransformer.__init__.__kwdefaults__
    old = dict(defaults)
    defaults["callbacks"] = [log]
    try:
        yield lambda: len(log.read())
    finally:
        defaults.clear()
        defaults.update(old)


@contextlib.contextmanager
def instrumented(probe_class):
    """Accumulate the wall and CPU time of the store's parts and of the probe.

    Wraps the extraction path (``skvlm._extraction``: forward passes on misses, key
    hashing, the transform and fill entry points) and the probe class's ``fit``
    and ``score``; a few hundred calls, so the timers cost nothing measurable.
    """
    spent, rows, iters = defaultdict(float), defaultdict(int), []
    patches = [
        (extraction.Extraction, "transform"),
        (extraction.Extraction, "fill"),
        (extraction, "compute_missing"),  # Extraction.fill's reference
        (serving, "compute_missing"),  # and serve's, in the store package
        (extraction.Extraction, "keys"),
        (probe_class, "fit"),
        (probe_class, "score"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patches]

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
                spent[name + "/cpu"] += time.process_time() - cpu
                if name == "keys":
                    rows[name] += len(args[1])  # (self, items, ...)
                elif name == "fit":
                    rows["fits"] += 1
                    if hasattr(args[0], "n_iter_"):
                        iters.append(int(np.max(args[0].n_iter_)))

        return wrapper

    for owner, name, fn in originals:
        setattr(owner, name, timed(name, fn))
    try:
        yield spent, rows, iters
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def pipeline(path, args, *, cache=None, memory=None):
    vlm = VLMEmbeddingTransformer(path, cache=cache, batch_size=args.batch_size)
    probe = PROBES[args.probe](args)
    if args.scale:  # the user guide's recipe: standardised features converge faster
        steps = [("vlm", vlm), ("scale", StandardScaler()), ("clf", probe)]
    else:
        steps = [("vlm", vlm), ("clf", probe)]
    return Pipeline(steps, memory=memory)


PROBES = {
    "LogisticRegression": lambda args: LogisticRegression(max_iter=args.max_iter),
    # A near-free classifier: the search then measures everything but the probe.
    "NearestCentroid": lambda args: NearestCentroid(),
}


def one_transform(path, paths, args):
    with forward_log() as count, Clock() as clock:
        vlm = VLMEmbeddingTransformer(
            path, layer=-1, pooling="cls", batch_size=args.batch_size
        )
        vlm.fit(None).transform(paths)
    return clock, count()


def store_search(path, paths, y, args, *, warm_position):
    """A store search; with ``warm_position``, 48 candidates after a warm-up."""
    cache = tempfile.mkdtemp(prefix="store-")
    if warm_position is None:
        grid = [
            {"vlm__layer": list(LAYERS), "vlm__pooling": ["cls", "mean", "max"]},
            {"vlm__layer": [LAYERS[-1]], "vlm__pooling": ["pooler"]},
        ]
    else:
        grid = {
            "vlm__layer": list(LAYERS),
            "vlm__pooling": ["cls", "mean", "max", warm_position],
        }
    probe_class = type(PROBES[args.probe](args))
    with (
        forward_log() as count,
        instrumented(probe_class) as (spent, rows, iters),
        Clock() as clock,
    ):
        # Built inside the block, so that it gets the counting callback.
        search = GridSearchCV(pipeline(path, args, cache=cache), grid, cv=N_FOLDS)
        if warm_position is not None:
            VLMEmbeddingTransformer(
                path,
                layer=list(range(LAYERS[-1] + 1)),
                pooling=warm_position,
                cache=cache,
                batch_size=args.batch_size,
            ).precompute(paths, verbose=0)
        search.fit(paths, y)
    n_candidates = len(search.cv_results_["params"])
    rows["n_iter"] = iters
    return (
        clock,
        count(),
        dict(spent),
        dict(rows),
        n_candidates,
        search.best_params_,
        cache,
    )


def probe_layers_search(path, paths, y, args):
    """probe_layers over the 48 sites of ``store48``, batched probes, 5 folds."""
    from skvlm.probing import probe_layers

    cache = tempfile.mkdtemp(prefix="store-")
    with forward_log() as count, Clock() as clock:
        # Built inside the block, so that it gets the counting callback.
        vlm = VLMEmbeddingTransformer(path, cache=cache, batch_size=args.batch_size)
        report = probe_layers(
            vlm,
            paths,
            y,
            stages="vision",
            layers=list(LAYERS),
            poolings=["cls", "mean", "max", -1],
            cv=StratifiedKFold(N_FOLDS),
        )
    extract = report.meta["extract_time"]
    return clock, count(), extract, report


def report_probe_layers(args, n, baselines, result, brief=False):
    clock, lines, extract, report = result
    base_wall, base_cpu = _base(baselines)
    status = "OK" if lines == n else "MISMATCH"
    say(
        f"  probe_layers, {len(report.results)} sites x {N_FOLDS} folds (batched "
        f"LinearProbeCV): wall {clock.wall:.1f} s = {clock.wall / base_wall:.2f}x one "
        f"transform (target <= 1.3x); CPU {clock.cpu:.1f} s = "
        f"{clock.cpu / base_cpu:.2f}x; forward lines {lines} (expected {n}: {status})"
    )
    if brief:
        return
    say(
        f"    forward pass and store reads {extract:.1f} s, probes "
        f"{clock.wall - extract:.1f} s wall; best {report.best_params_} "
        f"{report.best_['mean_test_score']:.3f}"
    )


def subset_search(path, paths, y, args, memory=None, repeat=False):
    """Candidates layers 1 and 12 (``mean``) on the first ``args.subset_folds`` folds.

    Returns the clock, the forward lines, and the measured cost of one
    (candidate, fold) at layer 1 and at layer 12 (fit + score, seconds).
    """
    folds = list(StratifiedKFold(N_FOLDS).split(paths, y))[: args.subset_folds]
    grid = {"vlm__layer": [LAYERS[0], LAYERS[-1]], "vlm__pooling": ["mean"]}
    with forward_log() as count, Clock() as clock:
        # Built inside the block, so that it gets the counting callback.
        search = GridSearchCV(
            pipeline(path, args, memory=memory), grid, cv=folds, refit=False
        )
        search.fit(paths, y)
    res = search.cv_results_
    per = res["mean_fit_time"] + res["mean_score_time"]
    return clock, count(), per[0], per[1]


def probe_costs(path, paths, y, args, cache):
    """CPU seconds and lbfgs iterations of the probe fits, from the stored features.

    Layers 1, 4, 8 and 12 x ``mean`` x 5 folds, the probe alone and after a
    StandardScaler.
    """
    folds = list(StratifiedKFold(N_FOLDS).split(paths, y))
    out = {}
    with forward_log() as count:
        features = [
            VLMEmbeddingTransformer(path, layer=layer, pooling="mean", cache=cache)
            .fit(None)
            .transform(paths)
            for layer in PROBE_LAYERS
        ]
    for name, make in (
        ("LogisticRegression", lambda: LogisticRegression(max_iter=args.max_iter)),
        (
            "StandardScaler + LogisticRegression",
            lambda: Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("clf", LogisticRegression(max_iter=args.max_iter)),
                ]
            ),
        ),
    ):
        cpu, iters, scores = 0.0, [], []
        for F in features:
            for train, test in folds:
                with Clock() as clock:
                    model = make().fit(F[train], y[train])
                    scores.append(model.score(F[test], y[test]))
                cpu += clock.cpu
                clf = model[-1] if hasattr(model, "steps") else model
                iters.append(int(np.max(clf.n_iter_)))
        out[name] = (cpu / len(iters), iters, float(np.mean(scores)))
    out["forward lines"] = count()
    return out


def extrapolate(c_first, c_last, n_poolings=4):
    """Full search seconds: costs linear in the layer, 12 layers x poolings x folds."""
    mean_layer = (c_first + c_last) / 2
    return n_poolings * N_FOLDS * len(LAYERS) * mean_layer + mean_layer  # + refit


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--subset-folds", type=int, default=1)
    parser.add_argument(
        "--with-cold", action="store_true", help="also the cold 37-candidate search"
    )
    parser.add_argument("--model-dir", help="reuse a model built by an earlier run")
    parser.add_argument("--probe", choices=sorted(PROBES), default="LogisticRegression")
    parser.add_argument(
        "--scale", action="store_true", help="StandardScaler before the probe"
    )
    parser.add_argument(
        "--probe-layers",
        action="store_true",
        help="also the 48 sites through probe_layers (batched probes)",
    )
    parser.add_argument(
        "--probe-layers-only",
        action="store_true",
        help="only probe_layers over the 48 sites, between two plain transforms",
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="only the 48-candidate store search between two plain transforms",
    )
    args = parser.parse_args()
    # ConvergenceWarning of the probes on features of random weights
    warnings.simplefilter("ignore")
    say(f"machine: {machine()}")
    say(f"load average at start: {os.getloadavg()[0]:.1f}")

    tmp = tempfile.mkdtemp()
    path = args.model_dir
    if path is None:
        with Clock() as clock:
            path = build_clip_b32(os.path.join(tmp, "clip"))
        say(f"built the ViT-B/32-sized CLIP in {clock.wall:.1f} s at {path}")
    os.makedirs(os.path.join(tmp, "images"))
    paths, y, pil_images = make_images(args.n_images, os.path.join(tmp, "images"))
    # Load the model once: every setting then finds it in the process's registry.
    VLMEmbeddingTransformer(path).fit(None).transform(paths[:2])
    say(
        f"CLIP ViT-B/32 vision tower (random weights), {len(paths)} digit images "
        f"224x224 as PNG paths, batch {args.batch_size}, {N_FOLDS}-fold CV, "
        f"{'StandardScaler, ' if args.scale else ''}"
        f"{args.probe} (max_iter={args.max_iter}), single-threaded BLAS"
    )

    memory = Memory(tempfile.mkdtemp(prefix="joblib-"), verbose=0)
    steps = [
        ("one transform", lambda: one_transform(path, paths, args)),
        ("store48", lambda: store_search(path, paths, y, args, warm_position=-1)),
        ("one transform", lambda: one_transform(path, paths, args)),
        ("probe", lambda: probe_costs(path, paths, y, args, results["store48"][-1])),
        ("nostore", lambda: subset_search(path, paths, y, args)),
        ("memory_cold", lambda: subset_search(path, paths, y, args, memory=memory)),
        ("memory_warm", lambda: subset_search(path, paths, y, args, memory=memory)),
        ("one transform", lambda: one_transform(path, paths, args)),
    ]
    if args.short:
        steps = steps[:3]
    probe_step = (
        "probe_layers48",
        lambda: probe_layers_search(path, paths, y, args),
    )
    if args.probe_layers_only:  # the search between transforms, then again
        steps = [steps[0], probe_step, steps[2], probe_step, steps[2]]
    elif args.probe_layers:
        steps.insert(2, probe_step)
    if args.with_cold:
        steps.insert(
            2,
            ("store37", lambda: store_search(path, paths, y, args, warm_position=None)),
        )
    results, baselines = {}, []
    with threadpool_limits(limits=1, user_api="blas"), sklearn_openmp(1):
        for name, step in steps:
            say(f"[{time.strftime('%H:%M:%S')}] {name}, load {os.getloadavg()[0]:.1f}")
            try:  # report what was measured even if one setting fails
                out = step()
                if name == "one transform":
                    baselines.append(out)
                    report_baselines(baselines)
                else:
                    results[name] = out
                    REPORTS[name](args, len(paths), baselines, out)
            except Exception:
                traceback.print_exc()

    with Clock() as key_clock:
        for image in pil_images:
            image_key(image)
    key_seconds = key_clock.wall / len(paths)
    n_keyed = results["store48"][3].get("keys", 0) if "store48" in results else 0
    say(
        f"in-memory PIL images instead of paths: {1e3 * key_seconds:.2f} ms per pixel "
        f"hash; the 48-candidate search hashes {n_keyed} rows = "
        f"{n_keyed * key_seconds:.1f} s more (paths: memoised by file stat)"
    )
    say("summary against the mean of all one-transform runs:")
    report_baselines(baselines)
    for name in (
        "store48",
        "probe_layers48",
        "store37",
        "nostore",
        "memory_cold",
        "memory_warm",
    ):
        if name in results:
            REPORTS[name](args, len(paths), baselines, results[name], brief=True)
    say(f"load average at end: {os.getloadavg()[0]:.1f}")


def sklearn_openmp(n_threads):
    """Limit scikit-learn's own OpenMP pool (not torch's, a separate libgomp).

    On a loaded machine its spinning threads made a NearestCentroid fit + score
    5x costlier in CPU time; torch keeps its threads for the forward passes.
    """
    controller = ThreadpoolController()
    ours = [
        c.filepath for c in controller.lib_controllers if "scikit_learn" in c.filepath
    ]
    return controller.select(filepath=ours).limit(limits=n_threads)


def say(text):
    print(text, flush=True)


def _base(baselines):
    if not baselines:
        return float("nan"), float("nan")
    return (
        float(np.mean([b[0].wall for b in baselines])),
        float(np.mean([b[0].cpu for b in baselines])),
    )


def report_baselines(baselines):
    walls = ", ".join(f"{b[0].wall:.1f}" for b in baselines)
    cpus = ", ".join(f"{b[0].cpu:.1f}" for b in baselines)
    wall, cpu = _base(baselines)
    say(
        f"  one transform (no store), {len(baselines)} run(s): wall {walls} s "
        f"(mean {wall:.1f}); CPU {cpus} s (mean {cpu:.1f}); forward lines "
        f"{[b[1] for b in baselines]}"
    )


def report_store(args, n, baselines, result, brief=False):
    clock, lines, spent, rows, n_cand, best, _ = result
    base_wall, base_cpu = _base(baselines)
    status = "OK" if lines == n else "MISMATCH"
    say(
        f"  store search, {n_cand} candidates: wall {clock.wall:.1f} s = "
        f"{clock.wall / base_wall:.2f}x one transform; CPU {clock.cpu:.1f} s = "
        f"{clock.cpu / base_cpu:.2f}x (target <= 1.5x); forward lines {lines} "
        f"(expected {n}: {status})"
    )
    if brief:
        return
    say(f"      {'part of the search':<54} {'wall':>8} {'CPU':>8}")
    for suffix, total in (("", clock.wall), ("/cpu", clock.cpu)):
        vlm_total = spent.get("transform" + suffix, 0) + spent.get("fill" + suffix, 0)
        forward = spent.get("compute_missing" + suffix, 0)
        keys = spent.get("keys" + suffix, 0)
        probe = spent.get("fit" + suffix, 0) + spent.get("score" + suffix, 0)
        parts = {
            "forward pass on misses (incl. pooling, store writes)": forward,
            "image keys (content hashes)": keys,
            "store lookups and output assembly": vlm_total - forward - keys,
            f"{args.probe} fit + score": probe,
            "rest (clone, vlm.fit, sklearn bookkeeping)": total - vlm_total - probe,
        }
        if suffix:
            cpu_parts = parts
        else:
            wall_parts = parts
    for part, wall in wall_parts.items():
        cpu = cpu_parts[part]
        say(
            f"      {part:<54} {wall:7.1f}s {cpu:7.1f}s  "
            f"({100 * wall / clock.wall:4.1f} % / {100 * cpu / clock.cpu:4.1f} %)"
        )
    iters = np.asarray(rows["n_iter"])
    n_fits = max(rows.get("fits", 0), 1)
    if len(iters):
        say(
            f"    {len(iters)} probe fits: lbfgs iterations median "
            f"{np.median(iters):.0f}, {np.mean(iters >= args.max_iter):.0%} stopped "
            f"at max_iter"
        )
    say(
        f"    {n_fits} probe fits, per fit: {spent.get('fit', 0) / n_fits:.3f} s "
        f"wall, {spent.get('fit/cpu', 0) / n_fits:.3f} s CPU"
    )
    say(f"    rows keyed: {rows.get('_keys', 0)}; best: {best}")


def report_subset(args, n, baselines, result, brief=False):
    clock, lines, c1, c12 = result
    base_wall, base_cpu = _base(baselines)
    full = extrapolate(c1, c12)
    # CPU time per (candidate, fold), averaged over layers 1 and 12: less noisy
    # than the wall times of each candidate on a shared machine.
    full_cpu = extrapolate(*[clock.cpu / (2 * args.subset_folds)] * 2)
    if not brief:
        say(
            f"  measured 2 candidates x {args.subset_folds} fold(s) in "
            f"{clock.wall:.1f} s wall, CPU {clock.cpu:.1f} s ({lines} forward lines); "
            f"per (candidate, fold) {c1:.1f} s at layer 1, {c12:.1f} s at layer 12"
        )
    say(
        f"    extrapolated to 48 candidates x {N_FOLDS} folds (+ refit): "
        f"{full:.0f} s = {full / base_wall:.1f}x one transform (estimate, not run); "
        f"from CPU time {full_cpu:.0f} s = {full_cpu / base_cpu:.1f}x"
    )


def report_probe(args, n, baselines, result, brief=False):
    result = dict(result)
    say(
        f"  probe fits alone on the stored features (layers {PROBE_LAYERS} x mean "
        f"x {N_FOLDS} folds, forward lines {result.pop('forward lines')}):"
    )
    for name, (cpu, iters, score) in result.items():
        iters = np.asarray(iters)
        say(
            f"    {name:<36} {cpu:.3f} s CPU per fit, lbfgs iterations median "
            f"{np.median(iters):.0f} ({np.mean(iters >= args.max_iter):.0%} at "
            f"max_iter), mean accuracy {score:.3f}"
        )


def _labelled(label, fn):
    def report(*args, **kwargs):
        say(f"  {label}:")
        fn(*args, **kwargs)

    return report


REPORTS = {
    "store48": _labelled(
        "store, 48 candidates (cls/mean/max/-1), precompute + search", report_store
    ),
    "store37": _labelled(
        "store, cold, 37 candidates (cls/mean/max + pooler@12)", report_store
    ),
    "nostore": _labelled("no store", report_subset),
    "memory_cold": _labelled(
        "Pipeline(memory=joblib.Memory), first search", report_subset
    ),
    "memory_warm": _labelled(
        "Pipeline(memory=joblib.Memory), same search again", report_subset
    ),
    "probe": report_probe,
    "probe_layers48": report_probe_layers,
}


if __name__ == "__main__":
    main()
