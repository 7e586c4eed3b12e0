"""Feature selection with random probes."""

from ._random_probe import RandomProbeSelector

__all__ = ["RandomProbeSelector"]
