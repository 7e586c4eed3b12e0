"""VLMEmbeddingTransformer: a VLM's hidden states at one site as a sklearn transformer."""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._deprecation import DEPRECATED, renamed_verbose, resolve_verbose
from ._extraction import Extraction
from ._inputs import ImageInputMixin, as_items
from ._module_extraction import ModuleExtraction
from ._site import STAGES, Site, resolve_layers
from ._sklearn_compat import HasMethods, Hidden, Interval, StrOptions, fit_context
from .callbacks import check_callbacks, notify
from .models import check_position
from .pooling import POOLINGS, is_position, pooling_label
from .store import StoreFeatures, open_store


class VLMEmbeddingTransformer(ImageInputMixin, TransformerMixin, BaseEstimator):
    """Hidden states of a vision-language model at one site, as features.

    A site is a (stage, layer, pooling) triple: where in the model the features
    come from, which layer of that stage's stack, and how the token sequence
    becomes one vector. The model is loaded once per process and shared by every
    clone (as ``GridSearchCV`` makes them); it is never pickled with the
    estimator.

    Parameters
    ----------
    model : str or path-like, default="openai/clip-vit-base-patch32"
        A Hugging Face model id, a local directory in ``save_pretrained`` layout,
        or the name of a model shipped with skvlm (``"skvlm/tiny-clip"``,
        ``"skvlm/tiny-llava"``: tiny demo models trained on digit images, which
        need no download; using one is noted once with an
        ``EmbeddedModelWarning``).
    stage : {"vision", "projector", "language"}, default="vision"
        ``vision``: the vision tower's hidden states (layer 0 = patch embeddings,
        k = after block k). ``projector``: the projected image embedding (CLIP
        ``image_embeds``, SigLIP's pooled head; for generative VLMs the visual
        tokens after the projector). ``language``: the language model's hidden
        states over the prompt with the image merged in (generative VLMs).
    layer : int or list of int, default=-1
        Index into the stage's stack, negative counting from the end. A list
        concatenates the features of several layers in that order.
    pooling : str or int, default="auto"
        How the token sequence becomes one vector: ``cls``, ``pooler`` (the
        model's own pooled output, last layer only), ``mean`` and ``max`` (over
        patch tokens at the vision stage, CLS excluded; over all valid tokens at
        the language stage), ``last``, ``image_mean``, ``text_mean``, or an int
        token position (negative from the end). ``"auto"`` picks the stage's
        natural choice (``cls`` if the tower has a CLS token, else ``mean``;
        ``pooler`` at the projector; ``last`` at the language stage). Asking for a
        pooling the stage lacks raises an error listing those it has.
    prompt : str, default=None
        The instruction for the language stage; None uses the paper's "What type
        of object is in this photo?". A DataFrame ``prompt`` column overrides it
        per row. Ignored by the vision and projector stages.
    batch_size : int, default=32
        Images per forward pass. Results do not depend on it.
    device : str or torch.device, default="auto"
        ``"auto"`` picks cuda, then mps, then cpu.
    dtype : str or torch.dtype, default="auto"
        Model weights' dtype; ``"auto"`` is bfloat16 on cuda, float32 elsewhere.
        The output is float32 whatever this is.
    normalize : bool, default=False
        L2-normalise each output row.
    cache : None, str, path-like or FeatureStore, default=None
        Where to keep the sites of every image the model has seen, so that
        later transforms at those sites run no forward pass (see
        :class:`skvlm.FeatureStore`; its ``keep`` setting says which sites a
        pass keeps). A path opens a store in that directory with the default
        settings. Checked at ``fit``.
    verbose : int, default=1
        0 silent; 1 a progress bar over the images that run through the model
        (none when the store serves them all); 2 also a line per batch and
        transformers' weight-loading bar. See :term:`verbose`.
    on_error : {"raise", "nan"}, default="raise"
        What to do with an image that cannot be read: raise an error naming it,
        or return a row of NaN for it and warn once listing the failed indices.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``: ``revision``, ``device_map``,
        ``quantization_config``, ``attn_implementation``, ``trust_remote_code``
        (False unless given here).
    n_workers : int or "auto", default="auto"
        Threads that decode and preprocess the next batches while the model
        runs the current one, so a GPU is not kept waiting; 0 does everything
        in the calling thread. ``"auto"``: on a GPU, one fewer than the
        machine's CPUs (at most 8); on the CPU, 0 (the forward pass already uses
        every core). Results do not depend on it.
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.
    callbacks : list of callbacks, default=None
        Told ``on_fit_begin`` / ``on_fit_end`` around ``fit`` and
        ``on_batch_end`` after each batch of images that ran through the model
        (with the images' content ``keys``); see :mod:`skvlm.callbacks`.
    progress : bool
        Deprecated alias of ``verbose`` (``True`` is ``verbose=1``); warns with
        a ``FutureWarning``, removed in 0.3.
    image_aspect : {"native", "pad"}, default="native"
        ``"native"``: each image goes to the processor as it is (resized and
        centre-cropped by it). ``"pad"``: padded to a square with the
        processor's ``image_mean`` first (LLaVA's ``--image_aspect_ratio pad``,
        :func:`skvlm._inputs.pad_to_square`), as the paper's fine-tuned LLaVA
        saw its images; nothing is cropped away.
    module : str or list of str, default=None
        Read the output of named modules instead of the stage's stack (a
        *module site*): a glob over the dotted names of the model's
        ``named_modules()`` (``"*.layers.1.mlp"``; list them with ``skvlm sites
        MODEL --modules``), or a list of globs. Each matched module, in
        ``named_modules()`` order, gives one block of columns, like a list of
        layers; ``layer`` is then ignored. The modules are read by forward
        hooks during the pass of ``stage``, whose masks pool them: a module
        whose output is one vector per token of that stage takes every pooling
        of the stage but ``pooler``; one whose output is one vector per image
        is taken as it is. A tuple output gives its element 0 (HF blocks return
        ``(hidden_states, ...)``), and a module called several times in a pass
        is read at its first call. ``fit`` runs one pass on a blank image to
        learn the modules' widths. Cached in the store like any site, under a
        namespace that includes the module names.

    Attributes
    ----------
    family_ : str
        The adapter family serving the model (``"clip"``, ``"siglip"``...).
    layers_ : list of int
        The requested layers as non-negative indices.
    pooling_ : str or int
        The pooling after resolving ``"auto"``.
    n_layers_ : int
        Number of entries in the stage's stack.
    n_features_out_ : int
        Number of output columns.
    layer_widths_ : list of int
        Width of each requested layer's block of columns, in order (all equal
        but in hierarchical encoders such as ConvNeXt or Swin); with ``module``,
        of each module's block.
    modules_ : list of str
        With ``module``: the matched module names, in column order.

    See Also
    --------
    skvlm.FeatureStore : Keeps every site of a forward pass for later transforms.

    Notes
    -----
    ``fit`` is cheap: it loads the model into the process-wide registry (once)
    and checks the site, but runs no forward pass and reads no image.
    ``transform`` on an unfitted estimator raises ``NotFittedError`` as every
    sklearn transformer does; ``fit_transform`` or ``fit(X).transform(X)`` is
    the usual call, and ``fit(None)`` is enough.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> from skvlm import VLMEmbeddingTransformer
    >>> from skvlm.testing import make_tiny_clip
    >>> path = make_tiny_clip(tempfile.mkdtemp())
    >>> images = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
    >>> vlm = VLMEmbeddingTransformer(path, layer=[1, -1], pooling="mean")
    >>> vlm.fit_transform(images).shape
    (3, 64)
    >>> vlm.get_feature_names_out()[[0, 32]]
    array(['vision_l1_mean_0', 'vision_l3_mean_0'], dtype=object)
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "stage": [StrOptions(set(STAGES))],
        "layer": [Integral, list, tuple],
        "pooling": [StrOptions({*POOLINGS, "auto"}), Integral],
        "prompt": [str, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",  # str or torch.device, checked by resolve_device
        "dtype": "no_validation",  # str or torch.dtype, checked by resolve_dtype
        "normalize": ["boolean"],
        "cache": [None, str, os.PathLike, HasMethods(["lookup", "write"])],
        "verbose": ["verbose"],
        "on_error": [StrOptions({"raise", "nan"})],
        "model_kwargs": [dict, None],
        "n_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "image_column": [str],
        "module": [str, list, None],
        "callbacks": [list, tuple, None],
        "progress": [Hidden(StrOptions({DEPRECATED})), "boolean"],
        "image_aspect": [StrOptions({"native", "pad"})],
    }

    def __init__(
        self,
        model="openai/clip-vit-base-patch32",
        *,
        stage="vision",
        layer=-1,
        pooling="auto",
        prompt=None,
        batch_size=32,
        device="auto",
        dtype="auto",
        normalize=False,
        cache=None,
        verbose=1,
        on_error="raise",
        model_kwargs=None,
        n_workers="auto",
        image_column="image",
        module=None,
        callbacks=None,
        progress=DEPRECATED,
        image_aspect="native",
    ):
        self.model = model
        self.stage = stage
        self.layer = layer
        self.pooling = pooling
        self.prompt = prompt
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.normalize = normalize
        self.cache = cache
        self.verbose = verbose
        self.on_error = on_error
        self.model_kwargs = model_kwargs
        self.n_workers = n_workers
        self.image_column = image_column
        self.module = module
        self.callbacks = callbacks
        self.progress = progress
        self.image_aspect = image_aspect

    # -- sklearn API ---------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model (once per process) and check the site.

        Parameters
        ----------
        X : ignored or collection of images, default=None
            When given, only its container is checked (no image is decoded).
        y : array-like of shape (n_samples,), default=None
            Not used; checked to hold one label per image when given with X.

        Returns
        -------
        self : VLMEmbeddingTransformer
        """
        resolve_verbose(self, warn=True)
        callbacks = check_callbacks(self.callbacks)
        n_samples = None
        if X is not None:
            items, _ = as_items(X, self.image_column)
            n_samples = len(items)
            if y is not None and len(y) != n_samples:
                raise ValueError(
                    f"X has {n_samples} images but y has {len(y)} labels; give one "
                    "label per image (or no y: this transformer does not use it)."
                )
        notify(callbacks, "on_fit_begin", self, n_samples=n_samples)
        if self.cache is not None:
            # A cache that cannot work (a file, a foreign directory, a damaged
            # layout, an uncreatable path) fails here, not deep in transform.
            open_store(self.cache).check()
        if self.module is not None:
            self._fit_modules()
            notify(callbacks, "on_fit_end", self, stopped_early=False)
            return self
        extraction = self._extraction()
        adapter = extraction.adapter
        layers = resolve_layers(
            self.layer, extraction.n_layers, stage=self.stage, family=adapter.family
        )
        pooling = self._check_pooling(adapter, layers)
        check_position(adapter, self.stage, pooling)
        self.family_ = adapter.family
        self.n_layers_ = extraction.n_layers
        self.layers_ = layers
        self.pooling_ = pooling
        self.layer_widths_ = extraction.widths(layers)
        self.n_features_out_ = sum(self.layer_widths_)
        notify(callbacks, "on_fit_end", self, stopped_early=False)
        return self

    def transform(self, X):
        """Extract the site's features of every image in X.

        Parameters
        ----------
        X : sequence, numpy array, pandas Series or DataFrame, or datasets.Dataset
            File paths, PIL images, numpy arrays or raw bytes; or a DataFrame with
            an ``image`` column (and optionally a ``prompt`` column).

        Returns
        -------
        features : ndarray of shape (n_images, ``n_features_out_``), float32
        """
        check_is_fitted(self)
        items, row_prompts = as_items(X, self.image_column)
        failed = []
        store = None if self.cache is None else open_store(self.cache)
        out = self._extraction().transform(
            items, row_prompts, self.layers_, self.pooling_, failed, store=store
        )
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.where(norms == 0, 1, norms)
        if failed:
            warnings.warn(
                f"{len(failed)} image(s) could not be read and got NaN rows: indices "
                f"{failed[:20]}{' ...' if len(failed) > 20 else ''}.",
                UserWarning,
                stacklevel=2,
            )
        return out

    def precompute(self, X, *, verbose=None, progress=DEPRECATED):
        """Fill the store with the sites its ``keep`` setting keeps, for every image.

        Run it once where the model runs fast (a GPU box); later transforms at
        any kept site, on any machine that reads the same store, run no
        forward pass. What a pass keeps besides this estimator's layers and
        pooling is the store's ``keep`` (see :class:`skvlm.FeatureStore`;
        ``keep="all"`` keeps every layer and named pooling of the stage), and
        the bytes it will write are printed before the model runs. Fits the
        estimator first if needed.

        Parameters
        ----------
        X : collection of images
            As for :meth:`transform`.
        verbose : int, default=None
            Overrides the estimator's ``verbose`` for this call (None: the
            estimator's, 1 by default).
        progress : bool
            Deprecated alias of ``verbose``.

        Returns
        -------
        self : VLMEmbeddingTransformer
        """
        if self.cache is None:
            raise ValueError(
                "precompute fills a feature store, and cache is None. Pass "
                "cache='some/dir' (or a FeatureStore) to the estimator."
            )
        if not hasattr(self, "n_features_out_"):
            self.fit(None)
        verbose = renamed_verbose(progress, verbose, where="precompute")
        items, row_prompts = as_items(X, self.image_column)
        self._extraction().fill(
            open_store(self.cache),
            items,
            row_prompts,
            [],
            position=self.pooling_,
            requests=[(layer, self.pooling_) for layer in self.layers_],
            verbose=verbose,
        )
        return self

    def stored_features(self, X):
        """The features ``transform(X)`` returns, read lazily from the store.

        No image is decoded and no forward pass runs: the images' store keys
        (their content hashes) and this estimator's namespace and sites give a
        :class:`skvlm.store.StoreFeatures`, whose rows are looked up when
        indexed. ``LinearProbeClassifier`` trains on it a batch at a time, so
        the features of millions of images never sit in memory together. Fill
        the store first (:meth:`precompute`, or earlier transforms).

        Parameters
        ----------
        X : collection of images
            As for :meth:`transform`.

        Returns
        -------
        features : skvlm.store.StoreFeatures of shape (n_images, ``n_features_out_``)
            Its ``namespace`` and ``keys`` are where the store keeps the rows.

        Examples
        --------
        >>> import tempfile
        >>> from PIL import Image
        >>> from skvlm import VLMEmbeddingTransformer
        >>> from skvlm.testing import make_tiny_clip
        >>> images = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
        >>> vlm = VLMEmbeddingTransformer(
        ...     make_tiny_clip(tempfile.mkdtemp()), cache=tempfile.mkdtemp()
        ... )
        >>> features = vlm.fit().precompute(images, verbose=0).stored_features(images)
        >>> features.shape, features.sites
        ((3, 32), ['vision/l3/cls'])
        """
        check_is_fitted(self)
        if self.cache is None:
            raise ValueError(
                "stored_features reads a feature store, and cache is None. Pass "
                "cache='some/dir' (or a FeatureStore) and fill it (precompute)."
            )
        items, row_prompts = as_items(X, self.image_column)
        extraction = self._extraction()
        namespace, _ = extraction.namespace(row_prompts)
        failed = []
        keys = extraction.keys(items, row_prompts, failed)
        if failed:
            raise ValueError(
                f"{len(failed)} image(s) could not be read and have no stored "
                f"features: indices {failed[:20]}{' ...' if len(failed) > 20 else ''}."
                " Leave them out of X."
            )
        sites = [
            extraction.site(layer, self.pooling_).store_name for layer in self.layers_
        ]
        return StoreFeatures(
            open_store(self.cache), namespace, keys, sites, normalize=self.normalize
        )

    def get_feature_names_out(self, input_features=None):
        """Output column names, ``{stage}_l{layer}_{pooling}_{i}``.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        names : ndarray of str objects
        """
        check_is_fitted(self)
        if self.module is not None:
            label = pooling_label(self.pooling_)
            return np.asarray(
                [
                    f"{name}_{label}_{i}"
                    for name, width in zip(
                        self.modules_, self.layer_widths_, strict=True
                    )
                    for i in range(width)
                ],
                dtype=object,
            )
        names = [
            name
            for layer, width in zip(self.layers_, self.layer_widths_, strict=True)
            for name in Site(self.stage, layer, self.pooling_).feature_names(width)
        ]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # always float32 out
        tags.requires_fit = True
        return tags

    # -- internals -------------------------------------------------------------------
    def _extraction(self):
        """The extraction this estimator's parameters describe (model loaded once)."""
        if self.module is not None:
            return ModuleExtraction.from_params(
                self.get_params(deep=False),
                widths=getattr(self, "layer_widths_", None),
                estimator=self,
            )
        return Extraction.from_params(self.get_params(deep=False), estimator=self)

    def _fit_modules(self):
        extraction = self._extraction()
        adapter = extraction.adapter
        pooling = self.pooling
        if isinstance(pooling, bool):
            raise TypeError("pooling must be a name or an int position, not a bool.")
        if pooling == "auto":
            pooling = adapter.default_pooling(self.stage)
            pooling = "mean" if pooling == "pooler" else pooling
        elif pooling == "pooler":
            raise ValueError(
                "pooling='pooler' is the model's own pooled output of a stage, not "
                "a pooling of a module's output; use 'mean', 'max', 'cls', 'last' "
                "or an int position with module=."
            )
        self.family_ = adapter.family
        self.modules_ = extraction.modules
        self.n_layers_ = len(self.modules_)
        self.layers_ = list(range(len(self.modules_)))
        self.pooling_ = int(pooling) if is_position(pooling) else pooling
        self.layer_widths_ = extraction.module_widths
        self.n_features_out_ = sum(self.layer_widths_)
        return self

    def _check_pooling(self, adapter, layers):
        pooling = self.pooling
        if isinstance(pooling, bool):
            raise TypeError("pooling must be a name or an int position, not a bool.")
        if pooling == "auto":
            return adapter.default_pooling(self.stage)
        for layer in layers:
            names = adapter.poolings(self.stage, layer)
            ok = pooling in names or (is_position(pooling) and adapter.positions)
            if not ok:
                extra = ", or an int token position" if adapter.positions else ""
                # a pooling the family cannot give says why (BLIP's image_mean)
                reason = getattr(adapter, "refused_poolings", {}).get(pooling)
                raise ValueError(
                    f"pooling={pooling!r} is not available at stage {self.stage!r}, "
                    f"layer {layer} of the {adapter.family} model"
                    + (f" ({reason})" if reason else "")
                    + f"; available: {', '.join(map(repr, names))}{extra}."
                )
        return int(pooling) if is_position(pooling) else pooling
