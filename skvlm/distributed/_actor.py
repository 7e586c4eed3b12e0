"""The Ray Data actor: one model per actor, the local transform's code per batch.

Nothing here computes a feature by itself. Keys, namespace, site names, the
forward passes and the store fill come from the extraction path
(``skvlm._extraction.Extraction``), the code a local ``transform`` and
``precompute`` run. So a vector from the cluster is the vector a local
transform would have stored.
"""

from __future__ import annotations

import numpy as np

from .._deprecation import DEPRECATED
from .._embedding import VLMEmbeddingTransformer
from .._extraction import Extraction
from ..store import open_store
from ._inputs import IMAGE, PROMPT

#: Outcome of each image, one row per image in the actor's output.
STORED, COMPUTED, FAILED, NOT_STORED = "stored", "computed", "failed", "not_stored"


class SiteExtractor:
    """Callable class for ``Dataset.map_batches``: every site of each image.

    Parameters
    ----------
    params : dict
        ``VLMEmbeddingTransformer`` parameters; ``cache`` is the store (path or
        disk FeatureStore) for ``to="store"`` and ignored for ``"parquet"``.
    to : {"store", "parquet"}
    num_threads : int or None
        Torch intra-op threads: the CPUs Ray reserved for this actor.
    """

    def __init__(self, params, to, num_threads=None):
        if num_threads:
            import torch

            torch.set_num_threads(max(1, int(num_threads)))
        params = {**params, "verbose": 0, "progress": DEPRECATED}
        if to != "store":
            params["cache"] = None
        self.to = to
        # fit checks the site (layer, pooling) exactly as a local transform does
        self.estimator = VLMEmbeddingTransformer(**params).fit(None)
        self.extraction = Extraction.from_params(
            self.estimator.get_params(deep=False), estimator=self.estimator
        )
        self.position = self.estimator.pooling_
        # The estimator's own sites; the store's keep setting decides what else
        # a pass keeps (as in a local precompute).
        self.asked = [(layer, self.position) for layer in self.estimator.layers_]
        self.requests = self.extraction.all_requests(self.position)
        self.sites = [
            self.extraction.site(lay, pool).store_name for lay, pool in self.requests
        ]

    def __call__(self, batch):
        items = [_item(value) for value in batch[IMAGE]]
        prompts = [str(p) for p in batch[PROMPT]] if PROMPT in batch else None
        if self.to == "store":
            return self._to_store(items, prompts)
        return self._to_table(items, prompts)

    def _to_store(self, items, prompts):
        extraction = self.extraction
        failed = []
        store = open_store(self.estimator.cache)
        space, meta = extraction.namespace(prompts)
        keys = extraction.keys(items, prompts, failed)
        store.describe(space, meta)
        rows = [i for i, key in enumerate(keys) if key is not None]
        status = np.full(len(items), FAILED, dtype=object)
        if rows:
            # Resume: the fill computes only the images whose kept sites are not
            # all stored (it checks entry headers, reading no vector).
            _, keys, computed, fallback = extraction.fill(
                store,
                items,
                prompts,
                failed,
                position=self.position,
                requests=self.asked,
                rows=rows,
                keys=keys,
                # The driver hands every image to exactly one actor: the compute
                # lock would only make N actors run as slowly as one.
                lock=False,
            )
            status[rows] = STORED
            status[computed] = COMPUTED
            status[list(fallback)] = NOT_STORED
        status[failed] = FAILED
        return {
            "image": np.array([_label(item) for item in items], dtype=object),
            "key": np.array([k or "" for k in keys], dtype=object),
            "status": status,
            "namespace": np.full(len(items), space, dtype=object),
        }

    def _to_table(self, items, prompts):
        import pyarrow as pa

        extraction = self.extraction
        failed = []
        space, _ = extraction.namespace(prompts)
        keys = extraction.keys(items, prompts, failed)
        rows = [i for i, key in enumerate(keys) if key is not None]
        done = np.zeros(len(items), dtype=bool)
        columns = {}
        for batch_rows, vectors in extraction.batches(
            items, prompts, self.requests, failed, rows=rows
        ):
            for request, site in zip(self.requests, self.sites, strict=True):
                block = columns.setdefault(
                    site,
                    np.zeros((len(items), vectors[request].shape[1]), np.float32),
                )
                block[batch_rows] = vectors[request]
            done[batch_rows] = True
        done[failed] = False
        table = {
            "image": pa.array([_label(item) for item in items], pa.string()),
            "key": pa.array(
                [k if d else None for k, d in zip(keys, done, strict=True)], pa.string()
            ),
            "namespace": pa.array([space] * len(items), pa.string()),
        }
        for (layer, _), site in zip(self.requests, self.sites, strict=True):
            # A batch whose images all failed still writes the common schema.
            (width,) = extraction.widths([layer])
            block = columns.get(site, np.zeros((len(items), width), np.float32))
            table[site] = pa.FixedSizeListArray.from_arrays(
                pa.array(block.ravel()), block.shape[1], mask=pa.array(~done)
            )
        return pa.table(table)


def _item(value):
    # Ray hands paths as numpy strings and bytes as numpy objects.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    return value


def _label(item):
    """What names an image in the output: its path, or None for bytes."""
    return item if isinstance(item, str) else None
