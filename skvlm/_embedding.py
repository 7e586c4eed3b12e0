"""VLMEmbeddingTransformer: a VLM's hidden states at one site as a sklearn transformer."""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _cached
from ._inputs import ImageInputMixin, ImageLoadError, as_items, load_image
from .models import STAGES, check_position, checked_loading, load_adapter
from .pooling import POOLINGS, is_position, pooling_label


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
        Where to keep every site of every image the model has seen, so that
        later transforms at other layers or poolings run no forward pass (see
        :class:`skvlm.FeatureStore`). A path opens a store in that directory.
    progress : bool, default=False
        Show a progress bar over batches.
    on_error : {"raise", "nan"}, default="raise"
        What to do with an image that cannot be read: raise an error naming it,
        or return a row of NaN for it and warn once listing the failed indices.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``: ``revision``, ``device_map``,
        ``quantization_config``, ``attn_implementation``, ``trust_remote_code``
        (False unless given here).
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.

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
        "progress": ["boolean"],
        "on_error": [StrOptions({"raise", "nan"})],
        "model_kwargs": [dict, None],
        "image_column": [str],
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
        progress=False,
        on_error="raise",
        model_kwargs=None,
        image_column="image",
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
        self.progress = progress
        self.on_error = on_error
        self.model_kwargs = model_kwargs
        self.image_column = image_column

    # -- sklearn API ---------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model (once per process) and check the site.

        Parameters
        ----------
        X : ignored or collection of images, default=None
            When given, only its container is checked (no image is decoded).
        y : ignored

        Returns
        -------
        self : VLMEmbeddingTransformer
        """
        if X is not None:
            as_items(X, self.image_column)
        with checked_loading(self.model, self.device, self.progress):
            adapter = self._adapter()
        if self.stage not in adapter.stages:
            raise ValueError(
                f"stage={self.stage!r} is not available for the {adapter.family} model "
                f"{self.model!r}; its stages are {list(adapter.stages)}."
            )
        n_layers = adapter.n_layers(self.stage)
        layers = self._check_layers(n_layers, adapter)
        pooling = self._check_pooling(adapter, layers)
        check_position(adapter, self.stage, pooling)
        self.family_ = adapter.family
        self.n_layers_ = n_layers
        self.layers_ = layers
        self.pooling_ = pooling
        self.n_features_out_ = len(layers) * adapter.dim(self.stage)
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
        adapter = self._adapter()
        failed = []
        if self.cache is None:
            out = np.full((len(items), self.n_features_out_), np.nan, dtype=np.float32)
            requests = [(layer, self.pooling_) for layer in self.layers_]
            for rows, vectors in self._batches(
                adapter, items, row_prompts, requests, failed
            ):
                out[rows] = np.concatenate(
                    [vectors[(layer, self.pooling_)] for layer in self.layers_], axis=1
                )
        else:
            out = _cached.transform(self, adapter, items, row_prompts, failed)
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

    def precompute(self, X, *, progress=True):
        """Fill the store with every site of the stage for every image of X.

        Run it once where the model runs fast (a GPU box); later transforms at any
        layer or pooling of the stage, on any machine that reads the same store,
        run no forward pass. Fits the estimator first if needed.

        Parameters
        ----------
        X : collection of images
            As for :meth:`transform`.
        progress : bool, default=True
            Show a progress bar over the batches that run the model.

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
        items, row_prompts = as_items(X, self.image_column)
        _cached.fill(self, self._adapter(), items, row_prompts, [], progress=progress)
        return self

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
        width = self.n_features_out_ // len(self.layers_)
        label = pooling_label(self.pooling_)
        return np.asarray(
            [
                f"{self.stage}_l{layer}_{label}_{i}"
                for layer in self.layers_
                for i in range(width)
            ],
            dtype=object,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # always float32 out
        tags.requires_fit = True
        return tags

    # -- internals -------------------------------------------------------------------
    def _adapter(self):
        return load_adapter(
            self.model,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self.model_kwargs,
        )

    def _check_layers(self, n_layers, adapter):
        layers = [self.layer] if isinstance(self.layer, Integral) else list(self.layer)
        if not layers:
            raise ValueError("layer is an empty list; give at least one layer index.")
        resolved = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, Integral):
                raise TypeError(f"layer entries must be ints, got {layer!r}.")
            if not -n_layers <= layer < n_layers:
                raise ValueError(
                    f"layer={layer} is out of range for stage {self.stage!r} of the "
                    f"{adapter.family} model, whose stack has {n_layers} entries; use "
                    f"a layer in [{-n_layers}, {n_layers - 1}]."
                )
            resolved.append(int(layer) % n_layers)
        return resolved

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
                raise ValueError(
                    f"pooling={pooling!r} is not available at stage {self.stage!r}, "
                    f"layer {layer} of the {adapter.family} model; available: "
                    f"{', '.join(map(repr, names))}{extra}."
                )
        return int(pooling) if is_position(pooling) else pooling

    def _prompts(self, adapter, rows, row_prompts):
        # The language stage always reads the prompt; some projectors do too
        # (InstructBLIP's Q-Former reads the instruction).
        if self.stage not in getattr(adapter, "prompt_stages", ("language",)):
            return None
        if row_prompts is not None:
            return [row_prompts[i] for i in rows]
        return [self.prompt] * len(rows)

    def _batches(
        self, adapter, items, row_prompts, requests, failed, subset=None, progress=None
    ):
        """Yield (row indices, {(layer, pooling): array}) one batch at a time.

        ``subset`` restricts the pass to those rows of ``items`` (a store's misses).
        """
        import torch
        from tqdm.auto import tqdm

        order = list(range(len(items))) if subset is None else list(subset)
        order = _by_length(
            order, items, self._prompts(adapter, order, row_prompts), adapter
        )
        starts = range(0, len(order), self.batch_size)
        bar = tqdm(
            starts,
            # no bar when every image came from the store (it would say "0batch")
            disable=not (self.progress if progress is None else progress) or not order,
            desc=f"{adapter.family} {self.stage}",
            unit="batch",
        )
        for start in bar:
            rows, images = [], []
            for i in order[start : start + self.batch_size]:
                try:
                    images.append(load_image(items[i], i))
                    rows.append(i)
                except ImageLoadError:
                    if self.on_error == "raise":
                        raise
                    failed.append(i)
            if not rows:
                continue
            with torch.inference_mode():
                batch = adapter.prepare(
                    images, self._prompts(adapter, rows, row_prompts)
                )
                vectors = adapter.extract(batch, self.stage, requests)
            _cached.log_forward(items, rows)
            yield rows, {k: v.cpu().numpy() for k, v in vectors.items()}


