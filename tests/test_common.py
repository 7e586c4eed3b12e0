"""sklearn's estimator checks over every numeric estimator skvlm exports.

The estimators' own test files do not repeat these checks.

Estimators whose X is images (VLMEmbeddingTransformer, the VLM classifiers) declare
it with ``__sklearn_tags__`` and are tested in their own files instead: sklearn's
checks feed 2-D float arrays, which are not images.
"""

import importlib
import inspect

from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import skvlm

SUBPACKAGES = ["skvlm", "skvlm.classifiers", "skvlm.selection", "skvlm.inspection"]

# Cheap constructor arguments for estimators that need them; the written reason
# for every check expected to fail lives in EXPECTED_FAILED.
CHEAP = {
    # A larger step than the default, so 20 epochs fit sklearn's tiny check sets.
    "LinearProbeClassifier": lambda cls: cls(
        max_iter=20,
        batch_size=32,
        learning_rate_init=0.05,
        device="cpu",
        random_state=0,
    ),
    "RandomProbeSelector": lambda cls: cls(
        _logistic(), n_probes=2, cv=2, random_state=0
    ),
}
EXPECTED_FAILED: dict[str, dict[str, str]] = {}
# Further configurations that take another code path (LinearProbe's L-BFGS solver).
EXTRA = [
    lambda found: (
        found["LinearProbeClassifier"](
            solver="lbfgs", max_iter=50, device="cpu", random_state=0
        )
        if "LinearProbeClassifier" in found
        else None
    ),
]


def _logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=200)


def numeric_estimators():
    found = {}
    for name in SUBPACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
                found[attr] = obj
    instances = [est for make in EXTRA for est in [make(found)] if est is not None]
    for name, cls in sorted(found.items()):
        est = CHEAP[name](cls) if name in CHEAP else _default(cls)
        if est is None or not est.__sklearn_tags__().input_tags.two_d_array:
            continue  # takes images, not a numeric matrix
        instances.append(est)
    return instances


def _default(cls):
    try:
        return cls()
    except TypeError:
        return None


def _expected(estimator):
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


def test_vlm_estimators_declare_image_input():
    tags = skvlm.VLMEmbeddingTransformer().__sklearn_tags__()
    assert not tags.input_tags.two_d_array


@parametrize_with_checks(numeric_estimators(), expected_failed_checks=_expected)
def test_sklearn_compatible(estimator, check):
    check(estimator)
