"""Model families: one adapter per family, and the process-wide loaded-model registry.

Everything other packages of skvlm need from here is imported from this module;
its private modules are this package's own. Names are imported on first use
(PEP 562), so ``import skvlm.models`` does not import torch.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._base": [
            "LANGUAGE_POOLINGS",
            "STAGES",
            "TOKEN_POOLINGS",
            "Adapter",
            "Stack",
            "language_masks",
            "pool_token_lists",
        ],
        "._chat": ["DEFAULT_PROMPT", "ChatPromptMixin"],
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
        "._loading": [
            "MissingVideoProcessor",
            "ModelNotFoundError",
            "directory_digest",
            "load_config",
            "load_processor",
            "load_processor_without_video",
            "resolve_device",
            "resolve_dtype",
            "resolve_model",
            "shipped_models",
            "without_video_processor",
        ],
        "._matrix": ["support_matrix"],
        "._registry": [
            "adapter_class",
            "clear_model_cache",
            "load_adapter",
            "supported_families",
        ],
        "._traits": ["TRAITS", "Traits", "derive_traits", "family_traits"],
    },
)
