"""Image data sets: scikit-learn's digits rendered as images, and users' own images.

Every loader returns a ``sklearn.utils.Bunch`` in the style of
``sklearn.datasets``: ``data`` (what ``VLMEmbeddingTransformer`` takes as ``X``),
``target`` (int labels), ``target_names`` (class names, ``target_names[target[i]]``
is image ``i``'s class), ``DESCR`` and, with ``as_frame=True``, ``frame``.

``HFDatasetView`` wraps a Hugging Face ``datasets.Dataset`` so that
scikit-learn's cross-validation can split it.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._digits": ["DIGIT_NAMES", "load_digit_images"],
        "._files": ["IMAGE_EXTENSIONS", "load_image_csv", "load_image_folder"],
        "skvlm._inputs": ["HFDatasetView"],
    },
)
