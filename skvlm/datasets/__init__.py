"""Image data sets: scikit-learn's digits rendered as images, and users' own images.

Every loader returns a ``sklearn.utils.Bunch`` in the style of
``sklearn.datasets``: ``data`` (what ``VLMEmbeddingTransformer`` takes as ``X``),
``target`` (int labels), ``target_names`` (class names, ``target_names[target[i]]``
is image ``i``'s class), ``DESCR`` and, with ``as_frame=True``, ``frame``.

``load_paper_dataset`` (and ``load_imagenet``, ``load_flowers102``,
``load_stanford_cars``, ``load_caltech101``) read the four data sets of Zhang et
al. (2024) from torchvision's layout, a Hugging Face ``DatasetDict`` or the
paper's jsonl, with the paper's splits and class names.

``HFDatasetView`` wraps a Hugging Face ``datasets.Dataset`` so that
scikit-learn's cross-validation can split it.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._digits": ["DIGIT_NAMES", "load_digit_images"],
        "._files": ["IMAGE_EXTENSIONS", "load_image_csv", "load_image_folder"],
        "._paper": [
            "PAPER_DATASETS",
            "load_caltech101",
            "load_flowers102",
            "load_imagenet",
            "load_paper_dataset",
            "load_stanford_cars",
            "paper_class_names",
        ],
        "skvlm._inputs": ["HFDatasetView"],
    },
)
