"""Model families: one adapter per family, and the process-wide loaded-model registry.

Everything other packages of skvlm need from here is imported from this module;
its private modules are this package's own.
"""

from ._base import (
    LANGUAGE_POOLINGS,
    STAGES,
    TOKEN_POOLINGS,
    Adapter,
    Stack,
    language_masks,
    pool_token_lists,
)
from ._chat import DEFAULT_PROMPT, ChatPromptMixin
from ._loading import (
    MissingVideoProcessor,
    ModelNotFoundError,
    directory_digest,
    load_config,
    load_processor,
    load_processor_without_video,
    resolve_device,
    resolve_dtype,
    resolve_model,
    shipped_models,
    without_video_processor,
)
from ._registry import (
    adapter_class,
    clear_model_cache,
    load_adapter,
    supported_families,
)

__all__ = [
    "DEFAULT_PROMPT",
    "LANGUAGE_POOLINGS",
    "STAGES",
    "TOKEN_POOLINGS",
    "Adapter",
    "ChatPromptMixin",
    "MissingVideoProcessor",
    "ModelNotFoundError",
    "Stack",
    "adapter_class",
    "clear_model_cache",
    "directory_digest",
    "language_masks",
    "load_adapter",
    "load_config",
    "load_processor",
    "load_processor_without_video",
    "pool_token_lists",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
    "shipped_models",
    "supported_families",
    "without_video_processor",
]