def _by_length(rows, items, prompts, adapter):
    """``rows`` ordered so that a batch holds sequences of similar lengths.

    Padding never changes a result (every pooling is masked), but it costs compute:
    rows are sorted by prompt length and, for families whose token count grows
    with the image, by image area, read from the file header without decoding.
    Output rows keep their indices, so the order is invisible to the caller.
    """
    dynamic = getattr(adapter, "dynamic_resolution", False)
    if prompts is None and not dynamic:
        return rows
    lengths = (
        [len(p or "") for p in prompts] if prompts is not None else [0] * len(rows)
    )
    areas = [_area(items[i]) if dynamic else 0 for i in rows]
    keyed = sorted(zip(lengths, areas, rows, strict=True), key=lambda t: (t[0], t[1]))
    return [row for _, _, row in keyed]


def _area(item):
    """Pixel count of an image without decoding it (0 when unknown)."""
    from PIL import Image

    try:
        if isinstance(item, Image.Image):
            return item.width * item.height
        if isinstance(item, np.ndarray):
            return int(item.shape[0]) * int(item.shape[1])
        if isinstance(item, (str, os.PathLike)):
            with Image.open(item) as image:  # reads the header only
                return image.width * image.height
    except (OSError, ValueError, IndexError):
        return 0  # the batch loop reports unreadable items properly
    return 0
