"""LinearProbeClassifier on features read lazily (memmaps, datasets, stores) and
through partial_fit: the same probe as in memory, in a few batches of memory."""

import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

from skvlm.classifiers import LinearProbeClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


class RowsOnly:
    """An h5py-like dataset: rows by slice or increasing int array, nothing else.

    It has no ``__array__``, so a probe that tried to load it whole would fail;
    it records how many rows each read asked for.
    """

    def __init__(self, X):
        self._X = X
        self.shape = X.shape
        self.dtype = X.dtype
        self.reads = []

    def __getitem__(self, item):
        if isinstance(item, slice):
            rows = np.arange(*item.indices(self.shape[0]))
        else:
            rows = np.asarray(item)
            assert rows.ndim == 1 and rows.dtype.kind == "i", item
            assert np.all(np.diff(rows) > 0), "h5py wants increasing indices"
        self.reads.append(rows.size)
        return self._X[rows]


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=700,
        n_features=12,
        n_informative=6,
        n_classes=3,
        n_clusters_per_class=1,
        random_state=0,
    )
    # Uneven scales and offsets, so standardisation matters; float32 as a store.
    X = (X * np.linspace(0.5, 20, 12) + np.linspace(-5, 5, 12)).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def memmap(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "X.npy"
    np.save(path, data[0])
    return np.load(path, mmap_mode="r")


def _probe(**params):
    return LinearProbeClassifier(
        **{
            "solver": "adam",
            "batch_size": 64,
            "max_iter": 12,
            "device": "cpu",
            "random_state": 0,
            **params,
        }
    )


def _assert_same_probe(got, want):
    """Bitwise the same fitted probe: weights, statistics and history."""
    for name in ("coefs_", "intercepts_"):
        for a, b in zip(getattr(got, name), getattr(want, name), strict=True):
            assert_array_equal(a, b, err_msg=name)
    for name in ("coef_", "intercept_", "mean_", "scale_", "classes_"):
        if hasattr(want, name) and getattr(want, name) is not None:
            assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for name in (
        "n_iter_",
        "best_epoch_",
        "loss_curve_",
        "validation_scores_",
        "validation_loss_curve_",
    ):
        assert getattr(got, name) == getattr(want, name), name


CONFIGS = {
    "linear, early stopping": {},
    "mlp": {"hidden_layer_sizes": (8,), "activation": "tanh"},
    "raw features, in order": {
        "standardize": False,
        "shuffle": False,
        "learning_rate_init": 1e-2,
    },
    "penalised, no early stopping": {
        "alpha": 0.5,
        "weight_decay": 0.01,
        "early_stopping": False,
    },
}


@pytest.mark.parametrize("source", ["memmap", "rows-only"])
@pytest.mark.parametrize("config", CONFIGS)
def test_streamed_fit_is_bitwise_the_in_memory_fit(data, memmap, source, config):
    X, y = data
    lazy = memmap if source == "memmap" else RowsOnly(X)
    params = CONFIGS[config]
    want = _probe(**params).fit(X, y)
    got = _probe(**params).fit(lazy, y)
    _assert_same_probe(got, want)
    # Prediction reads a block at a time; same labels, same scores.
    assert_array_equal(got.predict(lazy), want.predict(X))
    assert_allclose(got.predict_proba(lazy), want.predict_proba(X), rtol=1e-6)
    assert got.score(lazy, y) == want.score(X, y)
    if source == "rows-only":
        assert max(lazy.reads) <= 64  # never more than batch_size rows at once


def test_binary_string_labels_stream_too(data, memmap):
    X, y = data
    names = np.array(["cat", "dog", "dog"])[y]
    want = _probe().fit(X, names)
    got = _probe().fit(memmap, names)
    _assert_same_probe(got, want)
    assert_array_equal(got.predict(memmap), want.predict(X))


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_standardisation_is_numpys_mean_and_std(data, batch_size):
    X, y = data
    lazy = RowsOnly(X)
    probe = _probe(batch_size=batch_size, max_iter=1, early_stopping=False)
    probe.fit(lazy, y)
    # An independent reference: numpy's two-pass statistics in float64.
    assert_allclose(probe.mean_, X.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert_allclose(probe.scale_, X.astype(np.float64).std(axis=0), rtol=1e-12)
    assert max(lazy.reads) <= batch_size


def test_memmap_views_offsets_and_layouts_read_the_right_rows(data, tmp_path):
    X, y = data
    # A raw file with a header of 100 bytes: the offset is not page-aligned.
    path = tmp_path / "raw.f32"
    with open(path, "wb") as f:
        f.write(b"h" * 100)
        f.write(np.ascontiguousarray(X).tobytes())
    raw = np.memmap(path, np.float32, "r", offset=100, shape=X.shape)
    fortran = np.lib.format.open_memmap(
        tmp_path / "f.npy",
        mode="w+",
        dtype=np.float32,
        shape=X.shape,
        fortran_order=True,
    )
    fortran[:] = X
    copy_on_write = np.memmap(path, np.float32, "c", offset=100, shape=X.shape)
    cases = {
        "offset": (raw, X),
        "row view": (raw[37:], X[37:]),
        "column view": (raw[:, 2:9], X[:, 2:9]),
        "fortran": (fortran, X),
        "copy-on-write": (copy_on_write, X),
    }
    for lazy, in_memory in cases.values():
        params = dict(max_iter=3, batch_size=50)
        n = in_memory.shape[0]
        got = _probe(**params).fit(lazy, y[-n:])
        want = _probe(**params).fit(np.array(in_memory), y[-n:])
        _assert_same_probe(got, want)
        assert_array_equal(
            got.decision_function(lazy), want.decision_function(in_memory)
        )


def test_lbfgs_streams_the_full_batch_gradient(data, memmap):
    X, y = data
    params = dict(solver="lbfgs", alpha=1.0, max_iter=100, batch_size=64)
    want = _probe(**params).fit(X, y)
    got = _probe(**params).fit(memmap, y)
    # The streamed objective adds per-block means weighted by their rows; in
    # memory one reduction covers all rows. The sums differ in float32
    # rounding (1e-7 relative), which the line searches carry into the
    # weights at about 1e-5 (measured: 6e-6): far below what moves a label.
    assert_allclose(got.coef_, want.coef_, rtol=1e-4, atol=1e-5)
    assert_allclose(got.loss_curve_[-1], want.loss_curve_[-1], rtol=1e-5)
    assert_array_equal(got.predict(memmap), want.predict(X))


# --------------------------------------------------------------- partial_fit
@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("hidden", [(), ("n_features",)])
def test_partial_fit_epochs_are_fit_epochs(data, memmap, streamed, hidden):
    X, y = data
    want = _probe(hidden_layer_sizes=hidden, max_iter=4, early_stopping=False)
    want.fit(X, y)
    probe = _probe(hidden_layer_sizes=hidden)
    for _ in range(4):
        probe.partial_fit(memmap if streamed else X, y, classes=np.unique(y))
    _assert_same_probe(probe, want)


def test_partial_fit_over_fits_batches_in_fits_order_is_fit(data):
    # Without shuffling, an epoch of fit is its batches in row order: feeding
    # those batches to partial_fit, epoch after epoch, is the same training.
    X, y = data
    params = dict(batch_size=64, shuffle=False, standardize=False)
    want = _probe(**params, max_iter=3, early_stopping=False).fit(X, y)
    probe = _probe(**params)
    for _ in range(3):
        for start in range(0, len(y), 64):
            rows = slice(start, start + 64)
            probe.partial_fit(X[rows], y[rows], classes=[0, 1, 2])
    got, expected = probe.coefs_ + probe.intercepts_, want.coefs_ + want.intercepts_
    for a, b in zip(got, expected, strict=True):
        assert_array_equal(a, b)
    assert probe.n_iter_ == 3 * len(range(0, len(y), 64))


def test_partial_fit_state_survives_pickle_without_torch(data):
    X, y = data
    halves = (slice(0, 350), slice(350, None))
    straight = _probe()
    for rows in halves:
        straight.partial_fit(X[rows], y[rows], classes=[0, 1, 2])
    resumed = _probe().partial_fit(X[halves[0]], y[halves[0]], classes=[0, 1, 2])
    blob = pickle.dumps(resumed)
    assert b"torch" not in blob
    resumed = pickle.loads(blob).partial_fit(X[halves[1]], y[halves[1]])
    _assert_same_probe(resumed, straight)


def test_partial_fit_first_call_sets_the_statistics_and_classes(data):
    X, y = data
    probe = _probe().partial_fit(X[:100], y[:100], classes=[2, 0, 1, 3])
    assert_array_equal(probe.classes_, [0, 1, 2, 3])
    assert probe.coef_.shape == (4, 12)  # a class never seen yet has its logit
    assert_allclose(probe.mean_, X[:100].astype(np.float64).mean(axis=0), rtol=1e-12)
    mean = probe.mean_.copy()
    probe.partial_fit(X[100:], y[100:])
    assert_array_equal(probe.mean_, mean)
    assert probe.n_iter_ == len(probe.loss_curve_) == probe.best_epoch_ == 2
    assert probe.validation_scores_ is None


def test_partial_fit_after_fit_continues_from_its_weights(data):
    X, y = data
    fitted = _probe(max_iter=5).fit(X, y)
    assert fitted.validation_scores_ is not None
    continued = pickle.loads(pickle.dumps(fitted)).partial_fit(X, y)
    assert continued.n_iter_ == fitted.n_iter_ + 1
    assert continued.validation_scores_ is None
    assert_array_equal(continued.mean_, fitted.mean_)
    assert not np.array_equal(continued.coef_, fitted.coef_)
    # With a vanishing step, the epoch leaves fit's weights where they were
    # (a restart would start from zero weights).
    still = pickle.loads(pickle.dumps(fitted)).set_params(learning_rate_init=1e-9)
    still.partial_fit(X, y)
    assert_allclose(still.coef_, fitted.coef_, atol=1e-6)
    assert np.abs(fitted.coef_).max() > 1e-2
    # A new fit forgets partial_fit's Adam state.
    refit = continued.fit(X, y)
    _assert_same_probe(refit, fitted)


def test_partial_fit_errors_are_named(data):
    X, y = data
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        _probe().partial_fit(X, y)
    with pytest.raises(ValueError, match="at least 2"):
        _probe().partial_fit(X, y, classes=[0])
    with pytest.raises(ValueError, match=r"labels \[7\] not in classes"):
        _probe().partial_fit(X, np.where(y == 2, 7, y), classes=[0, 1, 2])
    probe = _probe().partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="not the classes_ of the earlier calls"):
        probe.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="X has 11 features, but"):
        probe.partial_fit(X[:, 1:], y)
    with pytest.raises(ValueError, match="learning_rate_init"):
        _probe(learning_rate_init=-1.0).partial_fit(X, y, classes=[0, 1, 2])
    lbfgs = _probe(solver="lbfgs")
    assert not hasattr(lbfgs, "partial_fit")
    with pytest.raises(AttributeError, match="no attribute 'partial_fit'") as error:
        lbfgs.partial_fit(X, y, classes=[0, 1, 2])
    assert "only available with solver='adam'" in str(error.value.__cause__)


