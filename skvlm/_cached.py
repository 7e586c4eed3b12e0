"""Serving VLMEmbeddingTransformer.transform from a FeatureStore.

A miss runs the model once for the image and stores *every* site of the stage
(every layer x every named pooling, plus an int position when one is asked), so a
later transform at another layer or pooling is a lookup. Keys cannot lie: the
namespace hashes the model's identity (path or id, revision, config, sampled
weight bytes), the preprocessing, the dtype, the stage and, where the stage reads
it, the formatted prompt; each key hashes the image's content (file bytes or
pixels), and a per-row prompt when there is one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import numpy as np

from ._inputs import ImageLoadError, image_key
from .models._registry import fingerprint
from .pooling import is_position, pooling_label

#: Bump when what a site means changes, so old stores are never served.
SITE_VERSION = 1


def site_name(stage, layer, pooling):
    """The store's name of one site, e.g. ``vision/l3/mean``."""
    return f"{stage}/l{layer}/{pooling_label(pooling)}"


def open_store(cache):
    """The FeatureStore behind a ``cache`` parameter (one shared object per path)."""
    from .store import FeatureStore

    if isinstance(cache, (str, os.PathLike)):
        return FeatureStore.open(cache)
    return cache


def _reads_prompt(estimator, adapter):
    return estimator.stage in getattr(adapter, "prompt_stages", ("language",))


def namespace(estimator, adapter, row_prompts):
    """(namespace hex digest, human-readable manifest) of the estimator's stage."""
    prompt = None
    if _reads_prompt(estimator, adapter):
        prompt = (
            "<per-row>"
            if row_prompts is not None
            else adapter.format_prompt(estimator.prompt)
        )
    meta = {
        "model": str(estimator.model),
        "family": adapter.family,
        "stage": estimator.stage,
        "prompt": prompt,
        "dtype": str(adapter.dtype),
        "revision": getattr(adapter, "source", {}).get("revision"),
    }
    identity = {
        **meta,
        # The resolved path, so "./m" and "/abs/m" share entries; the manifest
        # keeps the spelling the user typed.
        "model": getattr(adapter, "source", {}).get("path", str(estimator.model)),
        "fingerprint": fingerprint(adapter),
        "preprocessing": adapter.preprocessing_config(),
        "site_version": SITE_VERSION,
    }
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest(), meta


def _keys(estimator, adapter, items, row_prompts, failed):
    keys = [None] * len(items)
    per_row = row_prompts is not None and _reads_prompt(estimator, adapter)
    for i, item in enumerate(items):
        try:
            key = image_key(item, i)
        except ImageLoadError:
            if estimator.on_error == "raise":
                raise
            failed.append(i)
            continue
        if per_row:
            text = adapter.format_prompt(row_prompts[i]).encode()
            key = hashlib.sha1(key.encode() + b"\0" + text).hexdigest()
        keys[i] = key
    return keys


def _all_requests(estimator, adapter):
    n_layers = adapter.n_layers(estimator.stage)
    requests = [
        (layer, pooling)
        for layer in range(n_layers)
        for pooling in adapter.poolings(estimator.stage, layer)
    ]
    if is_position(estimator.pooling_):
        # Every layer, not only the ones asked: a grid over layers at this position
        # then runs the model once more in all, instead of once more per layer.
        requests += [(layer, estimator.pooling_) for layer in range(n_layers)]
    return requests


def open_request(estimator, adapter, items, row_prompts, failed):
    """(store, namespace, manifest, keys) of a transform; unreadable rows get key None."""
    store = open_store(estimator.cache)
    space, meta = namespace(estimator, adapter, row_prompts)
    keys = _keys(estimator, adapter, items, row_prompts, failed)
    return store, space, meta, keys


