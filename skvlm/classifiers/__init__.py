"""Classifiers built on VLMs and on their features."""

from ._generative import VLMGenerativeClassifier
from ._generative_text import answer_is_correct, match_class_name
from ._linear_probe import LinearProbeClassifier
from ._zero_shot import CLIPZeroShotClassifier

__all__ = [
    "CLIPZeroShotClassifier",
    "LinearProbeClassifier",
    "VLMGenerativeClassifier",
    "answer_is_correct",
    "match_class_name",
]
