"""The feature store: every site a forward pass computes, kept for later lookups.

:class:`FeatureStore` maps ``(namespace, key, site)`` to one float vector;
:func:`serve` and :func:`compute_missing` answer a request from the store and
compute only what it lacks, through a function the caller passes (the store
knows nothing about models).
"""

from ._errors import FeatureStoreError, FeatureStoreWarning
from ._features import StoreFeatures
from ._serving import compute_missing, open_store, serve
from ._store import FeatureStore

__all__ = [
    "FeatureStore",
    "FeatureStoreError",
    "FeatureStoreWarning",
    "StoreFeatures",
    "compute_missing",
    "open_store",
    "serve",
]