def fill(estimator, adapter, items, row_prompts, failed, *, progress=None):
    """Compute and store every site the store lacks for ``items``.

    Returns ``(store, namespace, keys, fallback)``: ``keys[i]`` is None for a row
    that could not be read; ``fallback`` maps a row to its vectors by site when
    the store declined to keep them (its size guard).
    """
    store, space, meta, keys = open_request(
        estimator, adapter, items, row_prompts, failed
    )
    store.describe(space, meta)
    rows = [i for i, key in enumerate(keys) if key is not None]
    fallback = _compute_missing(
        estimator,
        adapter,
        items,
        row_prompts,
        failed,
        store,
        space,
        meta,
        keys,
        rows,
        progress,
    )
    return store, space, keys, fallback


def _compute_missing(
    estimator,
    adapter,
    items,
    row_prompts,
    failed,
    store,
    space,
    meta,
    keys,
    rows,
    progress=None,
    lock=True,
):
    requests = _all_requests(estimator, adapter)
    sites = [site_name(estimator.stage, layer, pooling) for layer, pooling in requests]
    fallback = {}
    if not rows:
        return fallback
    # One process at a time computes a namespace's misses; whoever waited looks
    # again and finds the holder's work, so each image runs through the model once.
    # lock=False: the caller coordinates (Ray actors write disjoint images).
    with store.computing(space) if lock else contextlib.nullcontext():
        _, hit = store.lookup(space, [keys[i] for i in rows], sites)
        missing = [rows[j] for j in np.flatnonzero(~hit)]
        for batch_rows, vectors in estimator._batches(
            adapter,
            items,
            row_prompts,
            requests,
            failed,
            subset=missing,
            progress=progress,
        ):
            batch_keys = [keys[i] for i in batch_rows]
            named = {
                site_name(estimator.stage, layer, pooling): v
                for (layer, pooling), v in vectors.items()
            }
            store.write(space, batch_keys, named, meta=meta)
            _, kept = store.lookup(space, batch_keys, sites)
            for j in np.flatnonzero(~kept):
                fallback[batch_rows[j]] = {s: named[s][j] for s in sites}
    for i in failed:
        keys[i] = None
    return fallback


def transform(estimator, adapter, items, row_prompts, failed):
    """The requested site of every row, served from (and filling) the store."""
    store, space, meta, keys = open_request(
        estimator, adapter, items, row_prompts, failed
    )
    sites = [
        site_name(estimator.stage, layer, estimator.pooling_)
        for layer in estimator.layers_
    ]
    rows = [i for i, key in enumerate(keys) if key is not None]
    out = np.full((len(items), estimator.n_features_out_), np.nan, dtype=np.float32)
    if not rows:
        return out
    # The common case in a search: every requested site is stored already.
    vectors, hit = store.lookup(space, [keys[i] for i in rows], sites)
    fallback = {}
    if not hit.all():
        store.describe(space, meta)
        missing = [rows[j] for j in np.flatnonzero(~hit)]
        fallback = _compute_missing(
            estimator,
            adapter,
            items,
            row_prompts,
            failed,
            store,
            space,
            meta,
            keys,
            missing,
        )
        # Read back even what was just computed, so a hit and a miss return the
        # same values (a float16 store rounds on write).
        rows = [i for i, key in enumerate(keys) if key is not None]
        vectors, hit = store.lookup(space, [keys[i] for i in rows], sites)
    block = np.concatenate([vectors[s] for s in sites], axis=1)
    for j, i in enumerate(rows):
        if hit[j]:
            out[i] = block[j]
        elif i in fallback:
            out[i] = np.concatenate([fallback[i][s] for s in sites])
    return out


def log_forward(items, rows):
    """Append the content keys of images run through a model to $SKVLM_FORWARD_LOG.

    A diagnostic for counting forward passes across processes (tests use it to
    check that a grid search runs each image once); off unless the variable is set.
    """
    path = os.environ.get("SKVLM_FORWARD_LOG")
    if not path:
        return
    lines = "".join(f"{image_key(items[i], i)}\n" for i in rows)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, lines.encode())  # one O_APPEND write: lines never interleave
    finally:
        os.close(fd)
