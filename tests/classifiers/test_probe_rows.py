"""Training rows in float32: a finite value float32 cannot hold is a clear error."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from skvlm.classifiers import LinearProbeClassifier
from skvlm.classifiers._probe_rows import FLOAT32_MAX, check_float32_range

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=60, n_features=4, random_state=0)


def _probe(**params):
    return LinearProbeClassifier(device="cpu", random_state=0, max_iter=5, **params)


def test_finite_features_beyond_float32_are_an_error_naming_the_value(data):
    X, y = data
    X = X * 1e300  # finite in float64, inf in float32
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"X\[0, 0\] \(column 'a'\).*float32.*Rescale"):
        _probe().fit(frame, y)
    with pytest.raises(ValueError, match=r"X\[0, 0\] .*float32"):
        _probe(solver="lbfgs").fit(X, y)


def test_features_beyond_float32_read_lazily_are_an_error(data, tmp_path):
    X, y = data
    X = X.copy()
    X[37, 2] = -1e300
    path = tmp_path / "X.npy"
    np.save(path, X)
    lazy = np.load(path, mmap_mode="r")
    for standardize in (True, False):
        with pytest.raises(ValueError, match=r"X\[37, 2\] = -1e\+300 .*float32"):
            _probe(standardize=standardize).fit(lazy, y)


def test_values_near_float32s_limit_that_overflow_once_standardised(data):
    X, y = data
    X = X.copy()
    X[:, 1] = 0.0
    X[:3, 1] = [3.4e38, 3.4e38, -3.4e38]  # each fits; x - mean does not
    with pytest.raises(ValueError, match=r"X\[2, 1\] .*once standardised"):
        _probe(early_stopping=False).fit(X, y)


def test_large_features_that_fit_in_float32_train_as_scaled_ones(data):
    X, y = data
    # Standardisation makes the probe blind to a common scale: the same
    # predictions from X and from X * 1e35 (which float32 holds).
    small = _probe().fit(X, y)
    large = _probe().fit(X * 1e35, y)
    assert np.isfinite(large.predict_proba(X * 1e35)).all()
    np.testing.assert_array_equal(large.predict(X * 1e35), small.predict(X))


def test_the_check_names_rows_of_a_block_by_their_place_in_x():
    block = np.array([[1.0, 2.0], [FLOAT32_MAX * 2, 0.0]])
    with pytest.raises(ValueError, match=r"X\[11, 0\]"):
        check_float32_range(block, rows=np.array([4, 11]))
    check_float32_range(np.ones((2, 2), np.float32))  # float32 holds it already
    check_float32_range(np.array([[FLOAT32_MAX, -FLOAT32_MAX]]))  # the limit itself
