"""The paper's class-frequency analysis: how often a class is named in a corpus
against how well a model classifies it."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._class_frequency": ["class_frequency", "tokenize"],
        "._frequency_report": [
            "FrequencyAccuracyReport",
            "frequency_accuracy_report",
            "per_class_accuracy",
        ],
    },
)
