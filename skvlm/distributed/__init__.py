"""Feature extraction on a Ray cluster, into a FeatureStore or Parquet.

``extract_features`` runs the very code of ``VLMEmbeddingTransformer`` (the
model registry, the family's adapter, the pooling functions and the store's
keys) inside a pool of Ray Data actors, each holding one copy of the model.
A store it fills serves later transforms, ``GridSearchCV`` and ``probe_layers``
on any machine that reads it, with no forward pass.

Ray is an optional dependency: ``pip install "skvlm[ray]"``. ``import skvlm``
never imports it.
"""

try:
    import ray  # noqa: F401
    import ray.data  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without Ray
    raise ImportError(
        "skvlm.distributed runs feature extraction on Ray Data, which is not "
        f'installed ({exc}). Install the extra: pip install "skvlm[ray]".'
    ) from exc

from ._ray import ExtractionResult, extract_features

__all__ = ["ExtractionResult", "extract_features"]
