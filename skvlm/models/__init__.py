"""Model families: one adapter per family, and the process-wide loaded-model registry.

Everything other packages of skvlm need from here is imported from this module;
its private modules are this package's own. ``__all__`` holds the public API
(families, shipped models, the adapter base for new families, the registry);
the helpers other skvlm packages use are reachable here too, but are not part
of it. Names are imported on first use
(PEP 562), so ``import skvlm.models`` does not import torch.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._base": ["STAGES", "Adapter", "Stack"],
        "._chat": ["DEFAULT_PROMPT", "ChatPromptMixin"],
        "._describe": ["describe_sites"],
        "._modules": ["capture_modules", "describe_modules", "match_modules"],
        "._guards": ["EmbeddedModelWarning"],
        "._loading": [
            "ModelNotFoundError",
            "directory_digest",
            "resolve_device",
            "resolve_dtype",
            "shipped_models",
        ],
        "._matrix": ["support_matrix"],
        "._registry": [
            "clear_model_cache",
            "load_adapter",
            "supported_families",
        ],
        "._traits": [
            "PACKED_TOWERS",
            "TRAITS",
            "Traits",
            "derive_traits",
            "family_traits",
        ],
    },
    # What skvlm's other packages (extraction, estimators, testing) use from
    # here; reachable as attributes, not part of the public API.
    internal={
        "._chat": ["text_ids"],
        "._tokens": ["valid_position_ids"],
        "._base": [
            "LANGUAGE_POOLINGS",
            "TOKEN_POOLINGS",
            "language_masks",
            "pool_token_lists",
        ],
        "._guards": [
            "DEFAULT_EMBEDDING_MODEL",
            "DEFAULT_GENERATIVE_MODEL",
            "DEFAULT_ZERO_SHOT_MODEL",
            "check_device",
            "check_position",
            "checked_loading",
            "max_tokens",
            "note_shipped_model",
            "user_stacklevel",
        ],
        "._loading": [
            "MissingVideoProcessor",
            "load_config",
            "load_processor",
            "load_processor_without_video",
            "resolve_model",
            "without_video_processor",
        ],
        "._registry": ["adapter_class"],
        "._traits": ["kwargs_target", "resolve_path"],
    },
)
