"""Tests of skvlm.store.FeatureStore: storage, guarantees and sklearn semantics."""

import copy
import errno
import json
import multiprocessing
import os
import pickle
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from sklearn.base import BaseEstimator, clone

from skvlm.store import FeatureStore, FeatureStoreError, FeatureStoreWarning
from skvlm.store import _disk as _store_disk

SITES = ["vision/l0/mean", "vision/l1/cls", "vision/l1/max"]


def _vectors(n, d=6, seed=0, sites=SITES):
    rng = np.random.default_rng(seed)
    return {site: rng.normal(size=(n, d)).astype(np.float32) for site in sites}


def _keys(n, prefix="k"):
    return [f"{prefix}{i:04d}" for i in range(n)]


def _entry_files(root):
    return sorted(Path(root).glob("*/*/*.safetensors"))


@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    return FeatureStore(None if request.param == "memory" else tmp_path / "store")


# -- what goes in comes out -------------------------------------------------------


def test_roundtrip_float32_is_exact(store):
    keys, vectors = _keys(5), _vectors(5)
    store.write("ns", keys, vectors)
    out, hit = store.lookup("ns", keys[::-1], SITES)
    assert hit.all()
    for site in SITES:
        assert out[site].dtype == np.float32
        np.testing.assert_array_equal(out[site], vectors[site][::-1])


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_float16_equals_numpy_rounding(kind, tmp_path):
    store = FeatureStore(None if kind == "memory" else tmp_path, dtype="float16")
    vectors = _vectors(4)
    store.write("ns", _keys(4), vectors)
    fresh = store if kind == "memory" else FeatureStore(tmp_path)
    for s in (store, fresh):  # the cached and the on-disk value agree
        out, hit = s.lookup("ns", _keys(4), SITES)
        assert hit.all()
        for site in SITES:
            expected = vectors[site].astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(out[site], expected)


def test_float16_keeps_float32_when_a_value_overflows(tmp_path):
    store = FeatureStore(tmp_path, dtype="float16")
    vector = np.array([[1e5, 0.1, -3.0], [1.0, 0.1, -3.0]], dtype=np.float32)
    store.write("ns", ["big", "small"], {"s": vector})
    out, hit = FeatureStore(tmp_path).lookup("ns", ["big", "small"], ["s"])
    assert hit.all()
    np.testing.assert_array_equal(out["s"][0], vector[0])  # exact: float32 kept
    np.testing.assert_array_equal(out["s"][1], vector[1].astype(np.float16))


def test_entry_is_a_plain_safetensors_file(tmp_path):
    vectors = _vectors(2)
    FeatureStore(tmp_path).write("ns", ["ab12", "cd34"], vectors)
    path = tmp_path / "ns" / "ab" / "ab12.safetensors"
    loaded = safetensors.numpy.load_file(path)  # an independent reader
    assert sorted(loaded) == sorted(SITES)
    for site in SITES:
        np.testing.assert_array_equal(loaded[site], vectors[site][0])
    assert path.read_bytes()[8:9] == b"{"  # JSON header, no pickle anywhere


def test_lookup_misses_are_nan_and_need_every_site(store):
    store.write("ns", ["a", "b"], {"s1": np.ones((2, 3)), "s2": np.zeros((2, 2))})
    store.write("ns", ["c"], {"s1": np.full((1, 3), 7.0)})
    out, hit = store.lookup("ns", ["c", "a", "x", "a"], ["s1", "s2"])
    np.testing.assert_array_equal(hit, [False, True, False, True])
    assert out["s1"].shape == (4, 3) and out["s2"].shape == (4, 2)
    assert np.isnan(out["s1"][[0, 2]]).all() and np.isnan(out["s2"][[0, 2]]).all()
    np.testing.assert_array_equal(out["s1"][[1, 3]], np.ones((2, 3)))
    out, hit = store.lookup("ns", ["a"], ["nowhere"])
    assert not hit.any() and out["nowhere"].shape == (1, 0)
    _, hit = store.lookup("other", ["a"], ["s1"])  # namespaces never mix
    assert not hit.any()


