"""The feature store: the sites a forward pass computes, kept for later lookups.

:class:`FeatureStore` maps ``(namespace, key, site)`` to one float vector; its
``keep`` setting says which sites a pass keeps (:meth:`FeatureStore.plan`);
:func:`serve` and :func:`compute_missing` answer a request from the store and
compute only what it lacks, through a function the caller passes (the store
knows nothing about models).
"""

from ._errors import FeatureStoreError, FeatureStoreWarning
from ._features import StoreFeatures
from ._keep import AUTO_BYTES_PER_IMAGE, FillPlan
from ._serving import compute_missing, open_store, serve
from ._store import FeatureStore

__all__ = [
    "AUTO_BYTES_PER_IMAGE",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureStoreWarning",
    "FillPlan",
    "StoreFeatures",
    "compute_missing",
    "open_store",
    "serve",
]
