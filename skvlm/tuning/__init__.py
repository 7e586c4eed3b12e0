"""Fine-tune generative VLMs on classification data (the paper's fix), with peft."""

from ._tuner import VLMClassificationTuner

__all__ = ["VLMClassificationTuner"]
