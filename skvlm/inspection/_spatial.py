"""Spatial importance: which image regions a probe on VLM features relies on.

Two ways to perturb one region and watch the probe's score:

- **token** methods (``"permute"``, ``"mean"``, ``"zero"``) read the per-token
  hidden states of the probed layer in one forward pass per image, replace the
  token at one patch position, and recompute the pooled feature. For
  ``mean``-like poolings the pooled vector moves by
  ``(new - old) / n_tokens``; for ``max`` the max over the other tokens comes
  from a top-2; both are exact, so the probe sees exactly the feature the
  transformer would give for that token sequence.
- **occlusion** (``"occlude"``) fills one patch of the preprocessed pixels and
  reruns the model: one pass per image and patch, but it works for every
  pooling, ``cls``, ``last`` and ``pooler`` included, which never read the
  patch tokens of their own layer directly.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch, check_random_state

from .._extraction import Extraction
from .._inputs import as_items
from .._site import resolve_layers
from .._sklearn_compat import HasMethods, Interval, StrOptions, validate_params

METHODS = ("auto", "permute", "mean", "zero", "occlude")
TOKEN_METHODS = ("permute", "mean", "zero")
# Poolings that read the patch tokens of their own layer, per stage.
_TOKEN_POOLINGS = {"vision": ("mean", "max"), "language": ("mean", "max", "image_mean")}


@validate_params(
    {
        "vlm": [HasMethods(["fit", "transform"])],
        "X": "no_validation",  # any collection of images, checked by as_items
        "layer": [Integral, None],
    },
    prefer_skip_nested_validation=True,
)
def patch_tokens(vlm, X, *, layer=None):
    """Hidden states at the patch positions of one layer, from one pass per image.

    Parameters
    ----------
    vlm : VLMEmbeddingTransformer
        A fitted transformer; its model, stage, prompt and batch size are used.
    X : collection of images
        As for ``vlm.transform``.
    layer : int, default=None
        Index into the stage's stack (negative from the end); None takes the
        transformer's layer (which must then be a single one).

    Returns
    -------
    tokens : ndarray of shape (n_images, n_patches, dim), float32
        Vision stage: the patch tokens (CLS and register tokens left out),
        exactly HF's ``hidden_states[layer][:, n_prefix:]``. Language stage:
        the hidden states at the image-token positions, in order.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm import VLMEmbeddingTransformer
    >>> from skvlm.inspection import patch_tokens
    >>> from skvlm.testing import make_tiny_clip, random_images
    >>> vlm = VLMEmbeddingTransformer(make_tiny_clip(tempfile.mkdtemp()), layer=0,
    ...                               pooling="mean").fit()
    >>> patch_tokens(vlm, random_images(3)).shape
    (3, 16, 32)
    """
    vlm = _check_vlm(vlm)
    as_items(X, vlm.image_column)  # a bad X fails before the model loads
    if layer is None:
        if len(vlm.layers_) != 1:
            raise ValueError(
                f"The transformer has layers {vlm.layers_}; pass layer=<one of them>."
            )
        layers = vlm.layers_
    else:
        layers = resolve_layers(layer, vlm.n_layers_, stage=vlm.stage)
    captured = _capture(vlm, X, layers, pooling=None)
    return captured[layers[0]]["tokens"]


@validate_params(
    {
        "estimator": [HasMethods(["fit", "predict"])],
        "X": "no_validation",  # any collection of images, checked by as_items
        "y": ["array-like"],
        "method": [StrOptions(set(METHODS))],
        "scoring": [str, callable, None],
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def spatial_importance(
    estimator,
    X,
    y,
    *,
    method="auto",
    scoring=None,
    n_repeats=5,
    random_state=None,
):
    """Per-patch importance maps of a probe fitted on pooled VLM features.

    Parameters
    ----------
    estimator : Pipeline
        A fitted Pipeline whose first step is a ``VLMEmbeddingTransformer``
        (the vision stage of a ViT-style tower, or the language stage of a
        LLaVA-style model) and whose remaining steps are the probe.
    X : collection of images
        Images on which importance is measured (any form ``transform`` takes).
    y : array-like of shape (n_images,)
        Their targets.
    method : {"auto", "permute", "mean", "zero", "occlude"}, default="auto"
        ``"permute"``: the token at a patch position is replaced by the token
        at the same position of another image (rows permuted, as in
        permutation importance). ``"mean"``: by the mean token of that
        position over X. ``"zero"``: by zeros. These need a pooling that reads
        the patch tokens (vision: ``mean``, ``max``; language: ``mean``,
        ``max``, ``image_mean``) and run one forward pass per image.
        ``"occlude"``: the patch's pixels are set to the normalisation mean
        colour (zero after normalisation) and the model is rerun, one pass per
        image and patch; any pooling and stage. ``"auto"`` is ``"permute"``
        where the pooling allows it, else ``"occlude"``.
    scoring : str or callable, default=None
        One sklearn scorer for the global map; None uses the probe's ``score``.
    n_repeats : int, default=5
        Permutations per patch (``"permute"`` only; the other methods are
        deterministic and use one).
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations; every patch sees the same ones.

    Returns
    -------
    result : Bunch
        ``importances_mean`` and ``importances_std`` of shape ``grid_shape``
        (the drop of the score when a patch is perturbed, over repeats),
        ``importances`` (``grid_shape + (n_repeats,)``), ``baseline_score``,
        ``image_maps`` (n_images, rows, cols): per image, the drop of the
        probe's output for its true class (``predict_proba``, else the
        decision function; for a regressor, the rise of the squared error),
        ``class_maps`` (n_classes, rows, cols): their mean over the images of
        each class, ``classes``, ``grid_shape`` and ``method``.

    Notes
    -----
    A token method answers "what does the probe read at each position of its
    layer?". At layer 0 a token is its patch's embedding (plus a position
    embedding), so the map is the region's own contribution; deeper, attention
    has mixed information across positions, so a position can carry another
    region's content. Occlusion answers "what if the region's pixels were
    gone?", through every layer, at one pass per patch.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skvlm import VLMEmbeddingTransformer
    >>> from skvlm.inspection import spatial_importance
    >>> from skvlm.testing import make_tiny_clip, random_images
    >>> images, y = random_images(8), np.array([0, 1] * 4)
    >>> pipe = make_pipeline(
    ...     VLMEmbeddingTransformer(make_tiny_clip(tempfile.mkdtemp()), layer=0,
    ...                             pooling="mean"),
    ...     LogisticRegression()).fit(images, y)
    >>> result = spatial_importance(pipe, images, y, random_state=0)
    >>> result.importances_mean.shape, result.image_maps.shape
    ((4, 4), (8, 4, 4))
    """
    vlm, probe = _split(estimator)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; use one of {METHODS}.")
    token_ok = vlm.pooling_ in _TOKEN_POOLINGS.get(vlm.stage, ())
    if method == "auto":
        method = "permute" if token_ok else "occlude"
    if method in TOKEN_METHODS and not token_ok:
        raise ValueError(
            f"method={method!r} perturbs the patch tokens of the probed layer, but "
            f"pooling={vlm.pooling_!r} at stage {vlm.stage!r} does not read them "
            "(poolings that do: "
            f"{_TOKEN_POOLINGS.get(vlm.stage, ())}); use method='occlude', which "
            "reruns the model on images with each patch blanked out."
        )
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, int) or n_repeats < 1:
        raise ValueError(f"n_repeats must be an int >= 1, got {n_repeats!r}.")
    if isinstance(scoring, list | tuple | set | dict):
        raise ValueError("spatial_importance takes one scorer, not several.")
    scorer = check_scoring(probe, scoring=scoring)
    y = np.asarray(y)
    n_images = len(as_items(X, vlm.image_column)[0])
    if len(y) != n_images:  # before any forward pass
        raise ValueError(f"X has {n_images} images but y has {len(y)} entries.")

    if method == "occlude":
        base, variants, grid = _occlusion_features(vlm, X)
        n_repeats = 1
    else:
        captured = _capture(vlm, X, vlm.layers_, pooling=vlm.pooling_)
        base, variants, grid = _token_variants(
            vlm, captured, method, n_repeats if method == "permute" else 1, random_state
        )
        n_repeats = n_repeats if method == "permute" else 1

    to_frame = _frame_maker(probe)
    baseline = scorer(probe, to_frame(base), y)
    base_out = _target_output(probe, to_frame(base), y)
    n_patches = grid[0] * grid[1]
    scores = np.empty((n_patches, n_repeats))
    drops = np.zeros((n_patches, len(base)))
    for p, per_repeat in enumerate(variants):
        for r, features in enumerate(per_repeat):
            features = to_frame(features)
            scores[p, r] = scorer(probe, features, y)
            drops[p] += base_out - _target_output(probe, features, y)
    drops /= n_repeats
    importances = (baseline - scores).reshape(*grid, n_repeats)
    image_maps = drops.T.reshape(len(base), *grid)
    classes = class_maps = None
    if is_classifier(probe):
        classes = np.unique(y)
        class_maps = np.stack([image_maps[y == c].mean(axis=0) for c in classes])
    return Bunch(
        importances_mean=importances.mean(axis=-1),
        importances_std=importances.std(axis=-1),
        importances=importances,
        baseline_score=baseline,
        image_maps=image_maps,
        class_maps=class_maps,
        classes=classes,
        grid_shape=grid,
        method=method,
    )


# -- checking what was passed -------------------------------------------------------
def _check_vlm(vlm):
    from .._embedding import VLMEmbeddingTransformer

    if not isinstance(vlm, VLMEmbeddingTransformer):
        raise TypeError(
            f"Expected a VLMEmbeddingTransformer, got {type(vlm).__name__}."
        )
    if not hasattr(vlm, "layers_"):
        vlm.fit(None)
    return vlm


def _split(estimator):
    if not isinstance(estimator, Pipeline) or len(estimator.steps) < 2:
        raise TypeError(
            "spatial_importance needs a fitted Pipeline whose first step is a "
            "VLMEmbeddingTransformer and whose later steps are the probe; got "
            f"{type(estimator).__name__}."
        )
    vlm = estimator.steps[0][1]
    from .._embedding import VLMEmbeddingTransformer

    if not isinstance(vlm, VLMEmbeddingTransformer):
        raise TypeError(
            f"The pipeline's first step {estimator.steps[0][0]!r} is a "
            f"{type(vlm).__name__}, not a VLMEmbeddingTransformer."
        )
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(vlm)
    return vlm, estimator[1:]


def _frame_maker(probe):
    """Wrap arrays as DataFrames when the probe was fitted on named columns."""
    try:
        names = probe.feature_names_in_
    except AttributeError:
        return lambda a: a
    import pandas as pd

    return lambda a: pd.DataFrame(a, columns=names)


def _target_output(probe, features, y):
    """Per row: the probe's output for the true class (bigger = more confident)."""
    if not is_classifier(probe):
        return -((np.asarray(probe.predict(features)) - y) ** 2)
    classes = probe.classes_
    index = np.searchsorted(classes, y)
    if (index >= len(classes)).any() or not np.array_equal(classes[index], y):
        raise ValueError(
            f"y holds labels the probe was not fitted on; its classes are {classes}."
        )
    rows = np.arange(len(y))
    if hasattr(probe, "predict_proba"):
        return probe.predict_proba(features)[rows, index]
    decision = np.asarray(probe.decision_function(features))
    if decision.ndim == 1:
        return np.where(index == 1, decision, -decision)
    return decision[rows, index]


