"""The paper's class-frequency analysis: how often a class is named in a corpus
against how well a model classifies it."""

from ._class_frequency import class_frequency, tokenize
from ._frequency_report import (
    FrequencyAccuracyReport,
    frequency_accuracy_report,
    per_class_accuracy,
)

__all__ = [
    "FrequencyAccuracyReport",
    "class_frequency",
    "frequency_accuracy_report",
    "per_class_accuracy",
    "tokenize",
]
