"""Classifiers built on VLMs and on their features."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._base": ["VLMClassifierMixin", "scores_to_proba"],
        "._generative": ["VLMGenerativeClassifier"],
        "._generative_text": ["answer_is_correct", "match_class_name"],
        "._linear_probe": ["LinearProbeClassifier"],
        "._probe_cv": ["LinearProbeCV"],
        "._templates": ["TEMPLATE_SETS", "get_templates"],
        "._zero_shot": ["CLIPZeroShotClassifier"],
    },
)
