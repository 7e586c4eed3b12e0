"""skvlm: scikit-learn estimators for vision-language models.

The main entry point is :class:`VLMEmbeddingTransformer`, which turns images into a
VLM's hidden states at a chosen stage, layer and pooling, inside any sklearn
Pipeline.
"""

from ._embedding import VLMEmbeddingTransformer
from ._inputs import ImageLoadError
from ._site import Site
from .classifiers import (
    CLIPZeroShotClassifier,
    LinearProbeClassifier,
    VLMGenerativeClassifier,
)
from .models import ModelNotFoundError, clear_model_cache
from .probing import ProbeReport, probe_layers
from .store import FeatureStore, FeatureStoreError, FeatureStoreWarning

__version__ = "0.1.0"

__all__ = [
    "CLIPZeroShotClassifier",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureStoreWarning",
    "ImageLoadError",
    "LinearProbeClassifier",
    "ModelNotFoundError",
    "ProbeReport",
    "Site",
    "VLMEmbeddingTransformer",
    "VLMGenerativeClassifier",
    "clear_model_cache",
    "probe_layers",
]
