"""extract_features: every site of a stage for many images, on a Ray cluster."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

from .._embedding import VLMEmbeddingTransformer
from .._sklearn_compat import (
    HasMethods,
    Interval,
    StrOptions,
    validate_parameters,
    validate_params,
)
from ..store import FeatureStore
from ._actor import COMPUTED, FAILED, NOT_STORED, STORED, SiteExtractor
from ._inputs import as_dataset


@dataclass(frozen=True)
class ExtractionResult:
    """What one ``extract_features`` run did.

    Attributes
    ----------
    path : str
        The store directory, or the Parquet directory.
    to : {"store", "parquet"}
    namespace : str or None
        The store namespace of the pass (model, weights, preprocessing, dtype,
        stage, prompt); None when no image was processed.
    n_images : int
        Images in X.
    n_computed : int
        Images run through the model in this run.
    n_already_stored : int
        Images the store held already (an earlier or interrupted run): no
        forward pass. Always 0 for Parquet.
    n_not_stored : int
        Computed, but declined by the store's ``max_bytes`` guard.
    failed : list of str
        Images that could not be read (with ``on_error="nan"``): their paths,
        or ``"<bytes>"``.
    seconds : float
        Wall time of the run, actor start-up included.
    """

    path: str
    to: str
    namespace: str | None
    n_images: int
    n_computed: int
    n_already_stored: int
    n_not_stored: int
    failed: list = field(default_factory=list)
    seconds: float = 0.0


@validate_params(
    {
        "estimator": [HasMethods(["get_params"]), dict],
        "X": "no_validation",  # paths, a ray.data.Dataset, ...: as_dataset checks
        "path": [str, os.PathLike, HasMethods(["lookup", "write"])],
        "to": [StrOptions({"store", "parquet"})],
        "num_actors": [Interval(Integral, 1, None, closed="left"), tuple],
        "num_gpus_per_actor": [Interval(Real, 0, None, closed="left")],
        "num_cpus_per_actor": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "image_column": [str],
        "prompt_column": [str],
    },
    prefer_skip_nested_validation=True,
)
def extract_features(
    estimator,
    X,
    path,
    *,
    to="store",
    num_actors=2,
    num_gpus_per_actor=0,
    num_cpus_per_actor=1,
    batch_size=None,
    image_column="image",
    prompt_column="prompt",
):
    """Run a VLM over many images on Ray and keep every site of the pass.

    A pool of Ray Data actors each loads the model once (through skvlm's model
    registry) and runs, batch by batch, the same adapter and pooling code as
    ``VLMEmbeddingTransformer.transform``. With ``to="store"`` every site of the
    estimator's stage (every layer x every pooling) lands in the
    ``FeatureStore`` at ``path``, exactly as a local ``precompute`` would store
    it: afterwards a transform, ``GridSearchCV`` or ``probe_layers`` with
    ``cache=path`` and the same model parameters runs no forward pass.

    The run is resumable: each actor looks its images up in the store before
    the forward pass, so a rerun after a killed job (or on a grown data set)
    runs the model only on the images not stored yet.

    Parameters
    ----------
    estimator : VLMEmbeddingTransformer or dict
        The estimator (fitted or not) or its parameters. What decides the
        store namespace is used as given: ``model``, ``stage``, ``prompt``,
        ``dtype``, ``model_kwargs``. ``layer`` and ``pooling`` do not matter
        (every site is kept), except that an int ``pooling`` adds that token
        position to the sites. ``device="auto"`` picks each actor's GPU.
    X : list, str, Path or ray.data.Dataset
        Image paths (absolute paths are sent; every node must see the files)
        or encoded file bytes; a DataFrame with an ``image_column`` (and an
        optional ``prompt_column``); a folder (all image files below it); a CSV
        file with an ``image_column`` of paths; or a Ray Dataset whose
        ``image_column`` holds paths or bytes (``ray.data.read_binary_files``
        names it ``"bytes"``).
    path : str, path-like or FeatureStore
        ``to="store"``: the store directory (or a disk ``FeatureStore``, whose
        ``dtype`` is kept), on a file system every node shares.
        ``to="parquet"``: a new or empty directory for the Parquet files.
    to : {"store", "parquet"}, default="store"
        ``"parquet"`` writes one row per image: ``image`` (path, or null for
        bytes), ``key`` (the store key; null where the image could not be
        read), ``namespace``, and one fixed-size list column per site, named
        like ``vision/l3/mean``. Parquet output is not resumable.
    num_actors : int or (int, int), default=2
        Size of the actor pool, or its (min, max) for an autoscaling cluster.
        Each actor holds one copy of the model.
    num_gpus_per_actor : float, default=0
        GPUs reserved per actor; 0 runs on CPUs.
    num_cpus_per_actor : float, default=1
        CPUs reserved per actor; on CPU actors, also torch's thread count.
    batch_size : int or None, default=None
        Images per forward pass; None uses the estimator's ``batch_size``.
    image_column, prompt_column : str, default="image", "prompt"
        Columns of a DataFrame, CSV file or Ray Dataset X.

    Returns
    -------
    ExtractionResult
        Counts of computed, already stored and failed images, the namespace
        and the wall time.

    Notes
    -----
    Connect to a cluster with ``ray.init(address="auto")`` first; otherwise
    Ray starts a local one. Actors inherit nothing from the driver but the
    parameters: the model must be loadable on every node (a Hub id, or a path
    every node sees; a relative path is refused, as workers run elsewhere).

    Examples
    --------
    >>> import ray, tempfile
    >>> from skvlm import VLMEmbeddingTransformer
    >>> from skvlm.distributed import extract_features
    >>> from skvlm.testing import make_tiny_clip, random_images
    >>> model = str(make_tiny_clip(tempfile.mkdtemp()))
    >>> paths = []
    >>> for i, image in enumerate(random_images(4)):
    ...     paths.append(f"{tempfile.mkdtemp()}/{i}.png")
    ...     image.save(paths[-1])
    >>> store = tempfile.mkdtemp()
    >>> ray.init(num_cpus=2)  # doctest: +SKIP
    >>> result = extract_features(  # doctest: +SKIP
    ...     VLMEmbeddingTransformer(model), paths, store, num_actors=2)
    >>> result.n_computed, result.n_already_stored  # doctest: +SKIP
    (4, 0)
    """
    start = time.perf_counter()
    params = _check_params(estimator)
    to = _check_choice(to, "to", ("store", "parquet"))
    batch_size = int(batch_size or params["batch_size"])
    params["batch_size"] = batch_size
    if to == "store":
        store = _store(path)
        params["cache"], out = store, str(store.path)
    else:
        out = _empty_dir(path)
    dataset, n_images = as_dataset(
        X, image_column=image_column, prompt_column=prompt_column, batch_size=batch_size
    )
    mapped = dataset.map_batches(
        SiteExtractor,
        batch_size=batch_size,
        batch_format="numpy",
        compute=_pool(num_actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
        fn_constructor_kwargs={
            "params": params,
            "to": to,
            "num_threads": None if num_gpus_per_actor else num_cpus_per_actor,
        },
    )
    if to == "parquet":
        mapped.write_parquet(out)
        counts, failed, namespace = _parquet_counts(out)
    else:
        counts, failed, namespace = _store_counts(mapped)
    return ExtractionResult(
        path=out,
        to=to,
        namespace=namespace,
        n_images=n_images if n_images is not None else sum(counts.values()),
        n_computed=counts[COMPUTED] + counts[NOT_STORED],
        n_already_stored=counts[STORED],
        n_not_stored=counts[NOT_STORED],
        failed=failed,
        seconds=time.perf_counter() - start,
    )


def _check_params(estimator):
    if isinstance(estimator, VLMEmbeddingTransformer):
        params = estimator.get_params(deep=False)
    elif isinstance(estimator, dict):
        params = VLMEmbeddingTransformer(**estimator).get_params(deep=False)
    else:
        raise TypeError(
            "estimator must be a VLMEmbeddingTransformer or a dict of its "
            f"parameters, got {type(estimator).__name__}."
        )
    validate_parameters(VLMEmbeddingTransformer(**params))
    model = params["model"]
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if os.path.isdir(model) and not os.path.isabs(model):
        # The store namespace hashes the model as spelled, and Ray workers run in
        # other directories: an absolute path both loads there and keeps keys
        # stable. (Made absolute here, it would no longer match the local
        # estimator's namespace.)
        raise ValueError(
            f"model={model!r} is a relative path; Ray workers do not run in this "
            f"directory. Pass the absolute path {os.path.abspath(model)!r}, and "
            "use the same spelling in the estimators that read the store."
        )
    return params


def _check_choice(value, name, options):
    if value not in options:
        raise ValueError(f"{name}={value!r} is not one of {list(options)}.")
    return value


def _store(path):
    if isinstance(path, FeatureStore):
        if path.path is None:
            raise ValueError(
                "path is an in-memory FeatureStore, which Ray workers cannot "
                "share. Pass a directory (on a file system every node sees)."
            )
        return path
    if isinstance(path, (str, os.PathLike)):
        return FeatureStore.open(os.path.abspath(os.fspath(path)))
    raise TypeError(
        f"path must be a directory or a disk FeatureStore, got {type(path).__name__}."
    )


def _empty_dir(path):
    out = Path(os.path.abspath(os.fspath(path)))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"'{out}' exists and is not an empty folder. Parquet output is written "
            "once and not resumed: pass a new folder, or use to='store' for a "
            "resumable run."
        )
    return str(out)


def _pool(num_actors):
    from ray.data import ActorPoolStrategy

    if isinstance(num_actors, tuple):
        low, high = num_actors
        return ActorPoolStrategy(min_size=int(low), max_size=int(high))
    if int(num_actors) < 1:
        raise ValueError(f"num_actors={num_actors!r} must be at least 1.")
    return ActorPoolStrategy(size=int(num_actors))


def _store_counts(mapped):
    counts = dict.fromkeys((STORED, COMPUTED, NOT_STORED, FAILED), 0)
    failed, namespace = [], None
    for batch in mapped.iter_batches(batch_format="numpy", batch_size=None):
        for status, image in zip(batch["status"], batch["image"], strict=True):
            counts[status] += 1
            if status == FAILED:
                failed.append(image or "<bytes>")
        if len(batch["namespace"]):
            namespace = str(batch["namespace"][0])
    return counts, failed, namespace


def _parquet_counts(out):
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["image", "key", "namespace"])
    keys = table.column("key").to_pylist()
    images = table.column("image").to_pylist()
    failed = [
        img or "<bytes>" for img, key in zip(images, keys, strict=True) if key is None
    ]
    counts = dict.fromkeys((STORED, COMPUTED, NOT_STORED, FAILED), 0)
    counts[COMPUTED] = len(keys) - len(failed)
    counts[FAILED] = len(failed)
    spaces = table.column("namespace")
    return counts, failed, (spaces[0].as_py() if len(spaces) else None)
