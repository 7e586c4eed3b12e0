"""Analyses over a model's features: the paper's class-frequency analysis (how
often a class is named in a corpus against how well a model classifies it) and
representation similarity between sites (CKA, RSA)."""

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
        "._similarity": ["cka", "rsa"],
        "._site_similarity": ["SiteSimilarity", "site_similarity"],
    },
)
