"""CLIPZeroShotClassifier: classify images by similarity to class-name prompts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from numbers import Integral

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

from .._embedding import VLMEmbeddingTransformer
from .._inputs import ImageInputMixin
from .._sklearn_compat import HasMethods, Interval, fit_context
from ..models import load_adapter
from ._class_names import class_texts


class CLIPZeroShotClassifier(ImageInputMixin, ClassifierMixin, BaseEstimator):
    """Zero-shot image classification with a CLIP-style model (CLIP, SigLIP, ALIGN...).

    Each class is described by text prompts ("a photo of a {}."); an image is
    scored by the cosine similarity of its embedding with each class's text
    embedding, scaled by the model's own logit scale (and bias, for SigLIP).
    ``fit`` trains nothing: it records ``classes_`` and embeds the class prompts.

    Parameters
    ----------
    model : str or path-like, default="openai/clip-vit-base-patch32"
        A CLIP-style model (CLIP, SigLIP, SigLIP2, MetaCLIP 2, AIMv2, ALIGN,
        AltCLIP, Chinese-CLIP): hub id, local directory or shipped name
        (``"skvlm/tiny-clip"`` needs no download: a tiny demo model trained on
        digit images, whose use is noted once with an ``EmbeddedModelWarning``).
    class_names : mapping or sequence of str, default=None
        The text for each label: a dict ``{label: name}``, or a list aligned with
        the sorted labels. None uses ``str(label)``.
    templates : sequence of str, default=("a photo of a {}.",)
        Prompt templates with one ``{}`` for the class name. A class's text
        embedding is the mean of its L2-normalised template embeddings,
        normalised again (CLIP's prompt ensembling; the paper uses one template).
    batch_size : int, default=32
        Images per forward pass.
    device, dtype : str, default="auto"
        As for :class:`skvlm.VLMEmbeddingTransformer`.
    cache : None, str, path-like or FeatureStore, default=None
        Store for the image embeddings (see :class:`skvlm.FeatureStore`).
    progress : bool, default=False
        Show a progress bar over image batches.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``.
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``.
    class_texts_ : list of list of str
        The prompts of each class, after filling the templates.
    class_embeddings_ : ndarray of shape (n_classes, dim)
        The unit-norm text embedding of each class.
    logit_scale_ : float
        ``exp(logit_scale)`` of the model.
    logit_bias_ : float
        The model's logit bias (SigLIP), 0 for CLIP.

    Notes
    -----
    Classes whose prompts are the same once tokenized (names outside a small
    vocabulary all become the unknown token, and CLIP's tokenizer ignores
    case) would get the same text embedding, so only the first of them could
    ever be predicted: ``fit`` refuses them.

    ``predict_proba`` follows each model's training objective: CLIP's softmax
    over the class logits; for SigLIP, whose loss is a per-pair sigmoid, the
    sigmoid scores normalised to sum to one per image.

    Examples
    --------
    >>> from skvlm.classifiers import CLIPZeroShotClassifier
    >>> from skvlm.datasets import load_digit_images
    >>> digits = load_digit_images(n_per_class=5)
    >>> clf = CLIPZeroShotClassifier("skvlm/tiny-clip",
    ...                              class_names=digits.target_names,
    ...                              templates=["a photo of the digit {}."])
    >>> clf.fit(digits.images, digits.target).predict(digits.images[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "class_names": [Mapping, list, tuple, np.ndarray, None],
        "templates": [list, tuple, str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "dtype": "no_validation",
        "cache": [None, str, os.PathLike, HasMethods(["lookup", "write"])],
        "progress": ["boolean"],
        "model_kwargs": [dict, None],
        "image_column": [str],
    }

    def __init__(
        self,
        model="openai/clip-vit-base-patch32",
        *,
        class_names=None,
        templates=("a photo of a {}.",),
        batch_size=32,
        device="auto",
        dtype="auto",
        cache=None,
        progress=False,
        model_kwargs=None,
        image_column="image",
    ):
        self.model = model
        self.class_names = class_names
        self.templates = templates
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.progress = progress
        self.model_kwargs = model_kwargs
        self.image_column = image_column

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Record the classes and embed their prompts; no training.

        Parameters
        ----------
        X : collection of images
            Only its length is checked against ``y``.
        y : array-like of shape (n_samples,)
            Labels.

        Returns
        -------
        self : CLIPZeroShotClassifier
        """
        import torch

        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} images but y has {len(y)} labels.")
        classes = unique_labels(y)
        names = class_texts(self.class_names, classes)
        templates = (
            [self.templates]
            if isinstance(self.templates, str)
            else list(self.templates)
        )
        for template in templates:
            if template.count("{}") != 1:
                raise ValueError(
                    f"template {template!r} must contain exactly one '{{}}' for the "
                    "class name."
                )
        embedder = self._make_embedder()
        adapter = load_adapter(
            self.model,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self.model_kwargs,
            progress=self.progress,
        )
        if not hasattr(adapter, "encode_text"):
            raise ValueError(
                "CLIPZeroShotClassifier needs a CLIP-style model with a text encoder "
                "(CLIP, SigLIP, MetaCLIP 2, AIMv2, ALIGN, AltCLIP, Chinese-CLIP...); "
                f"{self.model!r} is a {adapter.family} model."
            )
        self._embedder = embedder.fit(None)
        self._check_tokenizes(adapter, classes, names)
        texts = [[t.format(name) for t in templates] for name in names]
        self._check_distinct(adapter, classes, names, texts)
        with torch.inference_mode():
            flat = adapter.encode_text([t for group in texts for t in group])
        flat = torch.nn.functional.normalize(flat, dim=-1).reshape(
            len(names), len(templates), -1
        )
        embeddings = torch.nn.functional.normalize(flat.mean(dim=1), dim=-1)
        self.classes_ = classes
        self.class_texts_ = texts
        self.class_embeddings_ = embeddings.cpu().numpy()
        self.logit_scale_, self.logit_bias_ = adapter.logit_params()
        self._probability = adapter.probability
        return self

    def decision_function(self, X):
        """The model's logits of each image against each class.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        logits : ndarray of shape (n_images, n_classes)
        """
        check_is_fitted(self)
        images = self._embedder_for_transform().transform(X)
        return self.logit_scale_ * images @ self.class_embeddings_.T + self.logit_bias_

    def predict_proba(self, X):
        """Class probabilities (softmax for CLIP, normalised sigmoids for SigLIP).

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
        """
        logits = self.decision_function(X)
        if getattr(self, "_probability", "softmax") == "sigmoid":
            scores = expit(logits)
            return scores / scores.sum(axis=1, keepdims=True)
        return softmax(logits, axis=1)

    def predict(self, X):
        """The class with the highest logit for each image.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        labels : ndarray of shape (n_images,)
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    # -- internals -------------------------------------------------------------------
    def _make_embedder(self):
        return VLMEmbeddingTransformer(
            self.model,
            stage="projector",
            pooling="pooler",
            normalize=True,
            batch_size=self.batch_size,
            device=self.device,
            dtype=self.dtype,
            cache=self.cache,
            progress=self.progress,
            model_kwargs=self.model_kwargs,
            image_column=self.image_column,
        )

    def _embedder_for_transform(self):
        # After unpickling, _embedder is rebuilt from the params (it holds no weights).
        if getattr(self, "_embedder", None) is None:
            self._embedder = self._make_embedder().fit(None)
        return self._embedder

    @staticmethod
    def _check_tokenizes(adapter, classes, names):
        tokenizer = adapter.processor.tokenizer
        empty = [
            (label, name)
            for label, name in zip(classes, names, strict=False)
            if not tokenizer(name, add_special_tokens=False)["input_ids"]
        ]
        if empty:
            raise ValueError(
                f"These class names tokenize to nothing, so every prompt of theirs is "
                f"the bare template: {empty[:10]}. Give them a visible name."
            )

    @staticmethod
    def _check_distinct(adapter, classes, names, texts):
        """Refuse classes whose prompts are the same token ids as another's."""
        tokenizer = adapter.processor.tokenizer
        groups = {}
        for label, name, prompts in zip(classes, names, texts, strict=True):
            ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
            label = label.item() if hasattr(label, "item") else label
            groups.setdefault(tuple(map(tuple, ids)), []).append(
                f"{label!r} ({name!r})"
            )
        clashes = {k: v for k, v in groups.items() if len(v) > 1}
        if not clashes:
            return
        ids, labels = next(iter(clashes.items()))
        tokens = tokenizer.convert_ids_to_tokens(list(ids[0]))
        unknown = tokenizer.unk_token
        why = (
            f" Words outside the model's vocabulary all become {unknown!r}."
            if unknown is not None and unknown in tokens
            else ""
        )
        listed = "; ".join(" and ".join(v) for v in list(clashes.values())[:5])
        raise ValueError(
            f"Classes {listed} get the same prompts once tokenized (e.g. "
            f"{tokens}), hence the same text embedding: the model cannot tell them "
            f"apart, and only the first could ever be predicted.{why} Give them "
            "names the model's tokenizer tells apart (class_names=...), or use a "
            "model with a larger vocabulary."
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_embedder", None)
        return state