# ------------------------------------------------------------------ bad input
def test_lazy_input_errors_name_the_problem(data, tmp_path):
    X, y = data
    bad = X.copy()
    bad[123, 4] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="X row 123 contains NaN or infinity"):
        _probe().fit(np.load(tmp_path / "bad.npy", mmap_mode="r"), y)
    # A first partial_fit that fails leaves the probe unfitted, not half-made.
    probe = _probe(standardize=False)
    with pytest.raises(ValueError, match="X row 123 contains NaN"):
        probe.partial_fit(RowsOnly(bad), y, classes=[0, 1, 2])
    assert not hasattr(probe, "classes_")
    assert probe.partial_fit(X, y, classes=[0, 1, 2]).n_iter_ == 1
    cube = RowsOnly(X.reshape(70, 10, 12))
    with pytest.raises(ValueError, match=r"must be 2-D.*\(70, 10, 12\)"):
        _probe().fit(cube, y[:70])
    with pytest.raises(ValueError, match="X has 700 rows and y has 699 labels"):
        _probe().fit(RowsOnly(X), y[:-1])
    strings = RowsOnly(X)
    strings.dtype = np.dtype("U3")
    with pytest.raises(ValueError, match="must be numeric"):
        _probe().fit(strings, y)
    probe = _probe(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="X has 11 features, but .* expecting 12"):
        probe.predict(RowsOnly(X[:, 1:]))


