"""Model families: one adapter per family, and the process-wide loaded-model registry."""

from ._base import STAGES, Adapter, Stack
from ._registry import (
    ModelNotFoundError,
    clear_model_cache,
    load_adapter,
    shipped_models,
    supported_families,
)

__all__ = [
    "Adapter",
    "ModelNotFoundError",
    "STAGES",
    "Stack",
    "clear_model_cache",
    "load_adapter",
    "shipped_models",
    "supported_families",
]
