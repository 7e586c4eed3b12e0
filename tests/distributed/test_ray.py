"""extract_features on a local Ray cluster: same vectors, resumable, searchable.

The cluster (2 CPUs) is started once for the module. Actor start-up dominates
the time, so a default run holds one Ray job: a store fill from a folder, with
2 actors, that resumes a half-filled store; the store tests then read it. With
SKVLM_TEST_RAY_SLOW=1, a Parquet export of a Ray Dataset of bytes and a
GridSearchCV on Ray workers (joblib's Ray backend) run too.
"""

import ast
import hashlib
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import skvlm
from skvlm import FeatureStore, VLMEmbeddingTransformer
from skvlm.testing import make_tiny_clip, random_images

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from skvlm.distributed import extract_features  # noqa: E402
from skvlm.distributed._actor import SiteExtractor  # noqa: E402
from skvlm.distributed._inputs import _from_disk  # noqa: E402

# All tests of this module share one cluster: keep them on one xdist worker
# (effective under ``--dist loadgroup``).
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

N_IMAGES = 8

# Each Ray job starts actors that import torch and load the model: tens of
# seconds on the shared 2-core machine. The default run holds one such job; the
# Parquet export of a Ray Dataset and the search on Ray workers run on request.
slow_ray = pytest.mark.skipif(
    not os.environ.get("SKVLM_TEST_RAY_SLOW"),
    reason="starts more Ray workers (about a minute on a shared 2-core machine); "
    "set SKVLM_TEST_RAY_SLOW=1 to run it",
)


def _file_key(path):
    # The store's key of a file, computed independently: sha1 of b"file" + bytes.
    return hashlib.sha1(b"file" + open(path, "rb").read()).hexdigest()


