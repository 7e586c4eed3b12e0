"""probe_layers: a linear probe cross-validated at every site of a model."""

from __future__ import annotations

import os
import time
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import StratifiedKFold, check_cv, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target

from ._embedding import VLMEmbeddingTransformer
from ._inputs import as_items, image_key
from ._report import Comparison, ProbeReport, corrected_t_interval
from ._site import resolve_layers
from ._sklearn_compat import HasMethods, Interval, StrOptions, validate_params
from .classifiers import LinearProbeCV
from .models import STAGES, load_adapter
from .pooling import is_position

__all__ = ["Comparison", "ProbeReport", "corrected_t_interval", "probe_layers"]

# The settings of the old form, probe_layers(model, X, y, ...): now read from the
# transformer.
_LEGACY = (
    "cache",
    "prompt",
    "batch_size",
    "device",
    "dtype",
    "progress",
    "model_kwargs",
)


def default_probe():
    """A plain probe: ``make_pipeline(StandardScaler(), LogisticRegression())``.

    What ``probe_layers``'s default probe fits per fold (there batched, see
    :func:`batched_probe`), as one estimator for code that needs one.
    """
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def batched_probe():
    """``probe_layers``'s default probe: ``LinearProbeCV(Cs=[1.0])``.

    Per fold, the model of :func:`default_probe`; the folds of a site are
    fitted together as one batched problem.
    """
    return LinearProbeCV(Cs=[1.0], max_iter=1000)


