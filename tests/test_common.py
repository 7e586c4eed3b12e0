"""sklearn's estimator checks over every estimator skvlm exports.

Numeric estimators (X a 2-D float array) get every check of
``parametrize_with_checks``; their own test files do not repeat them.

Estimators whose X is images (VLMEmbeddingTransformer, the VLM classifiers)
declare it with ``__sklearn_tags__``: sklearn's fitting checks feed 2-D float
arrays, which are not images, so their fitted behaviour is tested in their own
files. The checks that need no data (clone, repr, get/set params, nothing set in
``__init__``, default construction, mixin order, tags) run on them here, with
model loading forbidden: none of these may touch the model.
"""

import importlib
import inspect
import pkgutil

import pytest
import transformers
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    check_valid_tag_types,
    parametrize_with_checks,
)

import skvlm
from skvlm.testing import make_tiny_clip

# Cheap constructor arguments for estimators that need them; the written reason
# for every check expected to fail lives in EXPECTED_FAILED.
CHEAP = {
    # A larger step than the default, so 20 epochs fit sklearn's tiny check sets.
    "LinearProbeClassifier": lambda cls: cls(
        solver="adam",
        max_iter=20,
        batch_size=32,
        learning_rate_init=0.05,
        device="cpu",
        random_state=0,
    ),
    # Three folds: sklearn's smallest check sets have 3 rows of a class or more.
    "LinearProbeCV": lambda cls: cls(Cs=3, cv=3, device="cpu"),
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
# sklearn's checks that need no data. Each takes (name, estimator).
DATA_FREE_CHECKS = [
    check_estimator_cloneable,
    check_estimator_repr,
    check_get_params_invariance,
    check_set_params,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_do_not_raise_errors_in_init_or_set_params,
    check_mixin_order,
    check_estimator_tags_renamed,
    check_valid_tag_types,
]
# Every estimator class skvlm's image estimators must include (the search below
# has to find at least these).
KNOWN_IMAGE_ESTIMATORS = {
    "CLIPZeroShotClassifier",
    "VLMEmbeddingTransformer",
    "VLMGenerativeClassifier",
}


def _logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=200)


def all_estimators():
    """``{name: class}`` of every estimator in the ``__all__`` of skvlm's packages."""
    packages = ["skvlm"] + [
        f"skvlm.{info.name}"
        for info in pkgutil.iter_modules(skvlm.__path__)
        if info.ispkg and not info.name.startswith("_")
    ]
    found = {}
    for name in packages:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # an optional extra (Ray) is missing
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
                found[attr] = obj
    return found


def _instances():
    """``(name, estimator)`` of every estimator skvlm exports, cheaply constructed."""
    out = []
    for name, cls in sorted(all_estimators().items()):
        est = CHEAP[name](cls) if name in CHEAP else _default(cls)
        if est is not None:
            out.append((name, est))
    return out


def _takes_images(estimator):
    return not estimator.__sklearn_tags__().input_tags.two_d_array


def numeric_estimators():
    found = all_estimators()
    instances = [est for make in EXTRA for est in [make(found)] if est is not None]
    return instances + [est for _, est in _instances() if not _takes_images(est)]


def image_estimators():
    return [type(est) for _, est in _instances() if _takes_images(est)]


def _default(cls):
    try:
        return cls()
    except TypeError:
        return None


def _expected(estimator):
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


def forbid_model_loading(monkeypatch):
    """Make any attempt to load a config, processor or weights fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a data-free check tried to load a model: {args}")

    for cls in (
        transformers.AutoConfig,
        transformers.PretrainedConfig,
        transformers.PreTrainedModel,
        transformers.AutoProcessor,
        transformers.AutoImageProcessor,
        transformers.AutoTokenizer,
        transformers.ProcessorMixin,
    ):
        monkeypatch.setattr(cls, "from_pretrained", refuse)


@pytest.fixture
def no_model_loading(monkeypatch):
    forbid_model_loading(monkeypatch)


def test_vlm_estimators_declare_image_input():
    tags = skvlm.VLMEmbeddingTransformer().__sklearn_tags__()
    assert not tags.input_tags.two_d_array


def test_the_search_finds_every_image_estimator():
    assert KNOWN_IMAGE_ESTIMATORS <= {cls.__name__ for cls in image_estimators()}


@pytest.mark.parametrize("cls", image_estimators(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda check: check.__name__)
def test_image_estimator_data_free_checks(cls, check, no_model_loading):
    check(cls.__name__, cls())


def test_model_loading_guard_catches_a_load(tmp_path, monkeypatch):
    # The data-free checks pass because nothing loads, not because the guard
    # misses loads: with it on, a fit (which loads) fails. A fresh checkpoint,
    # so that no earlier test's loaded model is served from the registry.
    path = make_tiny_clip(tmp_path)
    forbid_model_loading(monkeypatch)
    with pytest.raises(AssertionError, match="tried to load a model"):
        skvlm.VLMEmbeddingTransformer(path).fit()


@parametrize_with_checks(numeric_estimators(), expected_failed_checks=_expected)
def test_sklearn_compatible(estimator, check):
    check(estimator)
