"""Model families: one adapter per family, and the process-wide loaded-model registry."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._base": ["STAGES", "Adapter", "Stack"],
        "._registry": [
            "ModelNotFoundError",
            "clear_model_cache",
            "load_adapter",
            "shipped_models",
            "supported_families",
        ],
    },
)