def test_lazy_input_warns_when_fitted_with_feature_names(data):
    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(12)])
    probe = _probe(max_iter=2).fit(frame, y)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        probe.predict(RowsOnly(X))
    refit = probe.fit(RowsOnly(X), y)
    assert not hasattr(refit, "feature_names_in_")


# ------------------------------------------------------------------ memory
PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from skvlm.classifiers import LinearProbeClassifier

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS

    torch.set_num_threads(1)
    X = np.load(sys.argv[1], mmap_mode="r")
    y = np.load(sys.argv[2])
    params = dict(
        solver="adam", batch_size=512, max_iter=1, device="cpu", random_state=0
    )
    LinearProbeClassifier(**params).fit(np.array(X[:2048]), y[:2048])  # warm-up
    reset_peak()
    base = rss("VmRSS")
    probe = LinearProbeClassifier(**params).fit(X, y)  # statistics, epoch, validation
    accuracy = float(np.mean(probe.predict(X) == y))
    streamed = rss("VmHWM") - base
    reset_peak()
    base = rss("VmRSS")
    X.sum(dtype=np.float64)  # the control: reading through the mapping
    mapped = rss("VmHWM") - base
    print(streamed, mapped, accuracy)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_is_batches_not_data(tmp_path):
    """A probe trains on 256 MiB of features within a 32 MiB memory budget."""
    n_rows, n_features = 65_536, 1024  # float32: 256 MiB on disk
    budget = 32 * 2**20
    path = tmp_path / "X.npy"
    X = np.lib.format.open_memmap(path, "w+", np.float32, (n_rows, n_features))
    rng = np.random.default_rng(0)
    w = rng.standard_normal(n_features).astype(np.float32)
    y = np.empty(n_rows, dtype=np.int64)
    for start in range(0, n_rows, 8192):
        block = rng.standard_normal((8192, n_features), dtype=np.float32)
        X[start : start + 8192] = block
        y[start : start + 8192] = (block @ w > 0) + 2 * (block[:, 0] > 0)
    X.flush()
    del X
    np.save(tmp_path / "y.npy", y)
    try:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, str(path), str(tmp_path / "y.npy")],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        path.unlink()
    assert done.returncode == 0, done.stderr
    streamed, mapped, accuracy = done.stdout.split()
    data_bytes = n_rows * n_features * 4
    # The measurement sees file pages mapped into the process: reading the
    # memmap through its mapping grows the peak by most of the file.
    assert int(mapped) > data_bytes // 2
    # The probe's peak grew by a few batches (2 MiB each), not by the data.
    assert int(streamed) < budget < data_bytes // 8 + 1
    assert float(accuracy) > 0.6  # and it learnt


def test_which_inputs_stream(data, memmap):
    from scipy import sparse

    from skvlm.classifiers._lazy_array import is_lazy

    X, _ = data
    assert is_lazy(memmap) and is_lazy(memmap[10:]) and is_lazy(RowsOnly(X))
    in_memory = [
        X,
        X.tolist(),
        np.array(memmap[:5]),  # a copy: memory, not the file
        memmap[:, 0],  # 1-D: sklearn's own error
        pd.DataFrame(X),
        torch.from_numpy(X),
        sparse.csr_matrix(X),
    ]
    assert not any(is_lazy(x) for x in in_memory)
