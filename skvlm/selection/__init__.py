"""Feature selection with random probes."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__, {"._random_probe": ["RandomProbeSelector"]}
)
