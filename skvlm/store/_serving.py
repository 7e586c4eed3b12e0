"""Answer a request for site vectors from a store, computing only what it lacks.

The store does not know what computes a vector. A caller (the extraction path)
passes ``compute(rows)``, an iterator of ``(batch rows, {site: vectors})`` over
the rows it is given; rows it cannot compute (an unreadable image) are simply
not yielded and come back as NaN.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np


def open_store(cache):
    """The :class:`FeatureStore` behind a ``cache`` parameter.

    A path opens the process-wide store of that directory
    (:meth:`FeatureStore.open`); a store object is returned as is.

    Parameters
    ----------
    cache : str, os.PathLike or FeatureStore

    Returns
    -------
    FeatureStore

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.store import open_store
    >>> d = tempfile.mkdtemp()
    >>> open_store(d) is open_store(d)
    True
    """
    from ._store import FeatureStore

    if isinstance(cache, (str, os.PathLike)):
        return FeatureStore.open(cache)
    return cache


def compute_missing(store, namespace, keys, rows, sites, compute, *, meta, lock=True):
    """Compute and store ``sites`` for the ``rows`` whose entries lack them.

    One process or thread at a time computes a namespace's misses (``lock``):
    whoever waited looks again and finds the holder's work, so each image goes
    through the model once across everything sharing the store.

    Parameters
    ----------
    store : FeatureStore
    namespace : str
    keys : sequence of str or None
        The key of every row; only ``keys[i]`` for ``i`` in ``rows`` is read.
    rows : sequence of int
        Rows to look at.
    sites : sequence of str
        What a computed row must hold to count as stored.
    compute : callable
        ``compute(rows)`` yields ``(batch_rows, {site: ndarray (len(batch_rows), d)})``.
    meta : dict
        The namespace's manifest (see :meth:`FeatureStore.describe`).
    lock : bool, default=True
        False when the caller already hands each row to exactly one worker
        (Ray actors): the lock would only serialise them.

    Returns
    -------
    computed : list of int
        The rows that were missing and were handed to ``compute``.
    fallback : dict
        ``{row: {site: vector}}`` for rows computed but not kept by the store
        (its ``max_bytes`` guard): the caller still gets correct vectors.
    """
    fallback = {}
    if not len(rows):
        return [], fallback
    with store.computing(namespace) if lock else contextlib.nullcontext():
        _, hit = store.lookup(namespace, [keys[i] for i in rows], sites)
        missing = [rows[j] for j in np.flatnonzero(~hit)]
        if not missing:
            return missing, fallback
        for batch_rows, named in compute(missing):
            batch_keys = [keys[i] for i in batch_rows]
            store.write(namespace, batch_keys, named, meta=meta)
            _, kept = store.lookup(namespace, batch_keys, sites)
            for j in np.flatnonzero(~kept):
                fallback[batch_rows[j]] = {s: named[s][j] for s in sites}
    return missing, fallback


def serve(store, namespace, keys, sites, compute, *, fill_sites, meta):
    """The vectors of ``sites`` for every row, from the store or computed into it.

    Parameters
    ----------
    store : FeatureStore
    namespace : str
    keys : sequence of str or None
        One key per row; None for a row that cannot be computed (NaN out).
    sites : sequence of str
        The sites asked for.
    compute : callable
        As in :func:`compute_missing`; it must yield every site of ``fill_sites``.
    fill_sites : sequence of str
        What a computed row stores (a superset of ``sites``: what later requests
        may ask for).
    meta : dict
        The namespace's manifest.

    Returns
    -------
    vectors : dict of str to ndarray of shape (n_rows, d) or None
        float32; NaN rows where nothing could be served. None for a site that
        no row could give (its width is then unknown here).
    """
    n = len(keys)
    rows = [i for i, key in enumerate(keys) if key is not None]
    if not rows:
        return dict.fromkeys(sites)
    # The common case in a search: every requested site is stored already.
    found, hit = store.lookup(namespace, [keys[i] for i in rows], sites)
    fallback = {}
    if not hit.all():
        store.describe(namespace, meta)
        missing = [rows[j] for j in np.flatnonzero(~hit)]
        _, fallback = compute_missing(
            store, namespace, keys, missing, fill_sites, compute, meta=meta
        )
        # Read back even what was just computed, so a hit and a miss return the
        # same values (a float16 store rounds on write).
        found, hit = store.lookup(namespace, [keys[i] for i in rows], sites)
    out = {}
    for site in sites:
        width = found[site].shape[1] if hit.any() else None
        if width is None and fallback:
            width = len(next(iter(fallback.values()))[site])
        if width is None:
            out[site] = None
            continue
        block = np.full((n, width), np.nan, dtype=np.float32)
        served = [i for i, h in zip(rows, hit, strict=True) if h]
        block[served] = found[site][hit]
        for i, vectors in fallback.items():
            block[i] = vectors[site]
        out[site] = block
    return out