# -- one pass per image: the tokens of each probed layer ------------------------------
def _extraction(vlm):
    """The fitted transformer's extraction (its model, stage, prompt, batches)."""
    # Every image must give its map: an unreadable one raises, whatever on_error.
    params = {**vlm.get_params(deep=False), "on_error": "raise"}
    return Extraction.from_params(params, estimator=vlm)


def _capture(vlm, X, layers, pooling):
    """Per layer: patch ``tokens`` (n, P, D) and, for a pooling, what rebuilds it.

    With a pooling: ``pooled`` (n, D) as the transformer computes it, ``count``
    (n,) tokens the pooling averages over, and ``rest_max`` (n, D), the max over
    the pooled tokens that are not patches (``-inf`` where there are none).
    """
    import torch

    from ..pooling import pool

    extraction = _extraction(vlm)
    adapter = extraction.adapter
    if vlm.stage not in adapter.raster_stages:
        raise ValueError(
            f"Token-level spatial importance reads patch tokens in raster order, "
            f"which the {adapter.family} model gives at stages "
            f"{list(adapter.raster_stages) or 'none'}, not {vlm.stage!r}; use "
            "method='occlude'."
        )
    items, row_prompts = as_items(X, vlm.image_column)
    chunks = {layer: [] for layer in layers}
    callbacks = extraction.run_callbacks()

    def read(layer, hidden, masks, rows):
        hidden = hidden.float()
        patches = masks.image if vlm.stage == "language" else masks.pooled
        out = {"tokens": _gather(hidden, patches, rows)}
        if pooling is not None:
            reduced = masks.image if pooling == "image_mean" else masks.pooled
            out["pooled"] = pool(hidden, masks, pooling)
            out["count"] = reduced.sum(dim=1).float()
            rest = reduced & ~patches
            filled = hidden.masked_fill(~rest.unsqueeze(-1), float("-inf"))
            out["rest_max"] = filled.amax(dim=1)
        return {k: v.cpu().numpy() for k, v in out.items()}

    for start in range(0, len(items), vlm.batch_size):
        rows = list(range(start, min(start + vlm.batch_size, len(items))))
        with torch.inference_mode():
            rows, batch = extraction.prepare(items, row_prompts, rows, [])
            results, _ = adapter.capture(
                batch,
                vlm.stage,
                layers,
                lambda layer, hidden, masks, rows=rows: read(
                    layer, hidden, masks, rows
                ),
            )
        for layer in layers:
            chunks[layer].append(results[layer])
        extraction.batch_end(callbacks, items, rows, rows[-1] + 1, len(items))
    _close(extraction, callbacks)
    return {
        layer: {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}
        for layer, parts in chunks.items()
    }


