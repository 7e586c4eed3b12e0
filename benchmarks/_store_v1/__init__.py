"""skvlm's feature store as of format 1 (one safetensors file per image), frozen.

Kept only so that ``bench_store_scale.py`` can measure the old layout beside the
new one with the same public calls (``write``, ``lookup``). Not part of skvlm.
"""

from ._store import FeatureStore

__all__ = ["FeatureStore"]
