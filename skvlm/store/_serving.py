"""Answer a request for site vectors from a store, computing only what it lacks.

The store does not know what computes a vector. A caller (the extraction path)
passes ``compute(rows)``, an iterator of ``(batch rows, {site: vectors})`` over
the rows it is given; rows it cannot compute (an unreadable image) are simply
not yielded and come back as NaN.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import numpy as np

from ._keep import FillPlan

logger = logging.getLogger("skvlm.store")


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


def compute_missing(
    store, namespace, keys, rows, plan, compute, *, meta, lock=True, show=False
):
    """Compute and store the sites of ``plan`` for the ``rows`` whose entries lack them.

    One process or thread at a time computes a namespace's misses (``lock``):
    whoever waited looks again and finds the holder's work, so each image goes
    through the model once across everything sharing the store. Before the
    model runs, the bytes the fill will write are estimated: logged (logger
    ``skvlm.store``, level INFO), printed when ``show``, and checked against
    the store's ``max_bytes`` (:meth:`FeatureStore.admit_fill`).

    Parameters
    ----------
    store : FeatureStore
    namespace : str
    keys : sequence of str or None
        The key of every row; only ``keys[i]`` for ``i`` in ``rows`` is read.
    rows : sequence of int
        Rows to look at.
    plan : FillPlan or sequence of str
        What a computed row must hold to count as stored (a plan from
        :meth:`FeatureStore.plan`, or site names).
    compute : callable
        ``compute(rows)`` yields ``(batch_rows, {site: ndarray (len(batch_rows), d)})``
        with at least the plan's sites.
    meta : dict
        The namespace's manifest (see :meth:`FeatureStore.describe`).
    lock : bool, default=True
        False when the caller already hands each row to exactly one worker
        (Ray actors): the lock would only serialise them.
    show : bool, default=False
        Print the estimate to stderr (with the progress bars).

    Returns
    -------
    computed : list of int
        The rows that were missing and were handed to ``compute``.
    fallback : dict
        ``{row: {site: vector}}`` for rows computed but not kept by the store
        (its ``max_bytes`` guard, or a directory it cannot write): the caller
        still gets correct vectors.
    """
    sites = list(plan.sites if isinstance(plan, FillPlan) else plan)
    fallback = {}
    if not len(rows):
        return [], fallback
    with store.computing(namespace) if lock else contextlib.nullcontext():
        hit = store.contains(namespace, [keys[i] for i in rows], sites)
        missing = [rows[j] for j in np.flatnonzero(~hit)]
        if not missing:
            return missing, fallback
        if isinstance(plan, FillPlan):
            text = store.admit_fill(namespace, plan, len(missing))
            logger.info("skvlm store fill: %s", text)
            if show:
                print(f"skvlm store fill: {text}", file=sys.stderr, flush=True)
        for batch_rows, named in compute(missing):
            batch_keys = [keys[i] for i in batch_rows]
            kept_sites = {s: named[s] for s in sites}
            store.write(namespace, batch_keys, kept_sites, meta=meta)
            kept = store.contains(namespace, batch_keys, sites)
            for j in np.flatnonzero(~kept):
                fallback[batch_rows[j]] = {s: named[s][j] for s in sites}
    return missing, fallback


def serve(store, namespace, keys, sites, compute, *, plan, meta, show=False):
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
        As in :func:`compute_missing`; it must yield every site of ``plan``.
    plan : FillPlan or sequence of str
        What a computed row stores (a superset of ``sites``: what later requests
        may ask for), from :meth:`FeatureStore.plan`.
    meta : dict
        The namespace's manifest.
    show : bool, default=False
        Print the fill's estimate to stderr.

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
            store, namespace, keys, missing, plan, compute, meta=meta, show=show
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