@validate_params(
    {
        "transformer": [
            HasMethods(["fit", "transform", "get_params"]),
            str,
            os.PathLike,
        ],
        "X": "no_validation",
        "y": ["array-like"],
        "probe": [HasMethods(["fit"]), None],
        "stages": [StrOptions({"all", *STAGES}), list, tuple],
        "layers": [StrOptions({"all"}), Integral, list, tuple, dict],
        "poolings": [StrOptions({"all"}), str, Integral, list, tuple, dict],
        "cv": ["cv_object"],
        "scoring": [StrOptions(set(get_scorer_names())), callable, None],
        "groups": ["array-like", None],
        "control": [StrOptions({"shuffled"}), None],
        "ci": [Interval(Real, 0, 1, closed="neither"), None],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def probe_layers(
    transformer,
    X,
    y,
    *,
    probe=None,
    stages="all",
    layers="all",
    poolings="all",
    cv=5,
    scoring=None,
    groups=None,
    control=None,
    ci=None,
    n_jobs=None,
    random_state=None,
    **legacy,
):
    """Cross-validate a probe at every (stage, layer, pooling) site of a model.

    Each image goes through the model once per stage: a ``FeatureStore`` keeps
    every site of the pass (a temporary in-memory one when the transformer has
    ``cache=None``), and the probe is then cross-validated on each site's
    stored features, on the same folds for every site. The result equals, site
    by site, a ``cross_val_score`` of ``Pipeline([transformer.set_params(stage=,
    layer=, pooling=), probe])`` on those folds, without the repeated forward
    passes. The default probe fits every fold of a site (and every ``C`` of a
    :class:`~skvlm.classifiers.LinearProbeCV`) as one batched problem.

    Parameters
    ----------
    transformer : VLMEmbeddingTransformer
        Its model, prompt, device, dtype, cache, batch size, verbosity and
        ``model_kwargs`` are used; its stage, layer and pooling are replaced
        by each site's. (A model id or path, the old form, still works for
        this release with a FutureWarning: pass
        ``VLMEmbeddingTransformer(model, ...)`` instead.)
    X : collection of images
        As for ``VLMEmbeddingTransformer.transform``: paths, PIL images,
        arrays, bytes, or a DataFrame with an ``image`` column.
    y : array-like of shape (n_images,)
        Targets.
    probe : estimator, default=None
        Fitted on each site's features. None is ``LinearProbeCV(Cs=[1.0])``:
        per fold, the model of ``make_pipeline(StandardScaler(),
        LogisticRegression())``, all folds in one batched fit. A
        :class:`~skvlm.classifiers.LinearProbeCV` with several ``Cs`` makes
        every (site, C) a candidate (its own ``cv`` is replaced by this
        function's folds); any other estimator is cross-validated with
        ``cross_validate``.
    stages : "all", str or list of str, default="all"
        The stages to probe; ``"all"`` takes every stage the model has (as
        ``skvlm probe`` does).
    layers : "all", int, list of int or dict, default="all"
        Layers of each stage (negative count from the end); ``"all"`` takes
        the whole stack. A dict maps a stage to its own ``"all"`` or list.
    poolings : "all", str, int, list or dict, default="all"
        Poolings of each layer; ``"all"`` takes every named pooling the layer
        offers (``pooler`` exists at the last vision layer only). A listed
        pooling is probed at every layer of every probed stage that offers it
        (``image_mean`` at the language stage only, for example); it is an
        error only when no probed stage offers it. A dict maps a stage to its
        own choice, which must exist there. Each distinct int token position
        costs one more forward pass.
    cv : int, cross-validation generator or iterable, default=5
        As in sklearn. An int gives ``StratifiedKFold`` for a classifier probe
        (``KFold`` otherwise), shuffled with ``random_state`` when that is set.
        Every site is scored on the same folds.
    scoring : str, callable or None, default=None
        One sklearn scorer; None uses the probe's ``score`` (accuracy).
    groups : array-like of shape (n_images,), default=None
        Group labels for a group-aware ``cv``.
    control : {"shuffled"} or None, default=None
        ``"shuffled"`` also trains the probe on a control task (Hewitt and
        Liang, 2019): the labels permuted across images, each image (by
        content) always getting the same control label, on the same folds.
        Adds the columns ``control_score`` (its mean score) and
        ``selectivity`` (``mean_test_score - control_score``).
    ci : float in (0, 1) or None, default=None
        Adds ``score_ci_low`` and ``score_ci_high``: a fold-based t interval
        of the mean score with the Nadeau-Bengio corrected variance
        (:func:`corrected_t_interval`), for example ``ci=0.95``.
    n_jobs : int, default=None
        Parallel jobs over sites (the forward passes are not parallelised).
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds when ``cv`` is an int (None keeps sklearn's
        unshuffled folds), and the control task's labels.
    **legacy
        The old form's ``cache``, ``prompt``, ``batch_size``, ``device``,
        ``dtype``, ``progress`` and ``model_kwargs`` (with a model id as
        first argument only; deprecated).

    Returns
    -------
    report : ProbeReport
        ``results`` (one row per candidate, ``GridSearchCV.cv_results_``'s
        column names: ``param_stage``, ``param_layer``, ``param_pooling``,
        ``mean_test_score``, ``std_test_score``, ``rank_test_score``,
        ``split{k}_test_score``, ...), ``cv_results_``, ``best_``,
        ``best_params_``, ``compare()``, ``plot()``, ``to_frame()``,
        ``to_html()``, ``to_csv()``, ``to_json()`` and ``save()``.

    See Also
    --------
    skvlm.VLMEmbeddingTransformer : The features of one site.
    skvlm.classifiers.LinearProbeCV : The batched probe.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm import VLMEmbeddingTransformer
    >>> from skvlm.probing import probe_layers
    >>> from skvlm.datasets import load_digit_images
    >>> from skvlm.testing import make_tiny_clip
    >>> path = make_tiny_clip(tempfile.mkdtemp())
    >>> digits = load_digit_images(n_class=2, n_per_class=6)
    >>> vlm = VLMEmbeddingTransformer(path)
    >>> report = probe_layers(vlm, digits.images, digits.target, stages="vision",
    ...                       layers=[0, -1], poolings=["cls", "mean"], cv=3,
    ...                       control="shuffled", ci=0.95, random_state=0)
    >>> report.results[["param_stage", "param_layer", "param_pooling"]].to_numpy().tolist()
    [['vision', 0, 'cls'], ['vision', 0, 'mean'], ['vision', 3, 'cls'], ['vision', 3, 'mean']]
    >>> sorted(report.best_params_)
    ['layer', 'pooling', 'stage']
    >>> {"selectivity", "score_ci_low"} <= set(report.results.columns)
    True
    """
    transformer = _transformer(transformer, legacy)
    params = transformer.get_params()
    verbose = int(params.get("verbose", params.get("progress", 0)) or 0)
    n_samples = _num_samples(X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_samples:
        raise ValueError(
            f"y must be 1-D with one label per image: X has {n_samples} images, "
            f"y has shape {y.shape}."
        )
    probe = batched_probe() if probe is None else probe
    batched = isinstance(probe, LinearProbeCV)
    # Every check that can fail runs before the model is loaded.
    check_scoring(probe, scoring=scoring)
    cv, splits = _splits(probe, cv, y, groups, random_state)
    y_control = (
        _control_labels(X, y, params.get("image_column", "image"), random_state)
        if control
        else None
    )

    from .store import FeatureStore

    # Every site of the stage is asked for: the store keeps them all, so one pass
    # per stage serves every probe (a FeatureStore passed in keeps its setting).
    cache = params.get("cache")
    if cache is None:
        store = FeatureStore(keep="all")
    elif isinstance(cache, (str, os.PathLike)):
        store = FeatureStore.open(cache, keep="all")
    else:
        store = cache
    base = clone(transformer).set_params(cache=store)
    model = params["model"]
    adapter = load_adapter(
        model,
        device=params.get("device", "auto"),
        dtype=params.get("dtype", "auto"),
        model_kwargs=params.get("model_kwargs"),
    )
    plan = _plan(adapter, model, stages, layers, poolings)

    started = time.perf_counter()
    features = {}
    for stage, sites in plan.items():
        # One pass fills every named pooling of every layer of the stage (and the
        # asked int positions, one pass each): the probes then only read.
        positions = sorted({p for _, p in sites if is_position(p)}) or ["auto"]
        for position in positions:
            pooling = position if is_position(position) else "auto"
            est = clone(base).set_params(stage=stage, layer=-1, pooling=pooling)
            est.fit(None).precompute(X)  # the transformer's verbose
        features.update(_read_sites(base, stage, sites, X))
    extract_time = time.perf_counter() - started

    order = [
        (stage, layer, pooling) for stage in plan for layer, pooling in plan[stage]
    ]
    from tqdm.auto import tqdm

    if batched and n_jobs in (None, 1):
        # Every site's folds x Cs in the same batched solver runs.
        scored = _score_together(
            probe, [features[site] for site in order], y, y_control, splits, scoring
        )
    else:
        score = _score_batched if batched else _score_site
        # A generator, so the bar counts finished sites, also with n_jobs > 1.
        jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(score)(probe, features[site], y, y_control, splits, scoring, groups)
            for site in order
        )
        bar = tqdm(
            jobs, total=len(order), disable=not verbose, desc="probes", unit="site"
        )
        scored = list(bar)
    n_train = float(np.mean([len(train) for train, _ in splits]))
    n_test = float(np.mean([len(test) for _, test in splits]))
    results = _table(order, features, scored, len(splits), ci, n_train, n_test)
    meta = {
        "model": str(model),
        "family": adapter.family,
        "n_samples": n_samples,
        "n_classes": int(len(np.unique(y))),
        "chance": _chance(y, scoring, probe),
        "cv": f"{type(cv).__name__}, {len(splits)} folds",
        "n_train": n_train,
        "n_test": n_test,
        "scoring": _scoring_name(scoring),
        "probe": _probe_name(probe),
        "prompt": params.get("prompt"),
        "control": control,
        "ci": ci,
        "extract_time": round(extract_time, 3),
    }
    report = ProbeReport(results, meta)
    if y_control is not None:
        report.control_labels_ = y_control
    return report


def _transformer(transformer, legacy):
    """The transformer; the old form's model id and settings made into one."""
    unknown = sorted(set(legacy) - set(_LEGACY))
    if unknown:
        raise TypeError(f"probe_layers() got unexpected keyword argument(s) {unknown}.")
    if not isinstance(transformer, (str, os.PathLike)):
        if legacy:
            raise TypeError(
                f"probe_layers takes {sorted(legacy)} from the transformer: set "
                "them on it (VLMEmbeddingTransformer(model, cache=..., ...)) "
                "instead of passing them to probe_layers."
            )
        return transformer
    warnings.warn(
        "probe_layers(model, X, y, ...) with a model id or path is deprecated and "
        "will be removed in the next release: pass a transformer, "
        "probe_layers(VLMEmbeddingTransformer(model, cache=..., prompt=..., "
        "device=...), X, y, ...).",
        FutureWarning,
        stacklevel=4,  # the caller of probe_layers, past validate_params' wrapper
    )
    settings = dict(legacy)
    progress = settings.pop("progress", False)
    est = VLMEmbeddingTransformer(transformer)
    names = est.get_params()
    settings["verbose" if "verbose" in names else "progress"] = (
        int(progress) if "verbose" in names else bool(progress)
    )
    return est.set_params(**settings)


def _control_labels(X, y, image_column, random_state):
    """Labels permuted across distinct images; one image, one control label."""
    items, _ = as_items(X, image_column)
    keys = [image_key(item, i) for i, item in enumerate(items)]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    labels = y[first]
    rng = check_random_state(random_state)
    return labels[rng.permutation(len(labels))][inverse.ravel()]


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
    """{stage: [(layer, pooling), ...]} of the sites to probe, in report order.

    A pooling listed for every stage is probed wherever a probed layer offers
    it, and is an error only when none does; a pooling listed for one stage
    (a dict) must exist in that stage.
    """
    if stages == "all":
        stages = list(adapter.stages)
    elif isinstance(stages, str):
        stages = [stages]
    plan, offered_by_stage, seen = {}, {}, set()
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
        wanted = _wanted(_per_stage(poolings, stage, "poolings"))
        sites, here = [], set()
        for layer in stage_layers:
            offered = list(adapter.poolings(stage, layer))
            for pooling in offered if wanted == "all" else wanted:
                if pooling in offered or (is_position(pooling) and adapter.positions):
                    sites.append(
                        (layer, int(pooling) if is_position(pooling) else pooling)
                    )
                    here.add(pooling)
        offered_by_stage[stage] = sorted(
            {p for lyr in stage_layers for p in adapter.poolings(stage, lyr)}
        )
        seen |= here
        if isinstance(poolings, dict) and wanted != "all":
            missing = [p for p in wanted if p not in here]
            if missing:
                raise ValueError(
                    f"pooling(s) {missing} are offered by no probed layer of stage "
                    f"{stage!r} ({adapter.family} model); available there: "
                    f"{offered_by_stage[stage]}"
                    f"{', or an int token position' if adapter.positions else ''}."
                )
        if sites:
            plan[stage] = sites
    if not isinstance(poolings, dict) and poolings != "all":
        missing = [p for p in _wanted(poolings) if p not in seen]
        if missing:
            where = "; ".join(f"{st}: {ps}" for st, ps in offered_by_stage.items())
            raise ValueError(
                f"pooling(s) {missing} exist at no probed layer of the stages "
                f"{list(offered_by_stage)} ({adapter.family} model). Poolings "
                f"by stage: {where}"
                f"{'; an int token position works at every stage' if adapter.positions else ''}. "
                "Choose one of those, or probe a stage that has it."
            )
    return plan


def _wanted(value):
    if value == "all":
        return "all"
    return [value] if isinstance(value, (str, Integral)) else list(value)


def _stage_layers(layers, stage, n_layers):
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an int or a list; got {layers!r}.")
        return list(range(n_layers))
    return list(dict.fromkeys(resolve_layers(layers, n_layers, stage=stage)))


def _read_sites(base, stage, sites, X):
    """The stored features of each site, one store read per pooling."""
    by_pooling = {}
    for layer, pooling in sites:
        by_pooling.setdefault(pooling, []).append(layer)
    out = {}
    for pooling, layer_list in by_pooling.items():
        est = clone(base).set_params(stage=stage, layer=layer_list, pooling=pooling)
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


def _score_site(probe, features, y, y_control, splits, scoring, groups):
    """One candidate: ``([(C or None, scores, control scores)], fit, score times)``."""
    result = cross_validate(
        clone(probe), features, y, cv=splits, scoring=scoring, groups=groups
    )
    control = None
    if y_control is not None:
        control = cross_validate(
            clone(probe), features, y_control, cv=splits, scoring=scoring
        )["test_score"]
    candidates = [(None, result["test_score"], control)]
    return candidates, result["fit_time"], result["score_time"]


def _score_batched(probe, features, y, y_control, splits, scoring, groups):
    """Every (fold, C) of the site in one batched LinearProbeCV fit."""
    return _score_together(probe, [features], y, y_control, splits, scoring)[0]


def _score_together(probe, features, y, y_control, splits, scoring):
    """Every (site, fold, C) in batched fits (``LinearProbeCV.fit_many``).

    Returns one ``(candidates, fit times, score times)`` per site of
    ``features``, as ``_score_site``.
    """
    probe = clone(probe).set_params(cv=splits, refit=False, scoring=scoring)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        fitted = probe.fit_many(features, y)
        control = [None] * len(features)
        if y_control is not None:
            control = [p.scores_ for p in probe.fit_many(features, y_control)]
    seconds = (time.perf_counter() - started) / len(splits) / len(features)
    out = []
    for site, site_control in zip(fitted, control, strict=True):
        Cs = site.Cs_ if len(site.Cs_) > 1 else [None]
        candidates = [
            (
                C,
                site.scores_[:, c],
                None if site_control is None else site_control[:, c],
            )
            for c, C in enumerate(Cs)
        ]
        # The batched fits serve every site and candidate: their time is shared.
        times = np.full(len(splits), seconds / len(Cs))
        out.append((candidates, times, np.zeros(len(splits))))
    return out


def _table(order, features, scored, n_splits, ci, n_train, n_test):
    rows = []
    for (stage, layer, pooling), (candidates, fit_time, score_time) in zip(
        order, scored, strict=True
    ):
        for C, scores, control in candidates:
            row = {
                "param_stage": stage,
                "param_layer": layer,
                "param_pooling": pooling,
            }
            if C is not None:
                row["param_C"] = float(C)
            row.update(
                {
                    "n_features": features[(stage, layer, pooling)].shape[1],
                    "mean_test_score": float(np.mean(scores)),
                    "std_test_score": float(np.std(scores)),
                }
            )
            row.update({f"split{k}_test_score": float(s) for k, s in enumerate(scores)})
            row["mean_fit_time"] = float(np.mean(fit_time))
            row["std_fit_time"] = float(np.std(fit_time))
            row["mean_score_time"] = float(np.mean(score_time))
            row["std_score_time"] = float(np.std(score_time))
            if control is not None:
                row["control_score"] = float(np.mean(control))
                row["selectivity"] = row["mean_test_score"] - row["control_score"]
            if ci is not None:
                low, high = corrected_t_interval(scores, n_train, n_test, ci)
                row["score_ci_low"], row["score_ci_high"] = float(low), float(high)
            rows.append(row)
    results = pd.DataFrame(rows)
    results["param_pooling"] = results["param_pooling"].astype(object)
    rank = results["mean_test_score"].rank(method="min", ascending=False).astype(int)
    results.insert(
        results.columns.get_loc("std_test_score") + 1, "rank_test_score", rank
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
