"""CLIPZeroShotClassifier: classify images by similarity to class-name prompts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.multiclass import unique_labels

from .._deprecation import DEPRECATED
from .._embedding import VLMEmbeddingTransformer
from .._inputs import ImageInputMixin
from .._sklearn_compat import HasMethods, Hidden, Interval, StrOptions, fit_context
from ..callbacks import check_callbacks, notify
from ..models import load_adapter, user_stacklevel
from ._base import VLMClassifierMixin, batch_events_of
from ._class_names import class_texts
from ._templates import class_prompts, resolve_templates


class CLIPZeroShotClassifier(ImageInputMixin, VLMClassifierMixin, BaseEstimator):
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
    templates : str or sequence of str, default=("a photo of a {}.",)
        Prompt templates with one ``{}`` for the class name, or the name of a
        shipped set: ``"openai_imagenet"``, the 80 templates of CLIP's ImageNet
        evaluation (see :func:`skvlm.classifiers.get_templates`). A class's text
        embedding is the mean of its L2-normalised prompt embeddings,
        normalised again (CLIP's prompt ensembling; the paper uses one template).
    class_descriptions : dict, default=None
        ``{label or class name: [sentence, ...]}``: whole sentences describing a
        class (CuPL, Pratt et al. 2023), added to its template prompts and
        averaged with them. With ``templates=()`` the descriptions alone make
        the class embeddings (CuPL's "base"), and every class needs some.
    batch_size : int, default=32
        Images per forward pass.
    device, dtype : str, default="auto"
        As for :class:`skvlm.VLMEmbeddingTransformer`.
    cache : None, str, path-like or FeatureStore, default=None
        Store for the image embeddings (see :class:`skvlm.FeatureStore`).
    verbose : int, default=1
        0 silent; 1 a progress bar over the images that run through the model;
        2 also a line per batch. See :term:`verbose`.
    on_error : {"raise", "nan"}, default="raise"
        An image that cannot be read raises an error naming it, or (``"nan"``)
        gets a row of NaN in ``decision_function`` and ``predict_proba`` with a
        warning listing the failed indices (``predict`` has no label for it and
        raises).
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``.
    n_workers : int or "auto", default="auto"
        Threads preparing the next batches of images while the model runs, as
        for :class:`skvlm.VLMEmbeddingTransformer`. Results do not depend on it.
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.
    callbacks : list of callbacks, default=None
        Told ``on_fit_begin`` / ``on_fit_end`` around ``fit`` and
        ``on_batch_end`` after each batch of images (see
        :mod:`skvlm.callbacks`).
    progress : bool
        Deprecated alias of ``verbose``; warns, removed in 0.3.
    image_aspect : {"native", "pad"}, default="native"
        ``"native"``: each image goes to the processor as it is (resized and
        centre-cropped by it). ``"pad"``: padded to a square with the
        processor's ``image_mean`` first (LLaVA's ``--image_aspect_ratio pad``,
        :func:`skvlm._inputs.pad_to_square`), as the paper's fine-tuned LLaVA
        saw its images; nothing is cropped away.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``.
    class_texts_ : list of list of str
        The prompts of each class: the templates filled with its name, then
        its descriptions.
    class_embeddings_ : ndarray of shape (n_classes, dim)
        The unit-norm text embedding of each class.
    logit_scale_ : float
        ``exp(logit_scale)`` of the model.
    logit_bias_ : float
        The model's logit bias (SigLIP), 0 for CLIP.
    image_queries_ : int
        Image vectors per image in the joint space: 1, or BLIP-2's retrieval
        model's query count (an image's logit is then its best query's).

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
        "class_descriptions": [Mapping, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "dtype": "no_validation",
        "cache": [None, str, os.PathLike, HasMethods(["lookup", "write"])],
        "verbose": ["verbose"],
        "on_error": [StrOptions({"raise", "nan"})],
        "model_kwargs": [dict, None],
        "n_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "image_column": [str],
        "callbacks": [list, tuple, None],
        "progress": [Hidden(StrOptions({DEPRECATED})), "boolean"],
        "image_aspect": [StrOptions({"native", "pad"})],
    }

    def __init__(
        self,
        model="openai/clip-vit-base-patch32",
        *,
        class_names=None,
        templates=("a photo of a {}.",),
        class_descriptions=None,
        batch_size=32,
        device="auto",
        dtype="auto",
        cache=None,
        verbose=1,
        on_error="raise",
        model_kwargs=None,
        n_workers="auto",
        image_column="image",
        callbacks=None,
        progress=DEPRECATED,
        image_aspect="native",
    ):
        self.model = model
        self.class_names = class_names
        self.templates = templates
        self.class_descriptions = class_descriptions
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.verbose = verbose
        self.on_error = on_error
        self.model_kwargs = model_kwargs
        self.n_workers = n_workers
        self.image_column = image_column
        self.callbacks = callbacks
        self.progress = progress
        self.image_aspect = image_aspect

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
        verbose = self._verbose(warn=True)
        callbacks = check_callbacks(self.callbacks)
        notify(callbacks, "on_fit_begin", self, n_samples=len(X))
        classes = unique_labels(y)
        names = class_texts(self.class_names, classes)
        texts = class_prompts(self.templates, names, classes, self.class_descriptions)
        templates = resolve_templates(self.templates)
        if templates and all(n.strip().lstrip("-").isdigit() for n in names):
            warnings.warn(
                f"The class names are numbers ({names[:3]}...): the prompts read "
                f"{templates[0].format(names[0])!r}, which names nothing "
                "the text encoder can match to an image, so zero-shot accuracy stays "
                "near chance. Pass class_names: names in sorted label order, or a "
                "dict {label: name} such as {0: 'cat', 1: 'dog'}.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        embedder = self._make_embedder()
        adapter = load_adapter(
            self.model,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self.model_kwargs,
            verbose=verbose,
        )
        if not hasattr(adapter, "encode_text"):
            raise ValueError(
                "CLIPZeroShotClassifier needs a CLIP-style model with a text encoder "
                "(CLIP, SigLIP, MetaCLIP 2, AIMv2, ALIGN, AltCLIP, Chinese-CLIP, "
                "BLIP and BLIP-2 retrieval checkpoints...); "
                f"{self.model!r} is a {adapter.family} model."
            )
        self._embedder = embedder.fit(None)
        self._check_tokenizes(adapter, classes, names)
        self._check_distinct(adapter, classes, names, texts)
        with torch.inference_mode():
            flat = adapter.encode_text([t for group in texts for t in group])
        flat = torch.nn.functional.normalize(flat, dim=-1)
        # Each class's mean over its own prompts (their counts may differ).
        ends = np.cumsum([len(group) for group in texts])
        means = [
            flat[end - len(g) : end].mean(dim=0)
            for end, g in zip(ends, texts, strict=True)
        ]
        embeddings = torch.nn.functional.normalize(torch.stack(means), dim=-1)
        self.classes_ = classes
        self.class_texts_ = texts
        self.class_embeddings_ = embeddings.cpu().numpy()
        self.logit_scale_, self.logit_bias_ = adapter.logit_params()
        # image vectors per image: BLIP-2's retrieval model gives one per query
        self.image_queries_ = getattr(adapter, "image_queries", 1)
        self._probability = adapter.probability
        notify(callbacks, "on_fit_end", self, stopped_early=False)
        return self

    # decision_function (the logits), predict_proba (softmax for CLIP,
    # normalised sigmoids for SigLIP) and predict come from VLMClassifierMixin.
    @property
    def _proba_link(self):
        return getattr(self, "_probability", "softmax")

    def _class_scores(self, X):
        """The model's logits of each image against each class."""
        images = self._embedder_for_transform().transform(X)
        queries = getattr(self, "image_queries_", 1)
        if queries > 1:
            # an image is several query vectors; its score is the best query's
            vectors = images.reshape(len(images), queries, -1)
            vectors = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
            cosines = (vectors @ self.class_embeddings_.T).max(axis=1)
            return self.logit_scale_ * cosines + self.logit_bias_
        return self.logit_scale_ * images @ self.class_embeddings_.T + self.logit_bias_

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
            verbose=self._verbose(),
            on_error=self.on_error,
            model_kwargs=self.model_kwargs,
            n_workers=self.n_workers,
            image_column=self.image_column,
            callbacks=batch_events_of(self),
            image_aspect=self.image_aspect,
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
