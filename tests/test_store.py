"""Tests of skvlm.store.FeatureStore: storage, guarantees and sklearn semantics."""

import copy
import errno
import json
import multiprocessing
import os
import pickle
import signal
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from sklearn.base import BaseEstimator, clone

from skvlm.store import FeatureStore, FeatureStoreError, FeatureStoreWarning
from skvlm.store import _disk as _store_disk
from skvlm.store import _files as _store_files
from skvlm.store import _index as _store_index

SITES = ["vision/l0/mean", "vision/l1/cls", "vision/l1/max"]


def _vectors(n, d=6, seed=0, sites=SITES):
    rng = np.random.default_rng(seed)
    return {site: rng.normal(size=(n, d)).astype(np.float32) for site in sites}


def _keys(n, prefix="k"):
    return [f"{prefix}{i:04d}" for i in range(n)]


def _pack_files(root, namespace="*"):
    return sorted(Path(root).glob(f"{namespace}/packs/*.pack"))


def _read_pack(path):
    """The pack's header and its entries' bytes, parsed as documented in _pack.py.

    Written from the format's description, not with the store's reader.
    """
    data = Path(path).read_bytes()
    magic, n, crc = struct.unpack_from("<8sII", data)
    assert magic == b"SKVLMPK\x01" and zlib.crc32(data[16 : 16 + n]) == crc
    header = json.loads(data[16 : 16 + n])
    entries = {key: data[o : o + length] for key, o, length in header["entries"]}
    return header, entries


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


def test_a_write_is_one_pack_of_plain_safetensors_entries(tmp_path):
    vectors = _vectors(2)
    FeatureStore(tmp_path).write("ns", ["ab12", "cd34"], vectors)
    (path,) = _pack_files(tmp_path, "ns")
    header, entries = _read_pack(path)
    assert header["namespace"] == "ns" and sorted(header["sites"]) == sorted(SITES)
    assert sorted(entries) == ["ab12", "cd34"]
    for i, key in enumerate(["ab12", "cd34"]):
        loaded = safetensors.numpy.load(entries[key])  # an independent reader
        assert sorted(loaded) == sorted(SITES)
        for site in SITES:
            np.testing.assert_array_equal(loaded[site], vectors[site][i])
        assert entries[key][8:9] == b"{"  # JSON header, no pickle anywhere


def test_adding_sites_appends_a_pack_and_never_rewrites_one(tmp_path):
    store = FeatureStore(tmp_path)
    store.write("ns", ["a", "b"], {"s1": [[1.0], [2.0]]})
    (first,) = _pack_files(tmp_path)
    before = first.read_bytes()
    store.write("ns", ["a", "b"], {"s1": [[1.0], [2.0]], "s2": [[3.0], [4.0]]})
    store.write("ns", ["a"], {"s1": [[1.0]]})  # nothing new: no pack at all
    packs = _pack_files(tmp_path)
    assert len(packs) == 2 and first.read_bytes() == before
    header, entries = _read_pack(packs[1])
    assert header["sites"] == ["s2"] and sorted(entries) == ["a", "b"]
    out, hit = FeatureStore(tmp_path).lookup("ns", ["b", "a"], ["s1", "s2"])
    assert hit.all() and out["s2"].ravel().tolist() == [4.0, 3.0]


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
        {"keep": "everything"},
        {"keep": {"layer": [1]}},
        {"keep": {"layers": ["1"]}},
        {"keep": {"poolings": [True]}},
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


