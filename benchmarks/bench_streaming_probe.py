"""LinearProbeClassifier trained in memory vs streamed from a memmap or a store.

Synthetic features (class means plus Gaussian noise, float32) are written to a
``.npy`` file on disk, a block at a time. Each run then happens in a fresh
process, which reports its peak resident memory above its baseline (VmHWM after
``/proc/self/clear_refs``, once torch is imported and warmed up) and its times:

- ``in memory``: ``np.load`` the file, then ``fit`` on the array;
- ``memmap``: ``fit`` on ``np.load(path, mmap_mode="r")``, read a batch at a time;
- ``store``: the first ``--store-rows`` rows written to a disk FeatureStore, then
  ``fit`` on a ``StoreFeatures`` view of them (compared with those rows in memory).

Every run fits the same probe (linear, Adam, batch 512, early stopping on a 10 %
validation split, ``--epochs`` epochs, ``random_state=0``) and predicts every
row; the script checks that the streamed probes' weights are bitwise the
in-memory ones. Prints a table and the machine with its load average.

    nice python benchmarks/bench_streaming_probe.py             # 0.5 and 1 GiB
    python benchmarks/bench_streaming_probe.py --rows 20000 --store-rows 5000
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUN = r"""
import json, sys, time, warnings
import numpy as np, torch

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

mode, path, labels, rows, epochs, out = sys.argv[1:7]
rows, epochs = int(rows), int(epochs)
torch.set_num_threads(int(sys.argv[7]))
from skvlm.classifiers import LinearProbeClassifier
from skvlm.store import FeatureStore, StoreFeatures
warnings.simplefilter("ignore")
y = np.load(labels)[:rows]
params = dict(
    solver="adam", max_iter=epochs, batch_size=512, device="cpu", random_state=0
)
LinearProbeClassifier(**params).fit(np.load(path, mmap_mode="r")[:2048].copy(), y[:2048])
keys = [f"{i:08x}" for i in range(rows)]
if mode == "store":
    store = FeatureStore(sys.argv[8], memory_cache_bytes=int(sys.argv[9]))
reset_peak()
base = status("VmRSS")
start = time.perf_counter()
if mode == "memory":  # read the first rows of the file, not through a mapping
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)  # the file is written as version 1.0
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        X = np.fromfile(f, dtype=dtype, count=rows * shape[1]).reshape(rows, -1)
elif mode == "memmap":
    X = np.load(path, mmap_mode="r")[:rows]
else:
    X = StoreFeatures(store, "bench", keys, "vision/l0/mean")
loaded = time.perf_counter()
probe = LinearProbeClassifier(**params).fit(X, y)
fitted = time.perf_counter()
accuracy = float(np.mean(probe.predict(X) == y))
done = time.perf_counter()
np.save(out, probe.coef_)
print(json.dumps(dict(
    peak=status("VmHWM") - base, load=loaded - start, fit=fitted - loaded,
    predict=done - fitted, accuracy=accuracy, epochs=probe.n_iter_,
)))
"""


def write_features(path, n_rows, n_features, n_classes, seed=0):
    """Class means plus unit noise, written ``block`` rows at a time; labels back."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_classes, n_features), dtype=np.float32)
    means *= 6.0 / np.sqrt(2 * n_features)  # two means 6 noise stds apart
    y = rng.permutation(np.arange(n_rows) % n_classes)
    X = np.lib.format.open_memmap(path, "w+", np.float32, (n_rows, n_features))
    for start in range(0, n_rows, 8192):
        stop = min(start + 8192, n_rows)
        block = rng.standard_normal((stop - start, n_features), dtype=np.float32)
        X[start:stop] = block + means[y[start:stop]]
    X.flush()
    del X
    return y


def fill_store(directory, path, n_rows):
    from skvlm.store import FeatureStore

    X = np.load(path, mmap_mode="r")
    store = FeatureStore(directory)
    for start in range(0, n_rows, 4096):
        stop = min(start + 4096, n_rows)
        keys = [f"{i:08x}" for i in range(start, stop)]
        store.write("bench", keys, {"vision/l0/mean": np.array(X[start:stop])})


def run(mode, path, labels, rows, args, directory, extra=()):
    out = directory / f"coef-{mode}-{rows}.npy"
    command = [sys.executable, "-c", RUN, mode, str(path), str(labels), str(rows)]
    command += [str(args.epochs), str(out), str(args.threads), *map(str, extra)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{mode} run failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["coef"] = np.load(out)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="131072,262144")
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--store-rows", type=int, default=32768)
    parser.add_argument("--store-cache-mib", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where to write the data")
    args = parser.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    directory = Path(tempfile.mkdtemp(dir=args.dir, prefix="skvlm-bench-stream-"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine

    load_before = os.getloadavg()
    rows_out = []
    try:
        path = directory / "X.npy"
        start = time.perf_counter()
        n_rows = max(*sizes, args.store_rows)
        y = write_features(path, n_rows, args.features, args.classes)
        labels = directory / "y.npy"
        np.save(labels, y)
        print(
            f"wrote {path.stat().st_size / 2**30:.2f} GiB in "
            f"{time.perf_counter() - start:.1f} s",
            flush=True,
        )
        for rows in sizes:
            memory = run("memory", path, labels, rows, args, directory)
            streamed = run("memmap", path, labels, rows, args, directory)
            same = np.array_equal(memory["coef"], streamed["coef"])
            rows_out.append((rows, memory, streamed, "memmap", same))
        if args.store_rows:
            store_dir = directory / "store"
            start = time.perf_counter()
            fill_store(store_dir, path, args.store_rows)
            print(
                f"filled a store with {args.store_rows} entries in "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )
            memory = run("memory", path, labels, args.store_rows, args, directory)
            cache = args.store_cache_mib * 2**20
            stored = run(
                "store",
                path,
                labels,
                args.store_rows,
                args,
                directory,
                (store_dir, cache),
            )
            same = np.array_equal(memory["coef"], stored["coef"])
            rows_out.append((args.store_rows, memory, stored, "store", same))
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    mib = 2**20
    print(
        f"\n{'rows x features':>18} {'data':>9} {'source':>9} {'peak RSS':>9} "
        f"{'load':>6} {'fit':>7} {'predict':>8} {'accuracy':>8}  bitwise"
    )
    for rows, memory, streamed, source, same in rows_out:
        data = rows * args.features * 4 / mib
        for name, result in (("in memory", memory), (source, streamed)):
            print(
                f"{rows:>9} x {args.features:<6} {data:>6.0f} MiB {name:>9} "
                f"{result['peak'] / mib:>5.0f} MiB {result['load']:>5.1f}s "
                f"{result['fit']:>6.1f}s {result['predict']:>7.1f}s "
                f"{100 * result['accuracy']:>7.2f}%  {same if name == source else ''}"
            )
        print(
            f"{'':>18} streamed / in memory: peak RSS "
            f"{streamed['peak'] / memory['peak']:.3f}, fit time "
            f"{streamed['fit'] / memory['fit']:.2f}, load+fit+predict "
            f"{sum(streamed[k] for k in ('load', 'fit', 'predict')) / sum(memory[k] for k in ('load', 'fit', 'predict')):.2f}"
        )
    print(
        f"\nbatch 512, {args.epochs} epochs (early stopping split 10 %), "
        f"{args.classes} classes, {args.threads} torch thread(s); store cache "
        f"{args.store_cache_mib} MiB"
    )
    print(f"machine: {machine()}")
    print(f"load average before {load_before}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
