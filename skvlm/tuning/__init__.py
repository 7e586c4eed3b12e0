"""Fine-tune generative VLMs on classification data (the paper's fix), with peft."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__, {"._tuner": ["VLMClassificationTuner"]}
)
