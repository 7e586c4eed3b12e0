"""VLMTextEmbeddingTransformer: a CLIP-style model's text embeddings as features."""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._sklearn_compat import Interval, fit_context
from .models import load_adapter

__all__ = ["VLMTextEmbeddingTransformer"]


def _texts(X, text_column):
    """The strings of X: a sequence or Series of str, or a DataFrame column."""
    if hasattr(X, "columns"):
        if text_column not in X.columns:
            raise ValueError(
                f"X is a DataFrame without a {text_column!r} column (columns: "
                f"{list(X.columns)[:10]}); pass text_column='<the text column>'."
            )
        X = X[text_column]
    if isinstance(X, str):
        raise TypeError(
            "X is one string; pass a list of texts (e.g. [text]), one row each."
        )
    texts = (
        list(np.asarray(X, dtype=object).ravel()) if hasattr(X, "shape") else list(X)
    )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"X[{i}] is a {type(text).__name__}, not a str: the text "
                "transformer embeds strings (use VLMEmbeddingTransformer for images)."
            )
    return texts


class VLMTextEmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Text embeddings of a CLIP-style model, in the space of its image embeddings.

    Each text becomes the model's ``get_text_features`` output (CLIP's
    projected end-of-text token, SigLIP's pooled head...): the vectors that
    :class:`skvlm.classifiers.CLIPZeroShotClassifier` compares images with, and
    that image-text retrieval ranks (:func:`skvlm.metrics.text_to_image_recall`).

    A transformer of its own rather than ``modality="text"`` on
    :class:`skvlm.VLMEmbeddingTransformer`: its X is strings, not images, and
    none of that estimator's site parameters (stage, layer, pooling, prompt,
    image column, a store keyed by pixels) means anything for text.

    Parameters
    ----------
    model : str or path-like, default="openai/clip-vit-base-patch32"
        A CLIP-style model (CLIP, SigLIP, SigLIP2, MetaCLIP 2, AIMv2, ALIGN,
        AltCLIP, Chinese-CLIP) with its text encoder: hub id, local directory or
        shipped name (``"skvlm/tiny-clip"``).
    batch_size : int, default=64
        Texts per forward pass. Results do not depend on it.
    normalize : bool, default=False
        L2-normalise each row (cosine similarity is then a dot product).
    device, dtype : str, default="auto"
        As for :class:`skvlm.VLMEmbeddingTransformer`.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``.
    text_column : str, default="text"
        The column holding the texts when X is a DataFrame.
    verbose : int, default=1
        0 silent; 1 or more shows a progress bar while the model loads.

    Attributes
    ----------
    family_ : str
        The adapter family serving the model.
    n_features_out_ : int
        Width of the text embeddings.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm import VLMTextEmbeddingTransformer
    >>> from skvlm.testing import make_tiny_clip
    >>> text = VLMTextEmbeddingTransformer(make_tiny_clip(tempfile.mkdtemp()), verbose=0)
    >>> text.fit_transform(["a photo of a cat.", "a photo of a dog."]).shape
    (2, 16)
    >>> text.get_feature_names_out()[:2]
    array(['text_0', 'text_1'], dtype=object)
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
        "device": "no_validation",
        "dtype": "no_validation",
        "model_kwargs": [dict, None],
        "text_column": [str],
        "verbose": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        model="openai/clip-vit-base-patch32",
        *,
        batch_size=64,
        normalize=False,
        device="auto",
        dtype="auto",
        model_kwargs=None,
        text_column="text",
        verbose=1,
    ):
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.model_kwargs = model_kwargs
        self.text_column = text_column
        self.verbose = verbose

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model (once per process) and check it has a text encoder.

        Parameters
        ----------
        X : ignored or sequence of str, default=None
        y : ignored

        Returns
        -------
        self : VLMTextEmbeddingTransformer
        """
        if X is not None:
            _texts(X, self.text_column)
        adapter = self._adapter()
        if not hasattr(adapter, "encode_text") or not hasattr(
            adapter.model, "get_text_features"
        ):
            raise ValueError(
                "VLMTextEmbeddingTransformer needs a CLIP-style model with a text "
                "encoder (CLIP, SigLIP, MetaCLIP 2, AIMv2, ALIGN, AltCLIP, "
                f"Chinese-CLIP...); {self.model!r} is a {adapter.family} model "
                "without one."
            )
        import torch

        with torch.inference_mode():  # the width, whatever the family calls it
            width = adapter.encode_text(["a"]).shape[1]
        self.family_ = adapter.family
        self.n_features_out_ = int(width)
        return self

    def transform(self, X):
        """Embed every text of X.

        Parameters
        ----------
        X : sequence or pandas Series of str, or DataFrame with ``text_column``

        Returns
        -------
        features : ndarray of shape (n_texts, ``n_features_out_``), float32
        """
        import torch

        check_is_fitted(self)
        texts = _texts(X, self.text_column)
        if not texts:
            return np.empty((0, self.n_features_out_), dtype=np.float32)
        with torch.inference_mode():
            out = self._adapter().encode_text(texts, batch_size=self.batch_size)
        out = out.cpu().numpy().astype(np.float32)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.where(norms == 0, 1, norms)
        return out

    def get_feature_names_out(self, input_features=None):
        """Output column names, ``text_{i}``.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        names : ndarray of str objects
        """
        check_is_fitted(self)
        return np.asarray(
            [f"text_{i}" for i in range(self.n_features_out_)], dtype=object
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        tags.requires_fit = True
        return tags

    def _adapter(self):
        return load_adapter(
            self.model,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self.model_kwargs,
            verbose=self.verbose,
        )
