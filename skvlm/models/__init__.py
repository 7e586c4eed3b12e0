"""Model families: one adapter per family, and the process-wide loaded-model registry."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._base": ["STAGES", "Adapter", "Stack"],
        "._describe": ["describe_sites"],
        "._guards": [
            "DEFAULT_EMBEDDING_MODEL",
            "DEFAULT_GENERATIVE_MODEL",
            "DEFAULT_ZERO_SHOT_MODEL",
            "EmbeddedModelWarning",
            "check_device",
            "check_position",
            "checked_loading",
            "max_tokens",
            "note_shipped_model",
        ],
        "._registry": [
            "ModelNotFoundError",
            "adapter_class",
            "clear_model_cache",
            "load_adapter",
            "load_config",
            "resolve_model",
            "shipped_models",
            "supported_families",
        ],
    },
)