def test_keep_is_part_of_the_store_identity(tmp_path):
    keep = {"layers": [0, -1], "poolings": "all"}
    store = FeatureStore.open(tmp_path, keep=keep)
    assert store is FeatureStore.open(tmp_path, keep=dict(keep))
    assert store is not FeatureStore.open(tmp_path)
    assert pickle.loads(pickle.dumps(store)) is store
    memory = pickle.loads(pickle.dumps(FeatureStore(keep="requested")))
    assert memory.keep == "requested" and "keep='requested'" in repr(memory)


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
    store.write("nsb", _keys(2), {"language/l2/last": np.ones((2, 4))})
    info = FeatureStore(tmp_path).info()
    files = _pack_files(tmp_path)
    assert info["entries"] == 5 and info["files"] == len(files) == 3
    assert info["bytes"] == sum(f.stat().st_size for f in files)
    assert info["namespaces"]["nsa"]["sites"] == sorted(SITES)
    assert info["namespaces"]["nsa"]["manifest"]["meta"]["stage"] == "vision"
    assert info["namespaces"]["nsb"]["entries"] == 2
    assert info["namespaces"]["nsb"]["sites"] == [
        "language/l1/last",
        "language/l2/last",
    ]
    store.clear("nsa")
    assert not store.lookup("nsa", _keys(3), SITES)[1].any()  # cache dropped too
    assert store.lookup("nsb", _keys(2), ["language/l1/last"])[1].all()
    store.clear()
    assert store.info()["entries"] == 0 and _pack_files(tmp_path) == []
    assert (tmp_path / _store_disk.MARKER).exists()


def test_a_clear_by_another_process_is_seen_by_writers(tmp_path):
    store = FeatureStore(tmp_path)
    store.write("ns", ["a"], {"s": [[1.0]]})
    assert store.contains("ns", ["a"], ["s"]).all()
    FeatureStore(tmp_path).clear("ns")  # another process
    store.write("ns", ["a"], {"s": [[1.0]]})  # must not believe "a" is stored
    assert FeatureStore(tmp_path).contains("ns", ["a"], ["s"]).all()


def test_index_snapshot_serves_a_fresh_process(tmp_path, monkeypatch):
    monkeypatch.setattr(_store_index, "_MERGE_AT", 10)
    store = FeatureStore(tmp_path, memory_cache_bytes=0)
    for start in range(0, 40, 4):
        store.write("ns", _keys(40)[start : start + 4], _vectors(4, seed=start))
    assert (tmp_path / "ns" / _store_index.INDEX_NAME).exists()
    fresh = FeatureStore(tmp_path, memory_cache_bytes=0)
    headers = []
    real = _store_disk.read_pack_header
    monkeypatch.setattr(
        _store_disk,
        "read_pack_header",
        lambda *a: headers.append(a[1]) or real(*a),
    )
    out, hit = fresh.lookup("ns", _keys(40), SITES[:1])
    assert hit.all() and len(headers) < 5  # most packs are in the snapshot
    for start in range(0, 40, 4):
        expected = _vectors(4, seed=start)[SITES[0]]
        np.testing.assert_array_equal(out[SITES[0]][start : start + 4], expected)
    # A damaged snapshot is ignored: the packs are the truth.
    index = tmp_path / "ns" / _store_index.INDEX_NAME
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF
    index.write_bytes(bytes(data))
    _, hit = FeatureStore(tmp_path).lookup("ns", _keys(40), SITES)
    assert hit.all()


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


# Each damage hits the entry of key k0000 in the middle pack of three (one pack
# per key here; a pack of several entries is damaged in the next test).
def _entry_span(path, key):
    header, _ = _read_pack(path)
    ((offset, length),) = [(o, n) for k, o, n in header["entries"] if k == key]
    return offset, length


def _damage_truncate(path):
    offset, length = _entry_span(path, "k0000")
    with open(path, "r+b") as f:
        f.truncate(offset + length - 5)


def _damage_flip_data(path):
    offset, length = _entry_span(path, "k0000")
    data = bytearray(path.read_bytes())
    data[offset + length - 3] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_header(path):
    offset, _ = _entry_span(path, "k0000")
    data = bytearray(path.read_bytes())
    data[offset + 8] = ord("#")  # the opening brace of the entry's JSON header
    path.write_bytes(bytes(data))


def _damage_misplace(path):
    # The entry of another key, of the same size, copied over this one.
    offset, length = _entry_span(path, "k0000")
    other = next(p for p in _pack_files(path.parent.parent.parent) if p != path)
    header, entries = _read_pack(other)
    data = bytearray(path.read_bytes())
    data[offset : offset + length] = next(iter(entries.values()))
    path.write_bytes(bytes(data))