def _gather(hidden, patches, rows):
    """(batch, P, dim): the tokens at each row's patch positions, in order."""
    counts = patches.sum(dim=1)
    if int(counts.min()) != int(counts.max()) or int(counts.min()) == 0:
        raise ValueError(
            f"Images {rows} have {counts.tolist()} patch tokens; token-level spatial "
            "importance needs the same non-zero number in every image."
        )
    index = patches.nonzero()[:, 1].reshape(len(counts), -1)
    return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def _token_variants(vlm, captured, method, n_repeats, random_state):
    """(base features, per patch a list over repeats of perturbed features, grid)."""
    first = captured[vlm.layers_[0]]["tokens"]
    n_images, n_patches = first.shape[:2]
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(
            f"The {n_patches} patch tokens do not form a square grid; token-level "
            "spatial importance needs one (use method='occlude')."
        )
    rng = check_random_state(random_state)
    perms = [rng.permutation(n_images) for _ in range(n_repeats)]
    base = _finish(vlm, [captured[layer]["pooled"] for layer in vlm.layers_])

    def variants(p):
        for r in range(n_repeats):
            parts = []
            for layer in vlm.layers_:
                site = captured[layer]
                old = site["tokens"][:, p]
                if method == "permute":
                    new = old[perms[r]]
                elif method == "mean":
                    new = np.broadcast_to(old.mean(axis=0), old.shape)
                else:
                    new = np.zeros_like(old)
                parts.append(_replaced(vlm.pooling_, site, p, old, new))
            yield _finish(vlm, parts)

    return base, (variants(p) for p in range(n_patches)), (side, side)


