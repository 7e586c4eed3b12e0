"""Lazy package attributes: ``import skvlm`` and ``skvlm --help`` stay cheap.

Behavioural, not timed: a fresh interpreter's ``sys.modules`` says whether torch
or transformers were imported. The times are in benchmarks/bench_startup.py.
"""

import importlib
import json
import subprocess
import sys

import pytest

import skvlm

HEAVY = ["torch", "transformers"]
PACKAGES = [
    "skvlm",
    "skvlm.analysis",
    "skvlm.classifiers",
    "skvlm.datasets",
    "skvlm.inspection",
    "skvlm.models",
    "skvlm.selection",
    "skvlm.testing",
]


def _modules_after(code):
    """The heavy modules a fresh interpreter holds after running ``code``."""
    script = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import skvlm",
        "import skvlm.cli",
        # --help prints and returns 0; the parser needs no model library
        "from skvlm.cli import main; import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0 and main(['probe', '--help']) == 0",
        "import skvlm, skvlm.models, skvlm.classifiers, skvlm.inspection",
    ],
    ids=["import", "cli", "help", "subpackages"],
)
def test_import_does_not_load_torch_or_transformers(code):
    assert _modules_after(code) == []


def test_using_an_estimator_does_load_them():
    # the check above can fail: the same probe sees them once a name is used
    assert "torch" in _modules_after("from skvlm import VLMEmbeddingTransformer")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves_and_is_listed(name):
    package = importlib.import_module(name)
    assert package.__all__ == sorted(package.__all__)
    for attr in package.__all__:
        value = getattr(package, attr)
        assert attr in package.__dict__  # cached: the next read skips __getattr__
        assert attr in dir(package)
        if hasattr(value, "__module__") and not isinstance(value, type(sys)):
            assert value.__module__.startswith("skvlm.")
    namespace = {}
    exec(f"from {name} import *", namespace)
    assert set(package.__all__) <= set(namespace)


def test_unknown_names_and_submodules():
    with pytest.raises(AttributeError, match="module 'skvlm' has no attribute 'nope'"):
        skvlm.nope  # noqa: B018
    assert not hasattr(skvlm.classifiers, "VLMEmbeddingTransformer")
    # public submodules are attributes, as an eager __init__ made them
    assert skvlm.inspection.permutation_importance.__name__ == "permutation_importance"
    assert skvlm.datasets.load_digit_images.__module__ == "skvlm.datasets._digits"
    assert isinstance(skvlm.__version__, str)