def _damage_pack_header(path):
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the pack's JSON header: its CRC no longer matches
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_damage_truncate, "truncated"),
        (_damage_flip_data, "checksum mismatch"),
        (_damage_header, "unreadable header"),
        (_damage_misplace, "moved or renamed"),
        (_damage_pack_header, "checksum mismatch in the header"),
    ],
)
def test_damaged_entry_warns_misses_and_is_rewritten(tmp_path, damage, reason):
    vectors = _vectors(3)
    writer = FeatureStore(tmp_path)
    for i in (1, 0, 2):  # k0000's pack is neither the first nor the last
        writer.write(
            "ns", _keys(3)[i : i + 1], {s: v[i : i + 1] for s, v in vectors.items()}
        )
    path = _pack_files(tmp_path)[1]
    assert sorted(_read_pack(path)[1]) == ["k0000"]
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
        # The caller recomputes and writes; the new entry is read from now on.
        store.write("ns", _keys(1), {s: v[:1] for s, v in vectors.items()})
        out, hit = FeatureStore(tmp_path).lookup("ns", _keys(3), SITES)
        assert FeatureStore(tmp_path).contains("ns", _keys(3), SITES).all()
    assert hit.all()
    for site in SITES:
        np.testing.assert_array_equal(out[site], vectors[site])


def test_damage_in_one_entry_of_a_pack_spares_the_others(tmp_path):
    vectors = _vectors(3)
    FeatureStore(tmp_path).write("ns", _keys(3), vectors)
    (path,) = _pack_files(tmp_path)
    _damage_flip_data(path)
    with pytest.warns(FeatureStoreWarning, match="key 'k0000'"):
        out, hit = FeatureStore(tmp_path).lookup("ns", _keys(3), SITES)
    np.testing.assert_array_equal(hit, [False, True, True])
    np.testing.assert_array_equal(out[SITES[1]][1:], vectors[SITES[1]][1:])


def test_disk_full_names_the_fix_and_leaves_the_store_consistent(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path)
    store.write("ns", ["a", "b"], {"s1": [[1.0], [2.0]]})
    written = []

    def full_midway(file, data):
        if len(written) > 1:  # some bytes of the new pack went out, then no space
            file.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        file.write(data)

    monkeypatch.setattr(_store_files, "_write_all", full_midway)
    with pytest.raises(FeatureStoreError) as excinfo:
        store.write("ns", ["a", "b", "c"], {"s2": [[10.0], [20.0], [30.0]]})
    message = str(excinfo.value)
    assert str(tmp_path / "ns" / "packs") in message and " bytes to " in message
    assert "max_bytes" in message and "clear()" in message
    assert "Nothing of this write was stored" in message
    assert isinstance(excinfo.value, OSError)
    assert excinfo.value.__cause__.errno == errno.ENOSPC
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    assert len(_pack_files(tmp_path)) == 1  # as before the failed write
    fresh = FeatureStore(tmp_path)
    _, hit = fresh.lookup("ns", ["a", "b", "c"], ["s1"])
    np.testing.assert_array_equal(hit, [True, True, False])
    assert not fresh.contains("ns", ["a", "b", "c"], ["s2"]).any()
    store.write("ns", ["a", "b", "c"], {"s2": [[10.0], [20.0], [30.0]]})  # retried
    out, hit = FeatureStore(tmp_path).lookup("ns", ["a", "c"], ["s2"])
    assert hit.all() and out["s2"].ravel().tolist() == [10.0, 30.0]


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
    assert FeatureStore(tmp_path).info()["entries"] == 8


def test_empty_keys(store):
    store.write("ns", [], {"s": np.zeros((0, 3))})
    out, hit = store.lookup("ns", [], ["s"])
    assert hit.shape == (0,) and out["s"].shape[0] == 0