def _forwarded(log):
    """Keys of the images run through a model since the log was last emptied."""
    keys = log.read()
    log.clear()
    return keys


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(make_tiny_clip(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i, image in enumerate(random_images(N_IMAGES, seed=3)):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        image.save(sub / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def paths(folder):
    return sorted(str(p.resolve()) for p in folder.rglob("*.png"))


@pytest.fixture(scope="module")
def forward_log(tmp_path_factory, log_forward_passes):
    """A started Ray cluster; every transformer built meanwhile (and the Ray
    actors' copies of it) logs the images it runs."""
    path = tmp_path_factory.mktemp("log") / "forward.log"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        with log_forward_passes(path) as log:
            yield log
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def resumed(forward_log, model, folder, paths, tmp_path_factory):
    """A store half filled locally (an interrupted job), then finished on Ray."""
    store = str(tmp_path_factory.mktemp("store"))
    done = paths[: N_IMAGES // 2]
    VLMEmbeddingTransformer(model, cache=store).precompute(done, verbose=0)
    _forwarded(forward_log)
    result = extract_features(
        VLMEmbeddingTransformer(model, batch_size=2), folder, store, num_actors=2
    )
    return store, result, _forwarded(forward_log)


# -- without a cluster -----------------------------------------------------------
def test_only_skvlm_distributed_imports_ray():
    # Read the source instead of importing skvlm in a fresh interpreter: the same
    # guarantee (`import skvlm` never needs Ray) without a slow subprocess.
    root = Path(skvlm.__file__).parent
    offenders = []
    for file in root.rglob("*.py"):
        if "distributed" in file.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            if any(n == "ray" or n.startswith("ray.") for n in names):
                offenders.append(f"{file.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_missing_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    for name in [m for m in sys.modules if m.startswith("skvlm.distributed")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r'pip install "skvlm\[ray\]"'):
        importlib.import_module("skvlm.distributed")


def test_folder_and_csv_inputs(folder, paths, tmp_path):
    assert _from_disk(folder, "image") == paths
    csv = tmp_path / "list.csv"
    csv.write_text(
        "file,label\n" + "\n".join(f"{p},x" for p in paths[:2]) + "\nrel.png,y\n"
    )
    assert _from_disk(csv, "file") == [*paths[:2], str(tmp_path / "rel.png")]
    with pytest.raises(KeyError, match="no 'image' column"):
        _from_disk(csv, "image")


def test_bad_arguments_fail_before_ray_starts(model, paths, tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(model))
    relative = os.path.basename(model)
    with pytest.raises(ValueError, match="relative path"):
        extract_features({"model": relative}, paths, tmp_path / "s")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        extract_features({"model": model}, paths, tmp_path / "full", to="parquet")
    with pytest.raises(ValueError, match="in-memory FeatureStore"):
        extract_features({"model": model}, paths, FeatureStore())
    with pytest.raises(TypeError, match="Image 1 is a Image"):
        extract_features(
            {"model": model}, [paths[0], random_images(1)[0]], tmp_path / "s"
        )


def test_parquet_batch_holds_every_site_of_the_local_transform(model, paths):
    # The actor's Parquet code, called in this process (the Ray job around it
    # is the one of the store tests): one row per image, one column per site.
    params = VLMEmbeddingTransformer(model, batch_size=3, on_error="nan").get_params()
    batch = {"image": np.array([*paths[:3], "/no/such.png"], dtype=object)}
    table = SiteExtractor(params, "parquet")(batch)
    assert table.column("image").to_pylist() == batch["image"].tolist()
    assert table.column("key").to_pylist() == [*map(_file_key, paths[:3]), None]
    for site, layer, pooling in [
        ("vision/l0/mean", 0, "mean"),
        ("vision/l3/pooler", 3, "pooler"),
    ]:
        column = table.column(site).to_pylist()
        local = VLMEmbeddingTransformer(model, layer=layer, pooling=pooling)
        np.testing.assert_allclose(
            np.array(column[:3]), local.fit_transform(paths[:3]), rtol=0, atol=1e-6
        )
        assert column[3] is None


# -- on the cluster ----------------------------------------------------------------
def test_resume_runs_only_the_images_not_stored(resumed, paths):
    _, result, forwarded = resumed
    missing = paths[N_IMAGES // 2 :]
    assert sorted(forwarded) == sorted(_file_key(p) for p in missing)
    assert (result.n_images, result.n_computed, result.n_already_stored) == (
        N_IMAGES,
        len(missing),
        N_IMAGES - len(missing),
    )
    assert result.failed == []


@pytest.mark.parametrize(
    ("layer", "pooling"), [(0, "mean"), ([1, -1], "cls"), (2, "max"), (-1, "pooler")]
)
def test_ray_features_equal_local_transform(
    resumed, forward_log, model, paths, layer, pooling
):
    store, _, _ = resumed
    local = VLMEmbeddingTransformer(model, layer=layer, pooling=pooling)
    expected = local.fit_transform(paths)
    _forwarded(forward_log)
    served = VLMEmbeddingTransformer(model, layer=layer, pooling=pooling, cache=store)
    got = served.fit_transform(paths)
    assert _forwarded(forward_log) == []  # every vector came from the Ray run
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_store_filled_by_ray_serves_grid_search(resumed, forward_log, model, paths):
    store, _, _ = resumed
    _forwarded(forward_log)
    y = np.arange(len(paths)) % 2
    pipe = Pipeline(
        [
            ("vlm", VLMEmbeddingTransformer(model, cache=store)),
            ("probe", LogisticRegression(max_iter=200)),
        ]
    )
    grid = {"vlm__layer": [1, -1], "vlm__pooling": ["cls", "mean", "max"]}
    search = GridSearchCV(pipe, grid, cv=2).fit(paths, y)
    assert len(search.cv_results_["params"]) == 6
    assert _forwarded(forward_log) == []


def test_store_filled_by_ray_serves_probe_layers(resumed, forward_log, model, paths):
    probing = pytest.importorskip("skvlm.probing")
    store, _, _ = resumed
    _forwarded(forward_log)
    report = probing.probe_layers(
        VLMEmbeddingTransformer(model, cache=store),
        paths,
        np.arange(len(paths)) % 2,
        stages="vision",
        layers=[0, -1],
        poolings=["cls", "mean"],
        cv=2,
    )
    assert len(report.results) == 4
    assert _forwarded(forward_log) == []


@slow_ray
def test_parquet_from_ray_dataset_of_bytes(forward_log, model, folder, paths, tmp_path):
    import pandas as pd

    dataset = ray.data.read_binary_files(str(folder), file_extensions=["png"])
    out = tmp_path / "parquet"
    result = extract_features(
        {"model": model, "batch_size": 4},
        dataset,
        out,
        to="parquet",
        num_actors=1,
        image_column="bytes",
    )
    assert (result.n_images, result.n_computed, result.failed) == (
        N_IMAGES,
        N_IMAGES,
        [],
    )
    table = pd.read_parquet(out).set_index("key")
    assert table["image"].isna().all()  # bytes carry no path
    assert "vision/l3/pooler" in table.columns and "vision/l0/mean" in table.columns
    rows = table.loc[[_file_key(p) for p in paths]]
    for site, layer, pooling in [
        ("vision/l1/mean", 1, "mean"),
        ("vision/l3/cls", 3, "cls"),
    ]:
        expected = VLMEmbeddingTransformer(model, layer=layer, pooling=pooling)
        np.testing.assert_allclose(
            np.stack(rows[site].to_numpy()),
            expected.fit_transform(paths),
            rtol=0,
            atol=1e-6,
        )


@slow_ray
def test_grid_search_on_ray_workers_reads_the_store(resumed, forward_log, model, paths):
    import joblib
    from ray.util.joblib import register_ray

    store, _, _ = resumed
    _forwarded(forward_log)
    register_ray()
    pipe = Pipeline(
        [
            ("vlm", VLMEmbeddingTransformer(model, cache=store)),
            ("probe", LogisticRegression(max_iter=200)),
        ]
    )
    grid = {"vlm__layer": [1, -1], "vlm__pooling": ["cls", "mean"]}
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=2)
    with joblib.parallel_backend("ray"):
        search.fit(paths, np.arange(len(paths)) % 2)
    assert len(search.cv_results_["params"]) == 4
    assert _forwarded(forward_log) == []
