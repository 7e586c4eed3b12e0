"""The features of some images at a site, read from a store a few rows at a time."""

from __future__ import annotations

from numbers import Integral

import numpy as np


class StoreFeatures:
    """A feature matrix whose rows are read from a feature store when indexed.

    Row ``i`` is the vector that ``site`` holds for ``keys[i]`` in
    ``namespace`` (several sites are concatenated in order, as a list of layers
    is by ``VLMEmbeddingTransformer``). Nothing is read until rows are asked
    for, and then only those rows, through :meth:`FeatureStore.lookup`: so
    ``LinearProbeClassifier`` trains on features of millions of images, a
    batch at a time, without holding them. Everywhere else it behaves as a
    read-only 2-D float32 array: ``shape``, ``dtype``, ``len``, numpy
    indexing of rows (an int, a slice, an int array in any order, a boolean
    mask, then optionally columns), and ``np.asarray(features)`` reads all
    rows into memory, which is what an estimator that cannot stream does.

    :meth:`skvlm.VLMEmbeddingTransformer.stored_features` builds one for the
    images of a collection (namespace, keys and sites of that transformer).

    Parameters
    ----------
    store : FeatureStore, str or path-like
        The store (a path opens the process-wide store of that directory).
    namespace : str
        The namespace the vectors were written under.
    keys : sequence of str
        One key per row; repeats are allowed.
    site : str or sequence of str
        The site (``"vision/l3/mean"``), or sites whose vectors are
        concatenated in that order.
    normalize : bool, default=False
        L2-normalise each row (after concatenation), as
        ``VLMEmbeddingTransformer(normalize=True)`` does.

    Attributes
    ----------
    sites : list of str
        The sites, in column order.
    shape : tuple of int
        ``(len(keys), n_features)``; the width comes from the first key's
        vectors, read when the object is made.
    dtype : numpy.dtype
        float32.

    Notes
    -----
    A key the store lacks is found when its row is read, and raises a
    ``ValueError`` naming the row and the key: fill the store first
    (``VLMEmbeddingTransformer.precompute``). Reads go through the store's
    memory cache (``memory_cache_bytes``), which keeps up to that many bytes
    of vectors for later reads: the memory a reader holds is its rows plus
    that bound.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.store import FeatureStore, StoreFeatures
    >>> store = FeatureStore()
    >>> vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> store.write("ns0", ["a", "b", "c", "d"], {"vision/l1/mean": vectors})
    >>> features = StoreFeatures(store, "ns0", ["d", "a", "c"], "vision/l1/mean")
    >>> features.shape
    (3, 3)
    >>> features[1:]
    array([[0., 1., 2.],
           [6., 7., 8.]], dtype=float32)
    >>> np.asarray(features)[0]
    array([ 9., 10., 11.], dtype=float32)
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, store, namespace, keys, site, *, normalize=False):
        from . import open_store

        sites = [site] if isinstance(site, str) else list(site)
        if not sites or not all(isinstance(s, str) and s for s in sites):
            raise ValueError(
                f"site must be a site name such as 'vision/l3/mean', or a list of "
                f"them; got {site!r}."
            )
        if isinstance(keys, str) or not hasattr(keys, "__len__"):
            raise TypeError(
                f"keys must be a sequence of str (one per row), got "
                f"{type(keys).__name__}."
            )
        for row, key in enumerate(keys):
            if not isinstance(key, str):
                raise ValueError(
                    f"keys[{row}] is {key!r}, not a key: every row needs the str "
                    "key its vectors were stored under (an image that could not "
                    "be read has none; leave it out)."
                )
        if len(keys) == 0:
            raise ValueError("keys is empty: give at least one row's key.")
        self.store = open_store(store)
        self.namespace = namespace
        self.keys = keys
        self.sites = sites
        self.normalize = bool(normalize)
        width = self._read(np.array([0])).shape[1]
        self.shape = (len(keys), width)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        site = self.sites[0] if len(self.sites) == 1 else self.sites
        return (
            f"StoreFeatures(namespace={self.namespace!r}, site={site!r}, "
            f"shape={getattr(self, 'shape', None)})"
        )

    def __getitem__(self, item):
        columns = None
        if isinstance(item, tuple):
            if len(item) != 2:
                raise IndexError(
                    f"StoreFeatures is 2-D; index it with rows or (rows, columns), "
                    f"not {len(item)} indices."
                )
            item, columns = item
        if isinstance(item, Integral) and not isinstance(item, bool):
            row = self._row_number(int(item))
            out = self._read(np.array([row]))[0]
            return out if columns is None else out[columns]
        if isinstance(item, slice):
            rows = np.arange(*item.indices(len(self)))
        else:
            rows = np.asarray(item)
            if rows.dtype == bool:
                if rows.shape != (len(self),):
                    raise IndexError(
                        f"a boolean row mask must have shape ({len(self)},), not "
                        f"{rows.shape}."
                    )
                rows = np.flatnonzero(rows)
            elif rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
                raise IndexError(
                    "StoreFeatures rows are chosen by an int, a slice, a 1-D int "
                    f"array or a boolean mask; got {item!r}."
                )
            rows = rows.astype(np.int64)
            outside = (rows < -len(self)) | (rows >= len(self))
            if outside.any():
                self._row_number(int(rows[outside][0]))  # raises, naming it
            rows = rows % len(self)
        out = self._read(rows)
        return out if columns is None else out[:, columns]

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError(
                "StoreFeatures reads its rows from the store: an array of them is "
                "always a copy (copy=False cannot be honoured)."
            )
        out = np.empty(self.shape, dtype=np.float32)
        step = max(1, 2**22 // max(1, self.shape[1]))  # 16 MiB of rows per lookup
        for start in range(0, len(self), step):
            stop = min(start + step, len(self))
            out[start:stop] = self._read(np.arange(start, stop))
        return out if dtype is None else out.astype(dtype, copy=False)

    def _row_number(self, row):
        n_rows = len(self.keys)
        if not -n_rows <= row < n_rows:
            raise IndexError(f"row {row} is out of range for {n_rows} rows.")
        return row % n_rows

    def _read(self, rows):
        """Rows ``rows`` (ints in range) as a float32 array of their own."""
        keys = [self.keys[row] for row in rows.tolist()]
        if not keys:
            return np.empty((0, self.shape[1]), dtype=np.float32)
        vectors, hit = self.store.lookup(self.namespace, keys, self.sites)
        if not hit.all():
            miss = int(np.flatnonzero(~hit)[0])
            raise ValueError(
                f"row {int(rows[miss])} (key {keys[miss]!r}) has no stored vector "
                f"for site {', '.join(map(repr, self.sites))} in namespace "
                f"{self.namespace!r} of {self.store!r}: fill the store first "
                "(VLMEmbeddingTransformer(..., cache=store).precompute(images))."
            )
        parts = [vectors[site] for site in self.sites]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.where(norms == 0, 1, norms)
        return out
