"""Classifiers built on VLMs and on their features."""

from ._linear_probe import LinearProbeClassifier
from ._zero_shot import CLIPZeroShotClassifier

__all__ = ["CLIPZeroShotClassifier", "LinearProbeClassifier"]