def _replaced(pooling, site, p, old, new):
    """The pooled vector after the token at patch ``p`` becomes ``new`` (exact)."""
    if pooling != "max":
        return site["pooled"] + (new - old) / site["count"][:, None]
    others = np.delete(site["tokens"], p, axis=1)
    rest = site["rest_max"]
    if others.shape[1]:
        rest = np.maximum(rest, others.max(axis=1))
    return np.maximum(rest, new)


def _finish(vlm, parts):
    """Concatenate layers and L2-normalise as ``transform`` does."""
    out = np.concatenate(parts, axis=1).astype(np.float32)
    if vlm.normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.where(norms == 0, 1, norms)
    return out


# -- occlusion: one pass per image and patch ------------------------------------------
def _occlusion_features(vlm, X):
    """(base features, per patch [features with that patch occluded], grid)."""
    import torch

    extraction = _extraction(vlm)
    adapter = extraction.adapter
    items, row_prompts = as_items(X, vlm.image_column)
    requests = [(layer, vlm.pooling_) for layer in vlm.layers_]
    patch = _patch_size(adapter)
    base, occluded, grid = [], None, None
    callbacks = extraction.run_callbacks()
    n_done = 0
    for start in range(0, len(items), vlm.batch_size):
        rows = list(range(start, min(start + vlm.batch_size, len(items))))
        with torch.inference_mode():
            rows, batch = extraction.prepare(items, row_prompts, rows, [])
            pixels = batch.get("pixel_values")
            if pixels is None or pixels.ndim != 4:
                raise ValueError(
                    f"Occlusion blanks patches of a (batch, 3, height, width) "
                    f"image tensor, which the {adapter.family} model's inputs are "
                    "not (tiled or packed patches)."
                )
            grid = (pixels.shape[2] // patch, pixels.shape[3] // patch)
            occluded = occluded or [[] for _ in range(grid[0] * grid[1])]
            base.append(_site_features(vlm, adapter, batch, requests))
            for p in range(grid[0] * grid[1]):
                r, c = divmod(p, grid[1])
                blanked = pixels.clone()
                # zero after normalisation = the processor's mean colour
                blanked[
                    :, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch
                ] = 0
                features = _site_features(
                    vlm, adapter, {**batch, "pixel_values": blanked}, requests
                )
                occluded[p].append(features)
        n_total = len(items) * (1 + len(occluded))  # a pass per image and patch
        for _ in range(1 + len(occluded)):
            n_done += len(rows)
            extraction.batch_end(callbacks, items, rows, n_done, n_total)
    _close(extraction, callbacks)
    variants = ([np.concatenate(chunks)] for chunks in occluded)
    return np.concatenate(base), variants, grid


def _close(extraction, callbacks):
    """Close the progress bar ``run_callbacks`` added, if any."""
    for callback in callbacks[len(extraction.callbacks) :]:
        callback.close()


def _site_features(vlm, adapter, batch, requests):
    vectors = adapter.extract(batch, vlm.stage, requests)
    return _finish(vlm, [vectors[r].cpu().numpy() for r in requests])


def _patch_size(adapter):
    config = adapter.model.config
    config = getattr(config, "vision_config", config)
    size = getattr(config, "patch_size", None)
    if not isinstance(size, int):
        raise ValueError(
            f"The {adapter.family} model's config has no int patch_size, so the "
            "occlusion grid is unknown."
        )
    return size