def test_write_merges_new_sites_into_an_entry(store):
    store.write("ns", ["a"], {"s1": [[1.0, 2.0]]})
    store.write("ns", ["a"], {"s2": [[3.0]]})
    out, hit = store.lookup("ns", ["a"], ["s1", "s2"])
    assert hit.all()
    np.testing.assert_array_equal(out["s1"], [[1.0, 2.0]])
    np.testing.assert_array_equal(out["s2"], [[3.0]])
    assert store.info()["entries"] == 1


def test_failed_rows_and_repeated_keys(store):
    vectors = {"s": np.array([[1.0, 2.0], [np.nan, np.nan], [1.0, 2.0]])}
    store.write("ns", ["a", "b", "a"], vectors)
    _, hit = store.lookup("ns", ["a", "b"], ["s"])
    np.testing.assert_array_equal(hit, [True, False])  # the NaN row was not kept
    assert store.info()["entries"] == 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: s.lookup("NS", ["a"], ["s"]), "namespace 'NS'"),
        (lambda s: s.lookup("ns", ["../x"], ["s"]), r"keys\[0\]"),
        (lambda s: s.lookup("ns", "abc", ["s"]), "sequence of str"),
        (
            lambda s: s.write("ns", ["a", "b"], {"s": np.ones((3, 2))}),
            r"shape \(3, 2\)",
        ),
        (lambda s: s.write("ns", ["a"], {"s": np.ones(2)}), "one row per key"),
        (lambda s: s.write("ns", ["a"], {"__metadata__": np.ones((1, 2))}), "site"),
        (lambda s: s.write("ns", ["a"], {}), "non-empty dict"),
        (lambda s: s.describe("ns", ["not", "a", "dict"]), "meta must be a dict"),
        (lambda s: s.lookup("ns", ["a"], []), "sites is empty"),
    ],
)
def test_bad_arguments_name_the_problem(store, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(store)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dtype": "float64"},
        {"dtype": "nope"},
        {"max_bytes": -1},
        {"memory_cache_bytes": 1.5},
    ],
)
def test_bad_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FeatureStore(**kwargs)


# -- sklearn semantics --------------------------------------------------------------


class _HoldsStore(BaseEstimator):
    def __init__(self, cache=None):
        self.cache = cache


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_copy_and_clone_share_the_store(kind, tmp_path):
    store = FeatureStore(None if kind == "memory" else tmp_path)
    assert copy.deepcopy(store) is store and copy.copy(store) is store
    assert clone(_HoldsStore(cache=store)).cache is store
    assert copy.deepcopy({"x": [store]})["x"][0] is store


def test_pickled_disk_store_is_its_path_and_reopens_shared(tmp_path):
    store = FeatureStore(tmp_path, dtype="float16", memory_cache_bytes=10**6)
    store.write("ns", _keys(50), _vectors(50, d=64))
    blob = pickle.dumps(store)
    assert len(blob) < 500  # settings and path, no vectors
    back = pickle.loads(blob)
    assert back is FeatureStore.open(
        tmp_path, dtype="float16", memory_cache_bytes=10**6
    )
    assert back is pickle.loads(blob)
    assert (back.path, back.dtype, back.memory_cache_bytes) == (
        store.path,
        "float16",
        10**6,
    )
    _, hit = back.lookup("ns", _keys(50), SITES)
    assert hit.all()


def test_pickled_memory_store_copies_its_contents():
    store = FeatureStore()
    store.write("ns", ["a"], {"s": [[1.0]]}, meta={"model": "tiny"})
    back = pickle.loads(pickle.dumps(store))
    assert back is not store
    back.write("ns", ["b"], {"s": [[2.0]]})
    assert store.lookup("ns", ["a", "b"], ["s"])[1].tolist() == [True, False]
    assert back.lookup("ns", ["a", "b"], ["s"])[1].tolist() == [True, True]
    assert back.info()["namespaces"]["ns"]["manifest"]["meta"] == {"model": "tiny"}


