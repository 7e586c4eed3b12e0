"""skvlm: scikit-learn estimators for vision-language models.

The main entry point is :class:`VLMEmbeddingTransformer`, which turns images into a
VLM's hidden states at a chosen stage, layer and pooling, inside any sklearn
Pipeline.

Public names are imported on first use (PEP 562), so ``import skvlm`` and
``skvlm --help`` do not pay for importing torch and transformers.
"""

from ._lazy import attach

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._embedding": ["VLMEmbeddingTransformer"],
        "._inputs": ["ImageLoadError"],
        "._site": ["Site"],
        "._text_embedding": ["VLMTextEmbeddingTransformer"],
        ".classifiers": [
            "CLIPZeroShotClassifier",
            "LinearProbeCV",
            "LinearProbeClassifier",
            "VLMGenerativeClassifier",
        ],
        ".models": ["ModelNotFoundError", "clear_model_cache"],
        ".probing": ["ProbeReport", "probe_layers"],
        ".store": ["FeatureStore", "FeatureStoreError", "FeatureStoreWarning"],
    },
    submodules=[
        "analysis",
        "classifiers",
        "cli",
        "datasets",
        "inspection",
        "metrics",
        "models",
        "pooling",
        "probing",
        "selection",
        "store",
        "testing",
        "tuning",
    ],
)
