"""FeatureStore: keep every site a forward pass computes, serve later lookups.

A store maps ``(namespace, key, site)`` to one float vector. The caller (the
``cache`` of ``VLMEmbeddingTransformer``) chooses the namespace from everything
that determines a forward pass (model identity and weights, preprocessing,
formatted prompt, dtype, stage) and the key from each image's content; the store
keeps the vectors, checks them, and hands them back. See the user guide page
"Searching layers and poolings" for the whole picture.
"""

import contextlib
import json
import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ._checks import (
    check_keys,
    check_name,
    check_settings,
    check_site,
    check_vectors,
)
from ._disk import DiskBackend, check_root
from ._errors import FeatureStoreError, FeatureStoreWarning
from ._format import EntryDamaged, decode, encode_rows
from ._memory import _LRU, _MemoryBackend

__all__ = ["FeatureStore", "FeatureStoreError", "FeatureStoreWarning"]

_RESCAN_SECONDS = 30.0
_REGISTRY = {}
_REGISTRY_LOCK = threading.Lock()


def _reopen(path, dtype, max_bytes, memory_cache_bytes):
    """Unpickle a disk store: the process's shared instance for its directory."""
    return FeatureStore.open(
        path, dtype=dtype, max_bytes=max_bytes, memory_cache_bytes=memory_cache_bytes
    )


def _restore_memory(dtype, max_bytes, memory_cache_bytes, entries, manifests):
    """Unpickle a memory store: a new store holding a copy of the contents."""
    store = FeatureStore(
        None, dtype=dtype, max_bytes=max_bytes, memory_cache_bytes=memory_cache_bytes
    )
    store._backend = _MemoryBackend(entries, manifests)
    return store