def _crash_mid_write(root):
    def half_then_die(file, data):
        file.write(data[: len(data) // 2])
        file.flush()
        os._exit(3)  # the process dies: no cleanup, no exception handling

    _store_files._write_all = half_then_die
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


# -- creation, crashes and permissions (issue 15 item 4) ---------------------------


def test_a_store_being_created_by_another_process_is_not_foreign(tmp_path):
    # What a second process sees while the first writes the marker: a new
    # directory holding only the marker's temporary file.
    (tmp_path / f".{_store_disk.MARKER}.abc123.tmp").write_bytes(b"{")
    store = FeatureStore(tmp_path)
    store.write("ns", ["a"], {"s": [[1.0]]})
    assert FeatureStore(tmp_path).lookup("ns", ["a"], ["s"])[1].all()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / f".{_store_disk.MARKER}.abc123.tmp").write_bytes(b"{")
    (foreign / "notes.txt").write_text("x")  # a real foreign file: still refused
    with pytest.raises(FeatureStoreError, match="not a skvlm feature store"):
        FeatureStore(foreign)


def _create_and_write(root, worker, barrier):
    def slow(file, data):  # a slow disk: the creation window stays open
        time.sleep(0.02)
        file.write(data)

    _store_files._write_all = slow
    barrier.wait()
    time.sleep(0.01 * worker)  # arrive at every stage of the first one's creation
    store = FeatureStore(root)
    store.write("ns", [f"w{worker}"], {"s": [[float(worker)]]})


def test_several_processes_create_one_new_store_at_once(tmp_path):
    ctx = _context()
    root = tmp_path / "new"
    barrier = ctx.Barrier(6)
    procs = [
        ctx.Process(target=_create_and_write, args=(root, w, barrier)) for w in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    out, hit = FeatureStore(root).lookup("ns", [f"w{w}" for w in range(6)], ["s"])
    assert hit.all() and out["s"].ravel().tolist() == list(range(6))


def _slow_writer(root, key, started, release):
    def half_then_wait(file, data):
        file.write(data[: len(data) // 2])
        file.flush()
        started.set()
        release.wait(60)  # a live writer on a slow disk (or killed meanwhile)
        file.write(data[len(data) // 2 :])

    _store_files._write_all = half_then_wait
    FeatureStore(root).write("ns", [key], {"s": [[1.0, 2.0]]})


def test_orphaned_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    ctx = _context()
    FeatureStore(tmp_path).write("ns", ["old"], {"s": [[0.0, 0.0]]})
    packs = tmp_path / "ns" / "packs"
    writers = {}
    for key in ("killed", "live"):
        started, release = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_slow_writer, args=(tmp_path, key, started, release))
        proc.start()
        assert started.wait(30)
        writers[key] = (proc, release, set(packs.glob(".*.tmp")))
    killed = writers["killed"][2]
    live = writers["live"][2] - killed
    assert len(killed) == 1 and len(live) == 1
    os.kill(writers["killed"][0].pid, signal.SIGKILL)  # kill -9 mid-write
    writers["killed"][0].join(30)
    old = time.time() - 2 * _store_files.ORPHAN_AGE
    for tmp in killed | live:  # both look old: only the lock tells them apart
        os.utime(tmp, (old, old))
    store = FeatureStore(tmp_path)
    assert store.lookup("ns", ["old"], ["s"])[1].all()  # a later run looks at ns
    assert not any(p.exists() for p in killed)  # the orphan is gone
    assert all(p.exists() for p in live)  # the live writer's file is untouched
    proc, release, _ = writers["live"]
    release.set()
    proc.join(30)
    assert proc.exitcode == 0
    assert FeatureStore(tmp_path).lookup("ns", ["live"], ["s"])[1].all()
    assert not list(packs.glob(".*.tmp"))


def test_fresh_temporary_files_are_never_removed(tmp_path):
    FeatureStore(tmp_path).write("ns", ["a"], {"s": [[0.0]]})
    tmp = tmp_path / "ns" / "packs" / ".x.pack.abc.tmp"
    tmp.write_bytes(b"partial")  # no lock held, but younger than ORPHAN_AGE
    FeatureStore(tmp_path).lookup("ns", ["a", "b"], ["s"])
    assert tmp.exists()


def test_a_pack_replaced_by_a_directory_is_a_clear_error(tmp_path):
    FeatureStore(tmp_path).write("ns", ["a"], {"s": [[0.0]]})
    (pack,) = _pack_files(tmp_path)
    pack.unlink()
    pack.mkdir()
    for call in (
        lambda s: s.check(),
        lambda s: s.lookup("ns", ["a"], ["s"]),
        lambda s: s.write("ns", ["b"], {"s": [[0.0]]}),
    ):
        with pytest.raises(FeatureStoreError, match=f"{pack.name}.*is a directory"):
            call(FeatureStore(tmp_path))


def test_check_refuses_what_cannot_be_a_store(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FeatureStoreError, match="is a file"):
        FeatureStore(tmp_path / "file").check()
    FeatureStore(tmp_path / "new").check()  # creates it: fine
    assert (tmp_path / "new" / _store_disk.MARKER).exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / _store_disk.MARKER).write_text(json.dumps({"format_version": 1}))
    with pytest.raises(FeatureStoreError, match="format 1.*delete that directory"):
        FeatureStore(old)


def _deny_writes_under(monkeypatch, root):
    """Make every write under ``root`` fail as on a read-only directory.

    Tests run as root here, and root ignores permission bits: the os calls that
    create files and directories are made to fail the way they do for a user
    without write permission (EACCES).
    """
    root = str(root)
    real_open, real_mkdir = os.open, os.mkdir

    def denied(path):
        return str(path).startswith(root)

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_a_read_only_store_serves_hits_and_warns_once_on_misses(tmp_path, monkeypatch):
    FeatureStore(tmp_path).write("ns", ["a"], {"s": [[1.0]]}, meta={"m": 1})
    _deny_writes_under(monkeypatch, tmp_path)
    store = FeatureStore(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.lookup("ns", ["a"], ["s"])[1].all()  # hits: no warning
    with pytest.warns(FeatureStoreWarning, match="cannot be written") as record:
        with store.computing("ns"):  # what a miss does first: no PermissionError
            store.write("ns", ["b"], {"s": [[2.0]]}, meta={"m": 1})
        store.write("ns", ["c"], {"s": [[3.0]]})
    assert len(record) == 1 and str(tmp_path) in str(record[0].message)
    assert not store.contains("ns", ["b", "c"], ["s"]).any()


def test_a_store_that_cannot_be_created_fails_at_check(tmp_path, monkeypatch):
    parent = tmp_path / "read-only"
    parent.mkdir()
    _deny_writes_under(monkeypatch, parent)
    with pytest.raises(FeatureStoreError, match=f"{parent}/store.*cannot be created"):
        FeatureStore(parent / "store").check()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root ignores permission bits; the two tests above simulate them",
)
def test_a_read_only_directory_for_real(tmp_path):  # pragma: no cover - non-root
    FeatureStore(tmp_path / "s").write("ns", ["a"], {"s": [[1.0]]})
    for path in [tmp_path / "s", *(tmp_path / "s").rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        store = FeatureStore(tmp_path / "s")
        assert store.lookup("ns", ["a"], ["s"])[1].all()
        with pytest.warns(FeatureStoreWarning, match="cannot be written"):
            with store.computing("ns"):
                store.write("ns", ["b"], {"s": [[2.0]]})
        with pytest.raises(FeatureStoreError, match="cannot be created"):
            FeatureStore(tmp_path / "s" / "ns" / "nested").check()
    finally:
        for path in [tmp_path / "s", *(tmp_path / "s").rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)


def test_a_reader_that_read_many_pack_headers_saves_a_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(_store_disk, "_SNAPSHOT_AFTER", 5)
    writer = FeatureStore(tmp_path)
    for i in range(8):  # 8 packs: too few for the writer to merge its index
        writer.write("ns", [f"k{i}"], {"s": [[float(i)]]})
    index = tmp_path / "ns" / _store_index.INDEX_NAME
    assert not index.exists()
    assert FeatureStore(tmp_path).lookup("ns", ["k7"], ["s"])[1].all()
    assert index.exists()  # the first reader paid for 8 headers, and saved them
    headers = []
    real = _store_disk.read_pack_header
    monkeypatch.setattr(
        _store_disk, "read_pack_header", lambda *a: headers.append(a) or real(*a)
    )
    out, hit = FeatureStore(tmp_path).lookup("ns", [f"k{i}" for i in range(8)], ["s"])
    assert hit.all() and headers == [] and out["s"].ravel().tolist() == list(range(8))