def _write_in_worker(store, key):
    store.write("ns", [key], {"s": [[float(len(key))]]})
    return store.lookup("ns", ["parent"], ["s"])[1].tolist()


def test_worker_processes_share_a_disk_store_and_copy_a_memory_store(tmp_path):
    # What loky does with GridSearchCV(n_jobs>1): pickle the estimator (and the
    # store it holds) to another process. A fork pool does the same, faster.
    disk, memory = FeatureStore(tmp_path), FeatureStore()
    for store in (disk, memory):
        store.write("ns", ["parent"], {"s": [[0.0]]})
    with _context().Pool(2) as pool:
        for store in (disk, memory):
            seen = pool.starmap(_write_in_worker, [(store, "ab"), (store, "cde")])
            assert seen == [[True], [True]]  # workers read what the parent wrote
    _, hit = disk.lookup("ns", ["ab", "cde"], ["s"])
    assert hit.all()  # and the parent reads what the workers wrote
    _, hit = memory.lookup("ns", ["ab", "cde"], ["s"])
    assert not hit.any()  # a memory store is per process


def test_open_is_one_instance_per_directory_and_settings(tmp_path):
    a = FeatureStore.open(tmp_path)
    assert FeatureStore.open(str(tmp_path) + "/sub/..") is a
    assert FeatureStore.open(tmp_path, dtype="float16") is not a


# -- storage on disk ----------------------------------------------------------------


def test_info_and_clear(tmp_path):
    store = FeatureStore(tmp_path)
    store.write("nsa", _keys(3), _vectors(3), meta={"model": "m", "stage": "vision"})
    store.write("nsb", _keys(2), {"language/l1/last": np.ones((2, 4))})
    info = store.info()
    files = _entry_files(tmp_path)
    assert info["entries"] == len(files) == 5
    assert info["bytes"] == sum(f.stat().st_size for f in files)
    assert info["namespaces"]["nsa"]["sites"] == sorted(SITES)
    assert info["namespaces"]["nsa"]["manifest"]["meta"]["stage"] == "vision"
    assert info["namespaces"]["nsb"]["entries"] == 2
    store.clear("nsa")
    assert not store.lookup("nsa", _keys(3), SITES)[1].any()  # cache dropped too
    assert store.lookup("nsb", _keys(2), ["language/l1/last"])[1].all()
    store.clear()
    assert store.info()["entries"] == 0 and _entry_files(tmp_path) == []
    assert (tmp_path / _store_disk.MARKER).exists()


def test_refuses_a_foreign_directory_a_file_and_a_newer_format(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FeatureStoreError, match="not a skvlm feature store"):
        FeatureStore(tmp_path)
    with pytest.raises(FeatureStoreError, match="is a file"):
        FeatureStore(tmp_path / "mine.txt")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / _store_disk.MARKER).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(FeatureStoreError, match="format 99"):
        FeatureStore(newer)


def test_lookup_memory_grows_with_rows_not_store(tmp_path):
    sites = [f"language/l{i}/mean" for i in range(32)]
    store = FeatureStore(tmp_path, memory_cache_bytes=0)
    for start in range(0, 24, 8):  # 24 entries of 512 KiB: a 12 MiB store
        store.write("ns", _keys(24)[start : start + 8], _vectors(8, 4096, start, sites))
    fresh = FeatureStore(tmp_path, memory_cache_bytes=0)
    tracemalloc.start()
    out, hit = fresh.lookup("ns", _keys(24)[:2], sites[5:6])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 400_000  # less than one entry (512 KiB), let alone the store
    assert hit.all()
    np.testing.assert_array_equal(
        out[sites[5]], _vectors(8, 4096, 0, sites)[sites[5]][:2]
    )


def test_a_replaced_entry_is_read_anew(tmp_path):
    reader = FeatureStore(tmp_path)
    FeatureStore(tmp_path).write("ns", ["a"], {"s1": [[1.0]]})
    assert reader.lookup("ns", ["a"], ["s1"])[1].all()  # caches the file's index
    FeatureStore(tmp_path).write("ns", ["a"], {"s2": [[2.0]]})  # another writer
    out, hit = reader.lookup("ns", ["a"], ["s1", "s2"])
    assert hit.all() and out["s2"][0, 0] == 2.0


