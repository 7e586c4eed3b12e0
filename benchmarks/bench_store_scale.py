"""Benchmark: feature-store layouts at a million images.

Compares, side by side in one run, with synthetic vectors written the way a
fill writes them (one ``write`` per batch of 32 images, float16):

- ``v1``: skvlm's format-1 store, one safetensors file per image, taken from
  git history (the ``skvlm/store`` package of commit :data:`V1_COMMIT`, the
  last one before format 2) into a temporary directory by :func:`_store_v1`,
  and imported there as the package ``skvlm_store_v1`` (it is self-contained:
  relative imports only). Needs a git clone of skvlm;
- ``v2``: skvlm's store now, packs of many entries plus a key index;
- ``lmdb``: one LMDB environment, one value per (image, site) with a CRC-32
  prefix, one transaction per batch (``sync=False``, like the others: none of
  them fsyncs);
- ``lance``: a Lance dataset, one row per image and one fixed-size-list column
  per site, one append per batch, a BTREE scalar index on the key for lookups
  (run on fewer images: see ``--lance-images``).

For each: write throughput (images/s, wall and CPU), the files and the disk
(allocated blocks) the store takes, the time to open it in a fresh object and
answer a first lookup, and lookup throughput for random and for sequential
keys (one site of 32 keys per lookup, no memory cache: what the storage
gives). The page cache is warm (the data was just written; the machine has
more RAM than the data): cold-disk lookups cost more for every layout.

Two shapes, chosen so that the run fits this machine's disk and time:

- ``small``: 1 000 000 images x 4 sites x 64 floats (512 bytes of vectors
  per image): per-image overheads (files, headers, index) dominate;
- ``llava``: 2 000 images x 165 sites x 4096 floats, LLaVA-1.5-7B's whole
  language stage (1.35 MB per image in float16): bandwidth dominates.

Run: ``nice python benchmarks/bench_store_scale.py --out results.json``
(needs ``pip install lmdb pylance`` for the two library candidates; they are
skipped when missing). ``--images`` and ``--shapes`` make shorter runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

SHAPES = {
    "small": {"images": 1_000_000, "sites": 4, "width": 64},
    "llava": {"images": 2_000, "sites": 165, "width": 4096},
}
BATCH = 32
#: The last commit whose ``skvlm/store`` wrote format 1 (the parent of ab50bff,
#: which introduced format 2).
V1_COMMIT = "723e163e0c8275eff6ee28fff43b6d73af94881b"
N_LOOKUPS = 20_000  # keys looked up per pattern (random, sequential)


def _keys(n):
    return [hashlib.sha1(str(i).encode()).hexdigest() for i in range(n)]


def _sites(n):
    return [f"language/l{i // 5}/p{i % 5}" for i in range(n)]


def _pool(sites, width, rows=256):
    rng = np.random.default_rng(0)
    return {s: rng.normal(size=(rows, width)).astype(np.float32) for s in sites}


def _batches(keys, sites, pool):
    rows = len(next(iter(pool.values())))
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        at = (start // BATCH * 7) % (rows - BATCH)
        yield chunk, {s: pool[s][at : at + len(chunk)] for s in sites}


def _disk(path):
    files = blocks = apparent = 0
    for root, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            files += 1
            blocks += st.st_blocks * 512
            apparent += st.st_size
    return files, blocks, apparent


# -- candidates: open(path, fresh) -> object with write(keys, vectors), lookup(keys, site)
class SkvlmStore:
    def __init__(self, module, path, sites):
        self.store = module.FeatureStore(path, dtype="float16", memory_cache_bytes=0)

    def write(self, keys, vectors):
        self.store.write("ns", keys, vectors)

    def lookup(self, keys, site):
        vectors, hit = self.store.lookup("ns", keys, [site])
        assert hit.all()
        return vectors[site]


class LmdbStore:
    def __init__(self, path, sites):
        import lmdb

        self.env = lmdb.open(
            path, map_size=1 << 40, sync=False, metasync=False, readahead=False
        )

    def write(self, keys, vectors):
        with self.env.begin(write=True) as txn:
            for i, key in enumerate(keys):
                for site, array in vectors.items():
                    raw = array[i].astype(np.float16).tobytes()
                    value = zlib.crc32(raw).to_bytes(4, "little") + raw
                    txn.put(f"{key}/{site}".encode(), value)

    def lookup(self, keys, site):
        out = []
        with self.env.begin() as txn:
            for key in keys:
                value = txn.get(f"{key}/{site}".encode())
                raw = value[4:]
                assert zlib.crc32(raw) == int.from_bytes(value[:4], "little")
                out.append(np.frombuffer(raw, dtype=np.float16).astype(np.float32))
        return np.stack(out)


class LanceStore:
    def __init__(self, path, sites):
        import lance
        import pyarrow as pa

        self.lance, self.pa, self.path, self.sites = lance, pa, path, sites
        self.ds = lance.dataset(path) if os.path.exists(path) else None

    def write(self, keys, vectors):
        pa = self.pa
        columns = {"key": pa.array(keys, pa.string())}
        for site, array in vectors.items():
            half = array.astype(np.float16)
            columns[site] = pa.FixedSizeListArray.from_arrays(
                pa.array(half.ravel(), pa.float16()), half.shape[1]
            )
        table = pa.table(columns)
        mode = "append" if self.ds is not None else "create"
        self.ds = self.lance.write_dataset(table, self.path, mode=mode)

    def finish(self):
        self.ds.create_scalar_index("key", index_type="BTREE")

    def lookup(self, keys, site):
        quoted = ",".join(f"'{k}'" for k in keys)
        table = self.ds.to_table(columns=["key", site], filter=f"key IN ({quoted})")
        order = {k: i for i, k in enumerate(table.column("key").to_pylist())}
        values = table.column(site).combine_chunks().flatten().to_numpy()
        values = values.reshape(len(order), -1).astype(np.float32)
        return values[[order[k] for k in keys]]


def _store_v1():
    """The format-1 ``skvlm.store`` package of :data:`V1_COMMIT`, imported from
    a temporary directory as ``skvlm_store_v1`` (no copy kept in the repo)."""
    if "skvlm_store_v1" in sys.modules:
        return sys.modules["skvlm_store_v1"]
    repo = os.path.dirname(HERE)
    archive = subprocess.run(
        ["git", "-C", repo, "archive", V1_COMMIT, "skvlm/store"],
        check=True,
        capture_output=True,
    ).stdout
    root = tempfile.mkdtemp(prefix="skvlm_v1_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    os.rename(
        os.path.join(root, "skvlm", "store"), os.path.join(root, "skvlm_store_v1")
    )
    sys.path.insert(0, root)
    return importlib.import_module("skvlm_store_v1")


def _make(name, path, sites):
    if name == "v1":
        return SkvlmStore(_store_v1(), path, sites)
    if name == "v2":
        from skvlm import store

        return SkvlmStore(store, path, sites)
    if name == "lmdb":
        return LmdbStore(path, sites)
    if name == "lance":
        return LanceStore(path, sites)
    raise ValueError(name)


def _available(name):
    try:
        if name == "lmdb":
            import lmdb  # noqa: F401
        if name == "lance":
            import lance  # noqa: F401
    except ImportError:
        return False
    return True


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _lookups(store, keys, order, site):
    def run():
        for start in range(0, len(order), BATCH):
            store.lookup([keys[i] for i in order[start : start + BATCH]], site)

    _, wall, cpu = _timed(run)
    return {"keys_per_s": len(order) / wall, "wall_s": wall, "cpu_s": cpu}


def bench(name, shape, root, n_images, pool, keys, sites):
    path = os.path.join(root, f"{name}-{shape}")
    shutil.rmtree(path, ignore_errors=True)
    store = _make(name, path, sites)

    def write_all():
        for chunk, vectors in _batches(keys, sites, pool):
            store.write(chunk, vectors)
        if hasattr(store, "finish"):
            store.finish()

    _, wall, cpu = _timed(write_all)
    load = os.getloadavg()[0]
    files, blocks, apparent = _disk(path)
    result = {
        "layout": name,
        "shape": shape,
        "images": n_images,
        "write_images_per_s": n_images / wall,
        "write_wall_s": wall,
        "write_cpu_s": cpu,
        "files": files,
        "disk_bytes": blocks,
        "apparent_bytes": apparent,
        "load_after_write": load,
    }
    store = None
    rng = np.random.default_rng(1)
    n = min(N_LOOKUPS, n_images)
    fresh, wall, _ = _timed(lambda: _make(name, path, sites))
    first, wall2, _ = _timed(lambda: fresh.lookup(keys[:1], sites[0]))
    result["open_and_first_lookup_s"] = wall + wall2
    expected = pool[sites[0]][0].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(first[0], expected)
    site = sites[len(sites) // 2]
    result["random"] = _lookups(
        fresh, keys, rng.choice(n_images, n, replace=False), site
    )
    start = int(rng.integers(0, n_images - n + 1))
    result["sequential"] = _lookups(fresh, keys, np.arange(start, start + n), site)
    result["load_after_lookups"] = os.getloadavg()[0]
    return result, path


def relookup(root, shape, layouts, n_images, rounds):
    """Lookups on stores left by an earlier run (``--no-delete``), interleaved.

    Each round opens every layout afresh and times its random and sequential
    lookups, layouts one after the other, so that the load of a shared machine
    falls on all of them alike; medians over the rounds are reported.
    """
    spec = SHAPES[shape]
    sites = _sites(spec["sites"])
    keys = _keys(n_images)
    site = sites[len(sites) // 2]
    rng = np.random.default_rng(3)
    times = {name: {"random": [], "sequential": [], "open": []} for name in layouts}
    n = min(N_LOOKUPS, n_images)
    for _ in range(rounds):
        order = rng.choice(n_images, n, replace=False)
        start = int(rng.integers(0, n_images - n + 1))
        for name in layouts:
            path = os.path.join(root, f"{name}-{shape}")
            wall = time.perf_counter()
            fresh = _make(name, path, sites)
            fresh.lookup(keys[:1], sites[0])
            times[name]["open"].append(time.perf_counter() - wall)
            for pattern, rows in (
                ("random", order),
                ("sequential", np.arange(start, start + n)),
            ):
                times[name][pattern].append(_lookups(fresh, keys, rows, site))
            fresh = None
    out = []
    for name in layouts:
        result = {"layout": name, "shape": shape, "images": n_images, "rounds": rounds}
        result["open_and_first_lookup_s"] = float(np.median(times[name]["open"]))
        for pattern in ("random", "sequential"):
            runs = times[name][pattern]
            result[pattern] = {
                "keys_per_s": float(np.median([r["keys_per_s"] for r in runs])),
                "cpu_keys_per_s": float(np.median([n / r["cpu_s"] for r in runs])),
            }
        result["load"] = os.getloadavg()[0]
        out.append(result)
        print(json.dumps(result), flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="small,llava")
    parser.add_argument("--layouts", default="v2,lmdb,lance,v1")
    parser.add_argument("--images", type=int, default=None, help="override counts")
    parser.add_argument("--lance-images", type=int, default=20_000)
    parser.add_argument("--root", default="/tmp/skvlm-bench-store-scale")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-delete", dest="delete", action="store_false")
    parser.add_argument(
        "--relookup",
        type=int,
        default=0,
        help="only time lookups, interleaved over this many rounds, on the stores "
        "an earlier --no-delete run left in --root",
    )
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    if args.relookup:
        results = []
        for shape in args.shapes.split(","):
            n = args.images or SHAPES[shape]["images"]
            layouts = [
                name
                for name in args.layouts.split(",")
                if os.path.exists(os.path.join(args.root, f"{name}-{shape}"))
                and _available(name)
            ]
            results += relookup(args.root, shape, layouts, n, args.relookup)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"loadavg": os.getloadavg(), "results": results}, f, indent=1)
        return
    header = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(header), flush=True)
    results = []
    for shape in args.shapes.split(","):
        spec = SHAPES[shape]
        sites = _sites(spec["sites"])
        pool = _pool(sites, spec["width"])
        for name in args.layouts.split(","):
            if not _available(name):
                print(f"# {name}: not installed, skipped", flush=True)
                continue
            n = args.images or spec["images"]
            if name == "lance":
                n = min(n, args.lance_images)
            keys = _keys(n)
            result, path = bench(name, shape, args.root, n, pool, keys, sites)
            results.append(result)
            print(json.dumps(result), flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({**header, "results": results}, f, indent=1)
            if args.delete:
                # Deleting a million small files takes long on a disk mounted
                # with "discard": --no-delete leaves them for a later rm.
                shutil.rmtree(path, ignore_errors=True)
    header["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    header["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**header, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