class FeatureStore:
    """Storage for the vectors of every site a forward pass computes.

    A store maps ``(namespace, key, site)`` to one float vector and is shared,
    as a handle, by every estimator that holds it: ``copy.deepcopy`` and
    ``sklearn.base.clone`` return the same object, so the clones a
    ``GridSearchCV`` makes all read and fill one store.

    Parameters
    ----------
    path : str, os.PathLike or None, default=None
        Directory of a disk store, created at the first write. ``None`` gives
        an in-memory store private to this process (copied, not shared, when
        pickled to another process: use a path with ``n_jobs > 1``). An
        existing directory must be empty or a store.
    dtype : {"float32", "float16"}, default="float32"
        How vectors are kept. ``"float16"`` halves the disk cost (relative error
        about 5e-4); a vector with a finite value beyond float16's range
        (65504) is kept in float32 instead. Lookups always return float32.
    max_bytes : int or None, default=None
        Size guard on the stored entries. A write that would pass it is skipped
        with one ``FeatureStoreWarning`` per store object; the caller's features
        stay correct and are recomputed next time. Other processes' writes are
        counted when the store re-measures its directory (every 30 s at most).
    memory_cache_bytes : int, default=268435456
        Bound of the in-process LRU of decoded float32 vectors (256 MiB) that
        serves repeated lookups without reading or decoding entries again; 0
        disables it.

    Attributes
    ----------
    path : pathlib.Path or None
        The absolute directory of a disk store.

    See Also
    --------
    FeatureStore.open : The shared instance for a directory.

    Notes
    -----
    On disk, each (namespace, key) is one safetensors file holding all the
    sites stored for that image, under ``<path>/<namespace>/<key[:2]>/``, with
    a CRC-32 per site and the namespace and key in its metadata. No pickle is
    ever read. Writes go to a temporary file renamed over the entry
    (``os.replace``), so a crash never leaves a partial entry visible; writers
    of one namespace lock it (``fcntl.flock``) while they merge new sites into
    an entry, so concurrent processes keep all sites. A lookup reads only the
    byte ranges of the requested sites (or the whole file, when the whole entry
    fits the memory cache), so its memory grows with the rows asked, not with
    the store. A truncated, corrupt or misplaced file is reported in a
    ``FeatureStoreWarning`` naming it and treated as missing; it is never
    decoded into a vector. A full disk raises ``FeatureStoreError`` and leaves
    the store as it was.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.store import FeatureStore
    >>> store = FeatureStore()
    >>> store.write("ns0", ["a1", "b2"], {"vision/l1/mean": np.ones((2, 3))})
    >>> vectors, hit = store.lookup("ns0", ["b2", "c3"], ["vision/l1/mean"])
    >>> hit
    array([ True, False])
    >>> vectors["vision/l1/mean"]
    array([[ 1.,  1.,  1.],
           [nan, nan, nan]], dtype=float32)
    >>> store.info()["entries"]
    2
    """

    def __init__(
        self,
        path=None,
        *,
        dtype="float32",
        max_bytes=None,
        memory_cache_bytes=256 * 2**20,
    ):
        self.dtype, self.max_bytes, self.memory_cache_bytes = check_settings(
            dtype, max_bytes, memory_cache_bytes
        )
        self._cache = _LRU(self.memory_cache_bytes)
        if path is None:
            self.path = None
            self._backend = _MemoryBackend()
        else:
            self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
            check_root(self.path)
            self._backend = DiskBackend(self.path, index_cache=self._cache)
        self._lock = threading.RLock()  # guards the warning and size-guard state
        self._write_lock = threading.Lock()  # one writer thread at a time
        self._warned_paths = set()  # (namespace, key) of damaged entries reported
        self._described = {}  # namespace -> manifest text written by this object
        self._full_warned = False
        self._compute_threads = {}  # namespace -> lock of the threads computing it
        self._used_bytes = None
        self._used_at = 0.0

    @classmethod
    def open(
        cls, path, *, dtype="float32", max_bytes=None, memory_cache_bytes=256 * 2**20
    ):
        """The process-wide store for a directory, created at first use.

        Calls with the same resolved directory and settings return the same
        object, so its memory cache serves every estimator of the process (and
        each worker process, which reopens it when an estimator is unpickled).

        Parameters
        ----------
        path : str or os.PathLike
            Directory of the store.
        dtype, max_bytes, memory_cache_bytes
            As in :class:`FeatureStore`.

        Returns
        -------
        FeatureStore

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.store import FeatureStore
        >>> d = tempfile.mkdtemp()
        >>> FeatureStore.open(d) is FeatureStore.open(d + "/.")
        True
        """
        settings = check_settings(dtype, max_bytes, memory_cache_bytes)
        ident = (str(Path(os.fspath(path)).expanduser().resolve()), *settings)
        with _REGISTRY_LOCK:
            store = _REGISTRY.get(ident)
            if store is None:
                store = _REGISTRY[ident] = cls(
                    ident[0],
                    dtype=settings[0],
                    max_bytes=settings[1],
                    memory_cache_bytes=settings[2],
                )
            return store

    def __repr__(self):
        args = [repr(None if self.path is None else str(self.path))]
        if self.dtype != "float32":
            args.append(f"dtype={self.dtype!r}")
        if self.max_bytes is not None:
            args.append(f"max_bytes={self.max_bytes}")
        return f"FeatureStore({', '.join(args)})"

    # A store is a handle to storage, not state: copies are the same handle.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        settings = (self.dtype, self.max_bytes, self.memory_cache_bytes)
        if self.path is not None:
            return _reopen, (str(self.path), *settings)
        with self._write_lock:
            entries = {ns: dict(e) for ns, e in self._backend.entries.items()}
            manifests = dict(self._backend.manifests)
        return _restore_memory, (*settings, entries, manifests)

    def lookup(self, namespace, keys, sites):
        """Fetch stored vectors of some sites for some keys.

        Parameters
        ----------
        namespace : str
            What computed the vectors (lower-case hex digest or similar).
        keys : sequence of str
            One key per row (an image's content hash); repeats are allowed.
        sites : sequence of str
            The sites wanted, e.g. ``["vision/l3/mean"]``.

        Returns
        -------
        vectors : dict of str to ndarray of shape (n_keys, n_features_site)
            float32 rows; rows of keys that miss are NaN. A site no key holds
            has 0 columns.
        hit : ndarray of bool of shape (n_keys,)
            True where every requested site is stored and intact for the key.
        """
        check_name(namespace, "namespace")
        keys = check_keys(keys)
        sites = [check_site(site) for site in dict.fromkeys(sites)]
        if not sites:
            raise ValueError("sites is empty: ask for at least one site.")
        rows, missing = {}, []
        get = self._cache.get if self._cache.max_bytes else lambda item: None
        for key in dict.fromkeys(keys):
            got = {}
            for site in sites:
                vector = get((namespace, key, site))
                if vector is not None:
                    got[site] = vector
            rows[key] = got
            if len(got) < len(sites):
                missing.append(key)
        if missing:
            self._read_missing(namespace, sites, rows, missing)
        return self._assemble(keys, sites, rows)

    def _read_missing(self, namespace, sites, rows, missing):
        budget = self._cache.max_bytes // 4
        n_missing = len(missing)

        def everything(entry_nbytes):
            # Decode the whole entry when all missed entries fit a quarter of the
            # cache: later lookups of the other sites then never touch the disk.
            return entry_nbytes * n_missing <= budget

        for key in missing:
            want = [site for site in sites if site not in rows[key]]
            try:
                found = self._backend.read(namespace, key, want, everything)
            except EntryDamaged as exc:
                self._report_damaged(exc)
                continue
            if not found:
                continue
            decoded = {site: decode(t) for site, t in found.items()}
            rows[key].update((s, decoded[s]) for s in want if s in decoded)
            for site, vector in decoded.items():
                self._cache_put(namespace, key, site, vector)

    def _cache_put(self, namespace, key, site, vector):
        vector.flags.writeable = False  # shared by later lookups: never mutated
        self._cache.put((namespace, key, site), vector, vector.nbytes)

    @staticmethod
    def _assemble(keys, sites, rows):
        shapes = {}
        for got in rows.values():
            for site, vector in got.items():
                shapes.setdefault(site, vector.shape)
        n = len(keys)
        hit = np.fromiter(
            (
                len(got) == len(sites) and all(got[s].shape == shapes[s] for s in sites)
                for got in map(rows.__getitem__, keys)
            ),
            dtype=bool,
            count=n,
        )
        vectors = {}
        for site in sites:
            shape = (n, *shapes.get(site, (0,)))
            if n and hit.all():  # the common case: one copy, into the result
                out = np.empty(shape, dtype=np.float32)
                np.stack([rows[key][site] for key in keys], out=out)
            else:
                out = np.full(shape, np.nan, dtype=np.float32)
                if hit.any():
                    out[hit] = np.stack(
                        [rows[key][site] for key, h in zip(keys, hit, strict=True) if h]
                    )
            vectors[site] = out
        return vectors, hit

    def write(self, namespace, keys, vectors, *, meta=None):
        """Store vectors, merging with the sites already stored for each key.

        Parameters
        ----------
        namespace : str
            What computed the vectors.
        keys : sequence of str
            Row ``i`` of every array belongs to ``keys[i]``. A repeated key is
            stored once; a row that is all NaN in some site (an item that failed
            to load) is not stored, so it is computed again next time.
        vectors : dict of str to array-like of shape (n_keys, n_features_site)
            The vectors of each site.
        meta : dict or None, default=None
            When given, recorded as the namespace's manifest (see
            :meth:`describe`).

        Raises
        ------
        FeatureStoreError
            The disk is full; the entry being written is not stored and the
            store is otherwise unchanged.
        """
        check_name(namespace, "namespace")
        keys = check_keys(keys)
        arrays = check_vectors(vectors, len(keys))
        if meta is not None:
            self.describe(namespace, meta)
        failed = np.zeros(len(keys), dtype=bool)
        for array in arrays.values():
            failed |= np.isnan(array).all(axis=1) & (array.shape[1] > 0)
        encoded = {site: encode_rows(a, self.dtype) for site, a in arrays.items()}
        items, seen = [], set()
        for i, key in enumerate(keys):
            if key not in seen and not failed[i]:
                seen.add(key)
                items.append((key, {site: rows[i] for site, rows in encoded.items()}))
        admit, skipped = self._admitter()
        with self._write_lock:
            written = set(
                self._backend.write(namespace, items, admit, self._report_damaged)
            )
        self._remember_written(namespace, items, written)
        if skipped[0]:
            self._warn_full(namespace, skipped[0])

    def _remember_written(self, namespace, items, written):
        # Written vectors are not put in the memory cache: decoding them costs
        # as much as the next lookup's read, and most are never asked for.
        with self._lock:
            for key, _ in items:
                if key in written:
                    self._warned_paths.discard((namespace, key))

    def _admitter(self):
        skipped = [0]
        if self.max_bytes is None:
            return (lambda nbytes: True), skipped
        with self._lock:
            now = time.monotonic()
            if self._used_bytes is None or now - self._used_at > _RESCAN_SECONDS:
                self._used_bytes = self._backend.total_bytes()
                self._used_at = now

        def admit(nbytes):
            with self._lock:
                if self._used_bytes + nbytes > self.max_bytes:
                    skipped[0] += 1
                    return False
                self._used_bytes += nbytes
                return True

        return admit, skipped

    def _warn_full(self, namespace, n_skipped):
        with self._lock:
            if self._full_warned:
                return
            self._full_warned = True
        warnings.warn(
            f"{self!r} reached max_bytes={self.max_bytes} (about {self._used_bytes} "
            f"bytes stored): {n_skipped} entries of namespace {namespace!r} were not "
            "stored. The features returned are correct but will be computed again "
            "next time. Raise max_bytes, clear() namespaces you no longer need, or "
            "use another directory. (Warned once per store object.)",
            FeatureStoreWarning,
            stacklevel=3,
        )

    def _report_damaged(self, exc):
        entry = (exc.path.parent.parent.name, exc.path.stem)  # (namespace, key)
        with self._lock:
            if entry in self._warned_paths:
                return
            self._warned_paths.add(entry)
        warnings.warn(
            f"Feature store entry {str(exc.path)!r} is damaged: {exc.reason}. It is "
            "treated as missing: its features are computed again and the entry is "
            "rewritten.",
            FeatureStoreWarning,
            stacklevel=4,
        )

    @contextlib.contextmanager
    def computing(self, namespace):
        """Hold ``namespace``'s compute lock while filling missing entries.

        Estimators take it before running a model on the entries a lookup
        missed, then look up again: whoever waited finds what the holder
        computed, so across the processes and threads sharing a store each image
        goes through the model once. It is separate from the lock writers take,
        so a holder can still write.

        Parameters
        ----------
        namespace : str

        Examples
        --------
        >>> from skvlm.store import FeatureStore
        >>> store = FeatureStore()
        >>> with store.computing("ns0"):
        ...     pass
        """
        check_name(namespace, "namespace")
        if self.path is not None:
            with self._compute_threads.setdefault(namespace, threading.Lock()):
                with self._backend._locked(namespace, lock_name=".compute.lock"):
                    yield
        else:
            with self._compute_threads.setdefault(namespace, threading.Lock()):
                yield

    def describe(self, namespace, meta):
        """Record what a namespace was computed with, for people reading the store.

        Stored as ``<path>/<namespace>/manifest.json`` (rewritten only when it
        changes) and shown by :meth:`info`. The store never reads it to decide
        anything: the namespace itself is the key.

        Parameters
        ----------
        namespace : str
            The namespace.
        meta : dict
            JSON-serialisable description (model id, revision, prompt, stage,
            ...); other values are stored as their ``str``.
        """
        check_name(namespace, "namespace")
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
        text = (
            json.dumps(
                {"namespace": namespace, "meta": dict(meta)},
                indent=2,
                sort_keys=True,
                default=str,
            )
            + "\n"
        )
        with self._write_lock:
            if self._described.get(namespace) != text:
                self._backend.describe(namespace, text)
                self._described[namespace] = text

    def info(self):
        """What the store holds.

        Returns
        -------
        dict
            ``path`` (str or None), ``dtype``, ``max_bytes``, ``entries`` and
            ``bytes`` (totals), ``namespaces`` (for each: ``entries``, ``bytes``,
            ``sites`` (sorted), ``manifest`` (what :meth:`describe` recorded, or
            None)) and ``memory_cache`` (``entries``, ``bytes``, ``max_bytes``).
            A disk store reads every entry's header: expect about a second per
            10 000 entries.
        """
        with self._write_lock:
            namespaces = self._backend.scan()
        cache = self._cache.stats()
        return {
            "path": None if self.path is None else str(self.path),
            "dtype": self.dtype,
            "max_bytes": self.max_bytes,
            "entries": sum(ns["entries"] for ns in namespaces.values()),
            "bytes": sum(ns["bytes"] for ns in namespaces.values()),
            "namespaces": namespaces,
            "memory_cache": cache,
        }

    def clear(self, namespace=None):
        """Delete the stored entries of one namespace, or of all of them.

        Parameters
        ----------
        namespace : str or None, default=None
            The namespace to delete; None deletes every namespace (the
            directory itself and its marker file stay).
        """
        if namespace is not None:
            check_name(namespace, "namespace")
        with self._write_lock:
            self._backend.clear(namespace)
            self._described.clear()
        self._cache.drop(namespace)
        with self._lock:
            self._used_bytes = None
            self._warned_paths.clear()

    def clear_memory_cache(self):
        """Drop the decoded vectors this process keeps; the storage is untouched."""
        self._cache.drop()