def test_memory_cache_serves_repeats_without_disk(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path, memory_cache_bytes=10**6)
    store.write("ns", _keys(20), _vectors(20))
    fresh = FeatureStore(tmp_path, memory_cache_bytes=10**6)
    reads = []
    real = fresh._backend.read
    monkeypatch.setattr(fresh._backend, "read", lambda *a: reads.append(a) or real(*a))
    first, _ = fresh.lookup("ns", _keys(20), SITES[:1])
    assert len(reads) == 20
    for site in SITES:  # whole small entries were decoded: other sites are free
        out, hit = fresh.lookup("ns", _keys(20)[::2], [site])
        assert hit.all()
    assert len(reads) == 20
    np.testing.assert_array_equal(first[SITES[0]], _vectors(20)[SITES[0]])


def test_memory_cache_stays_within_its_bound(tmp_path):
    store = FeatureStore(tmp_path, memory_cache_bytes=5_000)
    store.write("ns", _keys(40), _vectors(40, d=32))
    for site in SITES:
        store.lookup("ns", _keys(40), [site])
        assert store.info()["memory_cache"]["bytes"] <= 5_000


# -- damage ---------------------------------------------------------------------------


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])


def _damage_flip_data(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_header(path):
    data = bytearray(path.read_bytes())
    data[8] = ord("#")  # the opening brace of the JSON header
    path.write_bytes(bytes(data))


def _damage_misplace(path):
    other = sorted(path.parent.parent.glob("*/*.safetensors"))[-1]
    path.write_bytes(other.read_bytes())


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_damage_truncate, "truncated"),
        (_damage_flip_data, "checksum mismatch"),
        (_damage_header, "unreadable header"),
        (_damage_misplace, "moved or renamed"),
    ],
)
def test_damaged_entry_warns_misses_and_is_rewritten(tmp_path, damage, reason):
    vectors = _vectors(3)
    FeatureStore(tmp_path).write("ns", _keys(3), vectors)
    path = tmp_path / "ns" / "k0" / "k0000.safetensors"
    damage(path)
    store = FeatureStore(tmp_path)
    with pytest.warns(FeatureStoreWarning, match=reason) as record:
        out, hit = store.lookup("ns", _keys(3), SITES)
    assert len(record) == 1 and str(path) in str(record[0].message)
    np.testing.assert_array_equal(hit, [False, True, True])
    assert np.isnan(out[SITES[0]][0]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.lookup("ns", _keys(3), SITES)  # reported once, still a miss
        # The caller recomputes and writes; the damaged file is replaced.
        store.write("ns", _keys(1), {s: v[:1] for s, v in vectors.items()})
        out, hit = FeatureStore(tmp_path).lookup("ns", _keys(3), SITES)
    assert hit.all()
    np.testing.assert_array_equal(out[SITES[2]], vectors[SITES[2]])


def test_disk_full_names_the_fix_and_leaves_the_store_consistent(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path)
    store.write("ns", ["a", "b"], {"s1": [[1.0], [2.0]]})
    calls = []

    def full_after_first(file, data):
        calls.append(len(data))
        if len(calls) > 1:
            file.write(data[:10])  # a partial temporary file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        file.write(data)

    monkeypatch.setattr(_store_disk, "_write_all", full_after_first)
    with pytest.raises(FeatureStoreError) as excinfo:
        store.write("ns", ["a", "b", "c"], {"s2": [[10.0], [20.0], [30.0]]})
    message = str(excinfo.value)
    entry_b = tmp_path / "ns" / "b" / "b.safetensors"
    assert str(entry_b) in message and f"{calls[1]} bytes" in message
    assert "max_bytes" in message and "clear()" in message
    assert isinstance(excinfo.value, OSError)
    assert excinfo.value.__cause__.errno == errno.ENOSPC
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    out, hit = FeatureStore(tmp_path).lookup("ns", ["a", "b", "c"], ["s1", "s2"])
    np.testing.assert_array_equal(hit, [True, False, False])  # a merged; b as before
    _, hit_b = FeatureStore(tmp_path).lookup("ns", ["b"], ["s1"])
    assert hit_b.all()
    np.testing.assert_array_equal(out["s2"][0], [10.0])


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_max_bytes_skips_writes_and_warns_once(kind, tmp_path):
    store = FeatureStore(None if kind == "memory" else tmp_path, max_bytes=3_000)
    keys, vectors = _keys(20), _vectors(20, d=32)  # ~400 bytes per entry
    with pytest.warns(FeatureStoreWarning, match="max_bytes=3000") as record:
        store.write("ns", keys, vectors)
        store.write("ns", _keys(5, "j"), _vectors(5, d=32))
    assert len(record) == 1
    info = store.info()
    assert 0 < info["entries"] < 20 and info["bytes"] <= 3_000
    out, hit = store.lookup("ns", keys, SITES)
    stored = np.flatnonzero(hit)
    np.testing.assert_array_equal(out[SITES[0]][stored], vectors[SITES[0]][stored])


# -- several processes ----------------------------------------------------------------


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _writer(root, worker, rounds):
    store = FeatureStore(root, memory_cache_bytes=0)
    keys = _keys(8)
    for r in range(rounds):
        # All workers write the same shared sites, and each adds a new site of its
        # own every round: a lost update would lose that site for good.
        store.write("ns", keys, _vectors(8, sites=["shared/a", "shared/b"]))
        store.write("ns", keys, _vectors(8, seed=worker, sites=[f"own/w{worker}/r{r}"]))
        out, hit = store.lookup("ns", keys, ["shared/a"])  # never a wrong vector
        np.testing.assert_array_equal(
            out["shared/a"][hit], _vectors(8, sites=["shared/a"])["shared/a"][hit]
        )


def test_concurrent_writers_leave_intact_merged_entries(tmp_path):
    ctx = _context()
    workers, rounds = 4, 10
    procs = [
        ctx.Process(target=_writer, args=(tmp_path, w, rounds)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    assert not list(tmp_path.rglob("*.tmp"))
    own = [f"own/w{w}/r{r}" for w in range(workers) for r in range(rounds)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, hit = FeatureStore(tmp_path).lookup("ns", _keys(8), ["shared/b", *own])
    assert hit.all()
    for w in range(workers):
        expected = _vectors(8, seed=w, sites=["x"])["x"]
        np.testing.assert_array_equal(out[f"own/w{w}/r{rounds - 1}"], expected)
    shared = _vectors(8, sites=["shared/a", "shared/b"])["shared/b"]
    np.testing.assert_array_equal(out["shared/b"], shared)
    assert len(_entry_files(tmp_path)) == 8


def test_empty_keys(store):
    store.write("ns", [], {"s": np.zeros((0, 3))})
    out, hit = store.lookup("ns", [], ["s"])
    assert hit.shape == (0,) and out["s"].shape[0] == 0


def _crash_mid_write(root):
    def half_then_die(file, data):
        file.write(data[: len(data) // 2])
        file.flush()
        os._exit(3)  # the process dies: no cleanup, no exception handling

    _store_disk._write_all = half_then_die
    FeatureStore(root).write("ns", ["a"], {"s2": [[2.0, 2.0]]})


def test_a_crash_mid_write_leaves_no_partial_entry(tmp_path):
    FeatureStore(tmp_path).write("ns", ["a"], {"s1": [[1.0, 1.0]]})
    proc = _context().Process(target=_crash_mid_write, args=(tmp_path,))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 3
    assert len(list(tmp_path.rglob(".*.tmp"))) == 1  # the orphan, hidden
    store = FeatureStore(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing damaged is ever visible
        out, hit = store.lookup("ns", ["a"], ["s1"])
        assert hit.all() and out["s1"].tolist() == [[1.0, 1.0]]  # the old entry
        assert not store.lookup("ns", ["a"], ["s2"])[1].any()
    assert store.info()["entries"] == 1
    store.clear()
    assert not list(tmp_path.rglob("*.tmp"))
