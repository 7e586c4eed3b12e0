"""Every public parameter name is in docs/glossary.rst (issue 20).

The estimators and functions are found by walking the public namespaces, so a
class or function added later is covered without editing this file.
"""

import importlib
import inspect
import re
import warnings
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.rst"

NAMESPACES = [
    "skvlm",
    "skvlm.analysis",
    "skvlm.callbacks",
    "skvlm.classifiers",
    "skvlm.datasets",
    "skvlm.distributed",
    "skvlm.inspection",
    "skvlm.metrics",
    "skvlm.models",
    "skvlm.pooling",
    "skvlm.selection",
    "skvlm.store",
    "skvlm.tuning",
]
OPTIONAL = {"skvlm.distributed": "ray"}


def glossary_terms(text):
    """``(current, deprecated)``: the terms of the glossary's two parts.

    A term is a line indented by three spaces inside a ``.. glossary::``
    directive; its definition is indented further.
    """
    current, deprecated = set(), set()
    target, inside = current, False
    for line in text.splitlines():
        if line.startswith("Deprecated names"):
            target = deprecated
        if line.startswith(".. glossary::"):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            inside = False
        if inside and re.match(r"^   [^ :]", line):
            target.add(line.strip())
    return current, deprecated


def known(name, terms):
    """A name is known if it is a term, or its ``prefix__`` has a ``prefix__*`` term."""
    if name in terms:
        return True
    prefix, sep, _ = name.partition("__")
    return bool(sep) and f"{prefix}__*" in terms


def _public_objects():
    for namespace in NAMESPACES:
        if namespace in OPTIONAL:
            pytest.importorskip(OPTIONAL[namespace])
        module = importlib.import_module(namespace)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            yield f"{namespace}.{name}", obj


def parameter_names(obj):
    """The parameter names a user passes: ``get_params()`` of an estimator (the
    flat names, prefixed ones included), a function's signature. Other classes
    (exceptions, containers) are not walked."""
    if inspect.isclass(obj):
        if not issubclass(obj, BaseEstimator) or inspect.isabstract(obj):
            return []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                estimator = obj()
        except TypeError:  # required arguments: read the signature
            return _signature_names(obj.__init__)[1:]
        return list(estimator.get_params(deep=False))
    if callable(obj):
        return _signature_names(obj)
    return []


def _signature_names(func):
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def unknown_names(objects, current, deprecated):
    """``["where: name", ...]`` for every name the glossary lacks."""
    terms = current | deprecated
    return [
        f"{where}: {name}"
        for where, obj in objects
        for name in parameter_names(obj)
        if not known(name, terms)
    ]


@pytest.fixture(scope="module")
def terms():
    return glossary_terms(GLOSSARY.read_text())


def test_every_public_parameter_is_in_the_glossary(terms):
    objects = list(_public_objects())
    assert len(objects) > 40  # the walk found the API, not an empty namespace
    missing = unknown_names(objects, *terms)
    assert not missing, (
        "Parameter names missing from docs/glossary.rst (add an entry, or use "
        "the glossary's word for the idea):\n  " + "\n  ".join(missing)
    )


def test_the_walk_reaches_estimators_and_functions(terms):
    found = dict(_public_objects())
    from skvlm import VLMEmbeddingTransformer
    from skvlm.inspection import spatial_importance

    assert found["skvlm.VLMEmbeddingTransformer"] is VLMEmbeddingTransformer
    assert found["skvlm.inspection.spatial_importance"] is spatial_importance
    assert "verbose" in parameter_names(VLMEmbeddingTransformer)
    assert "n_repeats" in parameter_names(spatial_importance)


def test_an_unknown_name_fails(terms):
    class FakeEstimator(BaseEstimator):
        def __init__(self, verbose=1, show_progress_bar=True):
            self.verbose = verbose
            self.show_progress_bar = show_progress_bar

    def fake_function(X, *, n_threads=2, **kwargs):
        return X

    missing = unknown_names(
        [("FakeEstimator", FakeEstimator), ("fake_function", fake_function)], *terms
    )
    assert missing == [
        "FakeEstimator: show_progress_bar",
        "fake_function: n_threads",
    ]


def test_prefixed_names_need_their_group():
    current = {"lora__*", "verbose"}
    assert known("lora__r", current) and known("verbose", current)
    assert not known("optimizer__lr", current)
    assert not known("lora", current)


def test_the_parser_reads_both_parts():
    text = """Title
=====

.. glossary::

   alpha
      The first.

   beta
   gamma
      Two terms, one entry.

Deprecated names
----------------

.. glossary::

   old
      Replaced by :term:`alpha`.
"""
    assert glossary_terms(text) == ({"alpha", "beta", "gamma"}, {"old"})


def test_deprecated_names_are_not_current(terms):
    current, deprecated = terms
    assert deprecated and not current & deprecated
    assert "progress" in deprecated and "verbose" in current
