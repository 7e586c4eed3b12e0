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
from ._files import ReadOnly
from ._format import decode, encode_rows
from ._keep import check_keep, format_bytes, keep_repr
from ._keep import plan as _plan
from ._memory import _LRU, _MemoryBackend

__all__ = ["FeatureStore", "FeatureStoreError", "FeatureStoreWarning"]

_RESCAN_SECONDS = 30.0
_REGISTRY = {}
_REGISTRY_LOCK = threading.Lock()


def _reopen(path, dtype, max_bytes, memory_cache_bytes, keep="auto"):
    """Unpickle a disk store: the process's shared instance for its directory."""
    return FeatureStore.open(
        path,
        dtype=dtype,
        max_bytes=max_bytes,
        memory_cache_bytes=memory_cache_bytes,
        keep=keep,
    )


def _restore_memory(
    dtype, max_bytes, memory_cache_bytes, entries, manifests, keep="auto"
):
    """Unpickle a memory store: a new store holding a copy of the contents."""
    store = FeatureStore(
        None,
        dtype=dtype,
        max_bytes=max_bytes,
        memory_cache_bytes=memory_cache_bytes,
        keep=keep,
    )
    store._backend = _MemoryBackend(entries, manifests)
    return store


class FeatureStore:
    """Storage for the vectors of the sites a forward pass computes.

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
        How this store keeps vectors. ``"float16"`` halves the disk cost
        (relative error about 5e-4); a vector with a finite value beyond
        float16's range (65504) is kept in float32 instead. Lookups always
        return float32. Two stores on one directory may differ in dtype: each
        entry records its own.
    max_bytes : int or None, default=None
        Size bound of the stored entries. A fill whose estimate (see
        :meth:`plan`) would take the store past it is refused before the
        model runs, with a ``FeatureStoreError`` that lists the cheaper
        choices; a direct :meth:`write` past it is skipped with one
        ``FeatureStoreWarning`` per store object (the caller's features stay
        correct and are recomputed next time). Other processes' writes are
        counted when the store re-measures its directory (every 30 s at most).
    memory_cache_bytes : int, default=268435456
        Bound of the in-process LRU of decoded float32 vectors (256 MiB) that
        serves repeated lookups without reading or decoding entries again; 0
        disables it.
    keep : {"auto", "all", "requested"} or dict, default="auto"
        What a fill keeps of each forward pass, besides the sites asked for
        (always kept):

        - ``"all"``: every layer x every named pooling of the stage (and an
          asked int position at every layer): a later request at any site of
          the stage is a lookup.
        - ``"requested"``: only the sites asked for.
        - ``{"layers": [...], "poolings": [...]}``: those layers (negative
          count from the end) x those poolings; either may be ``"all"``.
        - ``"auto"``: ``"all"`` when the pass's sites take at most 1 MiB per
          image in this dtype (every vision tower up to ViT-L, SigLIP-so400m),
          otherwise the asked pooling at every layer (a 7B language stage:
          33 x 4096 floats instead of 33 x 5 x 4096).

        A site that was not kept is computed when first asked for, in a pass
        that keeps what ``keep`` says for that request.

    Attributes
    ----------
    path : pathlib.Path or None
        The absolute directory of a disk store.

    See Also
    --------
    FeatureStore.open : The shared instance for a directory.

    Notes
    -----
    On disk, each :meth:`write` of a batch of images becomes one pack file
    under ``<path>/<namespace>/packs/``: an index of its entries, then one
    entry per image, each a safetensors byte string holding the sites of that
    write with the namespace, the key and a CRC-32 per site in its metadata.
    No pickle is ever read. A pack is written under a temporary name and
    renamed into place (``os.replace``), so a crash never leaves a partial pack
    visible, and it is never modified afterwards: adding sites to an image
    writes a new entry in a new pack, so concurrent writers, in several
    processes or on several machines, never lose each other's sites. A
    ``packs.index`` file keeps the key index of the packs, so opening a store
    of millions of images reads one file. A lookup reads only the byte ranges
    of the requested sites (or the whole entry, when the entries fit the
    memory cache), so its memory grows with the rows asked, not with the
    store. A truncated, corrupt or misplaced entry is reported in a
    ``FeatureStoreWarning`` naming its file and treated as missing; it is
    never decoded into a vector. A full disk raises ``FeatureStoreError`` and
    leaves the store as it was. A store whose directory cannot be written
    serves what it holds and warns once that misses are computed without
    being stored.

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
        keep="auto",
    ):
        self.dtype, self.max_bytes, self.memory_cache_bytes = check_settings(
            dtype, max_bytes, memory_cache_bytes
        )
        self.keep = check_keep(keep)
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
        self._warned_paths = set()  # damaged entries reported
        self._described = {}  # namespace -> manifest text written by this object
        self._full_warned = False
        self._read_only = None  # the ReadOnly error once the directory refused a write
        self._compute_threads = {}  # namespace -> lock of the threads computing it
        self._used_bytes = None
        self._used_at = 0.0

    @classmethod
    def open(
        cls,
        path,
        *,
        dtype="float32",
        max_bytes=None,
        memory_cache_bytes=256 * 2**20,
        keep="auto",
    ):
        """The process-wide store for a directory, created at first use.

        Calls with the same resolved directory and settings return the same
        object, so its memory cache serves every estimator of the process (and
        each worker process, which reopens it when an estimator is unpickled).

        Parameters
        ----------
        path : str or os.PathLike
            Directory of the store.
        dtype, max_bytes, memory_cache_bytes, keep
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
        keep = check_keep(keep)
        ident = (
            str(Path(os.fspath(path)).expanduser().resolve()),
            *settings,
            keep_repr(keep),
        )
        with _REGISTRY_LOCK:
            store = _REGISTRY.get(ident)
            if store is None:
                store = _REGISTRY[ident] = cls(
                    ident[0],
                    dtype=settings[0],
                    max_bytes=settings[1],
                    memory_cache_bytes=settings[2],
                    keep=keep,
                )
            return store

    def __repr__(self):
        args = [repr(None if self.path is None else str(self.path))]
        if self.dtype != "float32":
            args.append(f"dtype={self.dtype!r}")
        if self.max_bytes is not None:
            args.append(f"max_bytes={self.max_bytes}")
        if self.keep != "auto":
            args.append(f"keep={keep_repr(self.keep)}")
        return f"FeatureStore({', '.join(args)})"

    # A store is a handle to storage, not state: copies are the same handle.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        settings = (self.dtype, self.max_bytes, self.memory_cache_bytes)
        keep = self.keep if isinstance(self.keep, str) else dict(self.keep)
        if self.path is not None:
            return _reopen, (str(self.path), *settings, keep)
        with self._write_lock:
            entries = {ns: dict(e) for ns, e in self._backend.entries.items()}
            manifests = dict(self._backend.manifests)
        return _restore_memory, (*settings, entries, manifests, keep)

    # -- reading -----------------------------------------------------------------------
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
            missing = self._read_missing(namespace, sites, rows, missing)
            # Keys this object has not seen may be in packs other writers added
            # since it last looked: look once more, then they are misses.
            if missing and self._backend.refresh(namespace, self._report_damaged):
                self._read_missing(namespace, sites, rows, missing)
        return self._assemble(keys, sites, rows)

    def _read_missing(self, namespace, sites, rows, missing):
        """Read what the memory cache lacked; return the keys still lacking sites."""
        budget = self._cache.max_bytes // 4
        n_missing = len(missing)

        def everything(entry_nbytes):
            # Decode the whole entry when all missed entries fit a quarter of the
            # cache: later lookups of the other sites then never touch the disk.
            return entry_nbytes * n_missing <= budget

        self._backend.prepare(namespace, self._report_damaged)
        still = []
        for key in missing:
            want = [site for site in sites if site not in rows[key]]
            found = self._backend.read(
                namespace, key, want, everything, self._report_damaged
            )
            if found:
                decoded = {site: decode(t) for site, t in found.items()}
                rows[key].update((s, decoded[s]) for s in want if s in decoded)
                for site, vector in decoded.items():
                    self._cache_put(namespace, key, site, vector)
            if len(rows[key]) < len(sites):
                still.append(key)
        return still

    def contains(self, namespace, keys, sites):
        """Whether each key holds every one of ``sites``, reading no vector.

        Cheaper than :meth:`lookup` when only the answer matters (reads entry
        headers only), as when deciding which images a fill must compute.

        Parameters
        ----------
        namespace : str
        keys : sequence of str
        sites : sequence of str

        Returns
        -------
        hit : ndarray of bool of shape (n_keys,)

        Examples
        --------
        >>> import numpy as np
        >>> from skvlm.store import FeatureStore
        >>> store = FeatureStore()
        >>> store.write("ns0", ["a1"], {"s": np.ones((1, 2))})
        >>> store.contains("ns0", ["a1", "b2"], ["s"])
        array([ True, False])
        """
        check_name(namespace, "namespace")
        keys = check_keys(keys)
        sites = [check_site(site) for site in dict.fromkeys(sites)]
        wanted = set(sites)

        def held(key):
            cached = {
                s for s in sites if self._cache.get((namespace, key, s)) is not None
            }
            if cached == wanted:
                return True
            return self._backend.sites_of(
                namespace, key, wanted - cached, self._report_damaged
            ) == (wanted - cached)

        self._backend.prepare(namespace, self._report_damaged)
        answers = {key: held(key) for key in dict.fromkeys(keys)}
        if not all(answers.values()) and self._backend.refresh(
            namespace, self._report_damaged
        ):
            answers.update({k: held(k) for k, v in answers.items() if not v})
        return np.fromiter((answers[k] for k in keys), dtype=bool, count=len(keys))

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

    # -- writing -----------------------------------------------------------------------
    def write(self, namespace, keys, vectors, *, meta=None):
        """Store vectors, adding to the sites already stored for each key.

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
            The disk is full; nothing of this write is stored and the store is
            otherwise unchanged.
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
        if not items or self._read_only is not None:
            return
        admit, skipped = self._admitter()
        # Written vectors are not put in the memory cache: decoding them costs
        # as much as the next lookup's read, and most are never asked for.
        try:
            with self._write_lock:
                self._backend.write(namespace, items, admit, self._report_damaged)
        except ReadOnly as exc:
            self._warn_read_only(exc)
            return
        if skipped[0]:
            self._warn_full(namespace, skipped[0])

    def _used(self):
        with self._lock:
            now = time.monotonic()
            if self._used_bytes is None or now - self._used_at > _RESCAN_SECONDS:
                self._used_bytes = self._backend.total_bytes()
                self._used_at = now
            return self._used_bytes

    def _admitter(self):
        skipped = [0]
        if self.max_bytes is None:
            return (lambda nbytes: True), skipped
        self._used()

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

    def _warn_read_only(self, exc):
        with self._lock:
            if self._read_only is not None:
                return
            self._read_only = exc
        warnings.warn(
            f"{self!r} cannot be written ({exc.error.strerror or exc.error} on "
            f"{str(exc.path)!r}): it serves the entries it holds, and computes "
            "misses without storing them, so they are computed again next time. "
            "To keep them, make the directory writable or use another path. "
            "(Warned once per store object.)",
            FeatureStoreWarning,
            stacklevel=4,
        )

    def _report_damaged(self, exc):
        entry = (str(exc.path), exc.what)
        with self._lock:
            if entry in self._warned_paths:
                return
            self._warned_paths.add(entry)
        warnings.warn(
            f"Feature store file {str(exc.path)!r} is damaged ({exc.what}): "
            f"{exc.reason}. What it held is treated as missing: those features are "
            "computed again and stored anew.",
            FeatureStoreWarning,
            stacklevel=4,
        )

    @contextlib.contextmanager
    def computing(self, namespace):
        """Hold ``namespace``'s compute lock while filling missing entries.

        Estimators take it before running a model on the entries a lookup
        missed, then look up again: whoever waited finds what the holder
        computed, so across the processes and threads sharing a store each image
        goes through the model once. It is separate from writing, so a holder
        can still write. A store whose directory cannot be written is computed
        into without the lock (see :class:`FeatureStore`).

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
        with self._compute_threads.setdefault(namespace, threading.Lock()):
            if self.path is None or self._read_only is not None:
                yield
                return
            try:
                held = self._backend.locked(namespace)
                held.__enter__()
            except ReadOnly as exc:
                self._warn_read_only(exc)
                yield
                return
            try:
                # The holder before us may have written: see its packs now.
                self._backend.refresh(namespace, self._report_damaged, force=True)
                yield
            finally:
                held.__exit__(None, None, None)

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
            if self._described.get(namespace) == text or self._read_only is not None:
                return
            try:
                self._backend.describe(namespace, text)
            except ReadOnly as exc:
                self._warn_read_only(exc)
                return
            self._described[namespace] = text

    # -- what a fill keeps -------------------------------------------------------------
    def plan(self, requested, available, width):
        """What a fill keeps of each image under this store's ``keep``, and its cost.

        The extraction path calls it before every fill: the sites it returns
        are what the forward pass computes and the store keeps.

        Parameters
        ----------
        requested : sequence of Site
            The sites asked for (always kept).
        available : sequence of Site
            Every site the pass can give (objects with ``layer``, ``pooling``
            and ``store_name``, such as :class:`skvlm.Site`).
        width : int
            Floats per site.

        Returns
        -------
        FillPlan
            ``requests`` (the chosen sites), ``sites`` (their store names),
            ``bytes_per_image``, ``nbytes(n_images)``, ``describe(n_images)``.

        Examples
        --------
        >>> from skvlm import Site
        >>> from skvlm.store import FeatureStore
        >>> poolings = ("last", "mean", "max", "image_mean", "text_mean")
        >>> every = [Site("language", layer, pooling)
        ...          for layer in range(33) for pooling in poolings]
        >>> asked = [Site("language", 16, "last")]
        >>> plan = FeatureStore(dtype="float16").plan(asked, every, 4096)
        >>> len(plan.sites), plan.bytes_per_image
        (33, 273836)
        >>> plan = FeatureStore(keep="requested").plan(asked, every, 4096)
        >>> plan.describe(50_000)
        "50000 images x 1 sites x 4096 float32 = about 834 MB (16.7 kB per image; keep='requested': the sites asked for)"
        """
        return _plan(self.keep, list(requested), list(available), width, self.dtype)

    def admit_fill(self, namespace, plan, n_images):
        """Refuse a fill that would take the store past ``max_bytes``.

        Parameters
        ----------
        namespace : str
        plan : FillPlan
        n_images : int
            Images the fill computes.

        Returns
        -------
        str
            The plan in words, for the caller to show.

        Raises
        ------
        FeatureStoreError
            The estimate, plus what is stored, passes ``max_bytes``; the message
            lists what the other choices would write.
        """
        text = f"{self.path or 'memory store'}, namespace {namespace[:12]}: " + (
            plan.describe(n_images)
        )
        if self.max_bytes is None or self._read_only is not None:
            return text
        need, used = plan.nbytes(n_images), self._used()
        if used + need <= self.max_bytes:
            return text
        options = "; ".join(
            f"{name} {format_bytes(n_images * nbytes)}"
            for name, nbytes in plan.options.items()
        )
        raise FeatureStoreError(
            f"This fill would write {plan.describe(n_images)} into {self!r}, "
            f"which holds {format_bytes(used)} already: that passes "
            f"max_bytes={self.max_bytes} ({format_bytes(self.max_bytes)}). Nothing "
            f"was computed. For these {n_images} images: {options}; "
            "dtype='float16' about halves each. Choose one (FeatureStore(path, keep=..., "
            "dtype=...)), raise max_bytes, clear() namespaces you no longer need, "
            "or use another directory."
        )

    # -- the whole store ---------------------------------------------------------------
    def check(self):
        """Raise ``FeatureStoreError`` if this store cannot work as a store.

        Estimators call it at ``fit`` so that a wrong ``cache`` fails there,
        not deep in ``transform``: a path that is a file, a directory that
        holds something else, an older format, a directory where a pack file
        belongs. A store that cannot be created (a read-only parent) raises
        too; an existing read-only store is fine (it serves its entries).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.store import FeatureStore
        >>> FeatureStore(tempfile.mkdtemp()).check()
        """
        if self.path is None:
            return
        self._backend.check()
        if not self.path.exists():
            try:
                self._backend._ensure_dirs(self.path)
            except ReadOnly as exc:
                raise FeatureStoreError(
                    f"The feature store {str(self.path)!r} cannot be created "
                    f"({exc.error.strerror or exc.error}): nothing could ever be "
                    "stored there. Choose a directory you can write to."
                ) from None

    def info(self):
        """What the store holds.

        Returns
        -------
        dict
            ``path`` (str or None), ``dtype``, ``keep``, ``max_bytes``,
            ``entries`` (distinct images) and ``bytes`` (totals), ``files``
            (pack files), ``namespaces`` (for each: ``entries``, ``bytes``,
            ``files``, ``sites`` (sorted), ``manifest`` (what :meth:`describe`
            recorded, or None)) and ``memory_cache`` (``entries``, ``bytes``,
            ``max_bytes``). A disk store reads the index of each namespace and
            the headers of the packs not in it yet.
        """
        with self._write_lock:
            namespaces = self._backend.scan(self._report_damaged)
        cache = self._cache.stats()
        return {
            "path": None if self.path is None else str(self.path),
            "dtype": self.dtype,
            "keep": self.keep if isinstance(self.keep, str) else dict(self.keep),
            "max_bytes": self.max_bytes,
            "entries": sum(ns["entries"] for ns in namespaces.values()),
            "bytes": sum(ns["bytes"] for ns in namespaces.values()),
            "files": sum(ns["files"] for ns in namespaces.values()),
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
