"""probe_layers: a linear probe cross-validated at every site of a model."""

from __future__ import annotations

import os
import time
from numbers import Integral

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import StratifiedKFold, check_cv, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import type_of_target

from ._embedding import VLMEmbeddingTransformer
from ._report import ProbeReport
from ._site import resolve_layers
from ._sklearn_compat import HasMethods, Interval, StrOptions, validate_params
from .models import STAGES, load_adapter
from .pooling import is_position

__all__ = ["ProbeReport", "probe_layers"]


def default_probe():
    """The probe used when ``probe=None``: standardise, then logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


@validate_params(
    {
        "model": [str, os.PathLike],
        "X": "no_validation",
        "y": ["array-like"],
        "stages": [StrOptions({"all", *STAGES}), list, tuple],
        "layers": [StrOptions({"all"}), Integral, list, tuple, dict],
        "poolings": [StrOptions({"all"}), str, Integral, list, tuple, dict],
        "probe": [HasMethods(["fit"]), None],
        "cv": ["cv_object"],
        "scoring": [StrOptions(set(get_scorer_names())), callable, None],
        "groups": ["array-like", None],
        "cache": [None, str, os.PathLike, HasMethods(["lookup", "write"])],
        "prompt": [str, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "dtype": "no_validation",
        "n_jobs": [Integral, None],
        "progress": ["boolean"],
        "random_state": ["random_state"],
        "model_kwargs": [dict, None],
    },
    prefer_skip_nested_validation=True,
)
def probe_layers(
    model,
    X,
    y,
    *,
    stages=("vision",),
    layers="all",
    poolings="all",
    probe=None,
    cv=5,
    scoring=None,
    groups=None,
    cache=None,
    prompt=None,
    batch_size=32,
    device="auto",
    dtype="auto",
    n_jobs=None,
    progress=False,
    random_state=None,
    model_kwargs=None,
):
    """Cross-validate a probe at every (stage, layer, pooling) site of a model.

    Each image goes through the model once per stage: a ``FeatureStore`` keeps
    every site of the pass (a temporary in-memory one when ``cache=None``), and
    the probe is then cross-validated on each site's stored features, on the
    same folds for every site. The result equals, site by site, a
    ``cross_val_score`` of ``Pipeline([VLMEmbeddingTransformer(model, stage=,
    layer=, pooling=), probe])`` on those folds, without the repeated forward
    passes.

    Parameters
    ----------
    model : str or path-like
        A Hugging Face model id, a local directory in ``save_pretrained``
        layout, or a shipped name such as ``"skvlm/tiny-clip"``.
    X : collection of images
        As for ``VLMEmbeddingTransformer.transform``: paths, PIL images,
        arrays, bytes, or a DataFrame with an ``image`` column.
    y : array-like of shape (n_images,)
        Targets.
    stages : "all", str or list of str, default=("vision",)
        The stages to probe; ``"all"`` takes every stage the model has.
    layers : "all", int, list of int or dict, default="all"
        Layers of each stage (negative count from the end); ``"all"`` takes
        the whole stack. A dict maps a stage to its own ``"all"`` or list.
    poolings : "all", str, int, list or dict, default="all"
        Poolings of each layer; ``"all"`` takes every named pooling the layer
        offers (``pooler`` exists at the last vision layer only). A listed
        pooling is probed at the layers that offer it. A dict maps a stage to
        its own choice. Each distinct int token position costs one more
        forward pass (the store keeps named poolings of a pass, and the asked
        position).
    probe : estimator, default=None
        Fitted on each site's features; None uses
        ``make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))``.
    cv : int, cross-validation generator or iterable, default=5
        As in sklearn. An int gives ``StratifiedKFold`` for a classifier probe
        (``KFold`` otherwise), shuffled with ``random_state`` when that is set.
        Every site is scored on the same folds.
    scoring : str, callable or None, default=None
        One sklearn scorer; None uses the probe's ``score`` (accuracy).
    groups : array-like of shape (n_images,), default=None
        Group labels for a group-aware ``cv``.
    cache : None, str, path-like or FeatureStore, default=None
        The store that keeps the forward passes; a path makes them last
        beyond this call (a rerun, or another search, then runs no pass). A
        path or None keeps every site of each pass (``keep="all"``); a
        ``FeatureStore`` keeps what its ``keep`` setting says.
    prompt : str, default=None
        Instruction for the language stage (None: the paper's prompt).
    batch_size : int, default=32
        Images per forward pass.
    device : str, default="auto"
        As for ``VLMEmbeddingTransformer``.
    dtype : str, default="auto"
        As for ``VLMEmbeddingTransformer``. The store keys on it: to read a store
        filled on a GPU (bfloat16 by default) on a CPU, pass the same dtype.
    n_jobs : int, default=None
        Parallel jobs over sites (the forward passes are not parallelised).
    progress : bool, default=False
        Show progress bars over the forward passes and the sites.
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds when ``cv`` is an int; None keeps sklearn's
        unshuffled folds.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``.

    Returns
    -------
    report : ProbeReport
        ``results`` (one row per site: stage, layer, pooling, n_features,
        mean_score, std_score, fit_time, score_time, split{k}_score, rank),
        ``best_``, ``best_params_``, ``plot()``, ``to_html()``, ``to_csv()``,
        ``to_json()`` and ``save()``.

    See Also
    --------
    skvlm.VLMEmbeddingTransformer : The features of one site.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.probing import probe_layers
    >>> from skvlm.datasets import load_digit_images
    >>> from skvlm.testing import make_tiny_clip
    >>> path = make_tiny_clip(tempfile.mkdtemp())
    >>> digits = load_digit_images(n_class=2, n_per_class=6)
    >>> report = probe_layers(path, digits.images, digits.target, layers=[0, -1],
    ...                       poolings=["cls", "mean"], cv=3)
    >>> report.results[["stage", "layer", "pooling"]].to_numpy().tolist()
    [['vision', 0, 'cls'], ['vision', 0, 'mean'], ['vision', 3, 'cls'], ['vision', 3, 'mean']]
    >>> sorted(report.best_params_)
    ['layer', 'pooling', 'stage']
    """
    probe = default_probe() if probe is None else probe
    n_samples = _num_samples(X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_samples:
        raise ValueError(
            f"y must be 1-D with one label per image: X has {n_samples} images, "
            f"y has shape {y.shape}."
        )

    from .store import FeatureStore

    # Every site of the stage is asked for: the store keeps them all, so one pass
    # per stage serves every probe (a FeatureStore passed in keeps its setting).
    if cache is None:
        store = FeatureStore(keep="all")
    elif isinstance(cache, (str, os.PathLike)):
        store = FeatureStore.open(cache, keep="all")
    else:
        store = cache
    common = dict(
        prompt=prompt,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        cache=store,
        model_kwargs=model_kwargs,
        verbose=int(bool(progress)),
    )
    adapter = load_adapter(model, device=device, dtype=dtype, model_kwargs=model_kwargs)
    plan = _plan(adapter, model, stages, layers, poolings)
    # Every check that can fail runs before the first forward pass.
    check_scoring(probe, scoring=scoring)
    cv, splits = _splits(probe, cv, y, groups, random_state)

    started = time.perf_counter()
    features = {}
    for stage, sites in plan.items():
        # One pass fills every named pooling of every layer of the stage (and the
        # asked int positions, one pass each): the probes then only read.
        positions = sorted({p for _, p in sites if is_position(p)}) or ["auto"]
        for position in positions:
            pooling = position if is_position(position) else "auto"
            est = VLMEmbeddingTransformer(model, stage=stage, pooling=pooling, **common)
            est.fit(None).precompute(X)
        features.update(_read_sites(model, stage, sites, X, common))
    extract_time = time.perf_counter() - started

    order = [
        (stage, layer, pooling) for stage in plan for layer, pooling in plan[stage]
    ]
    from tqdm.auto import tqdm

    # A generator, so the bar counts finished sites, also with n_jobs > 1.
    jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_score_site)(probe, features[site], y, splits, scoring, groups)
        for site in order
    )
    bar = tqdm(jobs, total=len(order), disable=not progress, desc="probes", unit="site")
    scored = list(bar)
    results = _table(order, features, scored, len(splits))
    meta = {
        "model": str(model),
        "family": adapter.family,
        "n_samples": n_samples,
        "n_classes": int(len(np.unique(y))),
        "chance": _chance(y, scoring, probe),
        "cv": f"{type(cv).__name__}, {len(splits)} folds",
        "scoring": _scoring_name(scoring),
        "probe": _probe_name(probe),
        "prompt": prompt,
        "extract_time": round(extract_time, 3),
    }
    return ProbeReport(results, meta)


# -- planning the sites ---------------------------------------------------------
def _num_samples(X):
    try:
        return len(X)
    except TypeError:
        raise TypeError(
            f"X must be a sized collection of images (list, array, Series, "
            f"DataFrame), got {type(X).__name__}; wrap an iterator in list()."
        ) from None


def _per_stage(value, stage, name):
    if isinstance(value, dict):
        if stage not in value:
            raise ValueError(
                f"{name} is a dict without the stage {stage!r}; add a {stage!r} "
                f"entry or pass one {name} value for every stage."
            )
        return value[stage]
    return value


def _plan(adapter, model, stages, layers, poolings):
    """{stage: [(layer, pooling), ...]} of the sites to probe, in report order."""
    if stages == "all":
        stages = list(adapter.stages)
    elif isinstance(stages, str):
        stages = [stages]
    plan = {}
    for stage in dict.fromkeys(stages):
        if stage not in adapter.stages:
            raise ValueError(
                f"stage {stage!r} is not available for the {adapter.family} model "
                f"{str(model)!r}; its stages are {list(adapter.stages)}."
            )
        n_layers = adapter.n_layers(stage)
        stage_layers = _stage_layers(
            _per_stage(layers, stage, "layers"), stage, n_layers
        )
        wanted = _per_stage(poolings, stage, "poolings")
        if wanted != "all":
            wanted = [wanted] if isinstance(wanted, (str, Integral)) else list(wanted)
        sites, seen = [], set()
        for layer in stage_layers:
            offered = list(adapter.poolings(stage, layer))
            for pooling in offered if wanted == "all" else wanted:
                if pooling in offered or (is_position(pooling) and adapter.positions):
                    sites.append(
                        (layer, int(pooling) if is_position(pooling) else pooling)
                    )
                    seen.add(pooling)
        if wanted != "all":
            missing = [p for p in wanted if p not in seen]
            if missing:
                offered = sorted(
                    {p for lyr in stage_layers for p in adapter.poolings(stage, lyr)}
                )
                raise ValueError(
                    f"pooling(s) {missing} are offered by no probed layer of stage "
                    f"{stage!r} ({adapter.family} model); available there: {offered}"
                    f"{', or an int token position' if adapter.positions else ''}. "
                    "Pass poolings as a dict to choose per stage."
                )
        plan[stage] = sites
    return plan


def _stage_layers(layers, stage, n_layers):
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an int or a list; got {layers!r}.")
        return list(range(n_layers))
    return list(dict.fromkeys(resolve_layers(layers, n_layers, stage=stage)))


def _read_sites(model, stage, sites, X, common):
    """The stored features of each site, one store read per pooling."""
    by_pooling = {}
    for layer, pooling in sites:
        by_pooling.setdefault(pooling, []).append(layer)
    out = {}
    for pooling, layer_list in by_pooling.items():
        est = VLMEmbeddingTransformer(
            model, stage=stage, layer=layer_list, pooling=pooling, **common
        )
        block = est.fit(None).transform(X)
        for layer, cols in zip(
            layer_list, np.split(block, len(layer_list), axis=1), strict=True
        ):
            out[(stage, layer, pooling)] = cols
    return out


# -- scoring ----------------------------------------------------------------------
def _splits(probe, cv, y, groups, random_state):
    if isinstance(cv, Integral) and random_state is not None:
        if is_classifier(probe) and type_of_target(y) in ("binary", "multiclass"):
            cv = StratifiedKFold(cv, shuffle=True, random_state=random_state)
        else:
            from sklearn.model_selection import KFold

            cv = KFold(cv, shuffle=True, random_state=random_state)
    cv = check_cv(cv, y, classifier=is_classifier(probe))
    placeholder = np.zeros((len(y), 1))
    return cv, list(cv.split(placeholder, y, groups))


def _score_site(probe, features, y, splits, scoring, groups):
    result = cross_validate(
        clone(probe), features, y, cv=splits, scoring=scoring, groups=groups
    )
    return result["test_score"], result["fit_time"], result["score_time"]


def _table(order, features, scored, n_splits):
    rows = []
    for (stage, layer, pooling), (scores, fit_time, score_time) in zip(
        order, scored, strict=True
    ):
        row = {
            "stage": stage,
            "layer": layer,
            "pooling": pooling,
            "n_features": features[(stage, layer, pooling)].shape[1],
            "mean_score": float(np.mean(scores)),
            "std_score": float(np.std(scores)),
            "fit_time": float(np.mean(fit_time)),
            "score_time": float(np.mean(score_time)),
        }
        row.update({f"split{k}_score": float(s) for k, s in enumerate(scores)})
        rows.append(row)
    results = pd.DataFrame(rows)
    results["pooling"] = results["pooling"].astype(object)
    results["rank"] = (
        results["mean_score"].rank(method="min", ascending=False).astype(int)
    )
    return results


def _chance(y, scoring, probe):
    """Accuracy of always predicting the majority class (None for other scorers)."""
    if scoring not in (None, "accuracy") or not is_classifier(probe):
        return None
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / counts.sum())


def _scoring_name(scoring):
    if scoring is None:
        return "the probe's score (accuracy for a classifier)"
    return (
        scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "custom")
    )


def _probe_name(probe):
    steps = getattr(probe, "steps", None)
    if steps:
        return " -> ".join(type(est).__name__ for _, est in steps)
    return type(probe).__name__
