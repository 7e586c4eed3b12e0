"""skvlm/_sklearn_compat.py is the one place private scikit-learn names come from."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    check_scoring,
    get_scorer,
    make_scorer,
    top_k_accuracy_score,
)
from sklearn.model_selection import cross_validate
from sklearn.utils import _safe_indexing as sklearn_safe_indexing

import skvlm
from skvlm import _sklearn_compat as compat
from skvlm.inspection import _scoring

ROOT = Path(skvlm.__file__).parent
REPO = ROOT.parent
COMPAT = ROOT / "_sklearn_compat.py"
# Private sklearn attributes read off sklearn objects (an import scan cannot see
# them): the estimator's parameter check and the scorers' internals.
PRIVATE_ATTRIBUTES = {
    "_validate_params",
    "_scorers",
    "_score_func",
    "_response_method",
    "_sign",
}


def _is_private_sklearn(module):
    parts = (module or "").split(".")
    return parts[0] == "sklearn" and any(p.startswith("_") for p in parts[1:])


def private_sklearn_uses(path):
    """``(line, what)`` for every private sklearn name the module at ``path`` uses."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sklearn"
        ):
            names = [a.name for a in node.names if a.name.startswith("_")]
            if _is_private_sklearn(node.module) or names:
                found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}")
                for a in node.names
                if _is_private_sklearn(a.name)
            ]
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            found.append((node.lineno, f".{node.attr}"))
    return found


def _modules():
    return sorted(p for p in ROOT.rglob("*.py") if p != COMPAT)


def test_no_module_but_the_compat_module_uses_private_sklearn_names():
    offenders = {
        str(path.relative_to(ROOT)): uses
        for path in _modules()
        if (uses := private_sklearn_uses(path))
    }
    assert offenders == {}, (
        "import private sklearn names from skvlm._sklearn_compat (add them there, "
        f"with a fallback if they moved between releases): {offenders}"
    )


def test_the_scan_sees_each_kind_of_private_use(tmp_path):
    # The test above passes only because the scan finds nothing: show it finds.
    source = tmp_path / "module.py"
    source.write_text(
        "import sklearn.utils._param_validation\n"
        "from sklearn.base import _fit_context\n"
        "from sklearn.metrics._scorer import check_scoring\n"
        "from sklearn.base import clone\n"
        "estimator._validate_params()\n"
        "scorer._scorers\n"
    )
    assert sorted(line for line, _ in private_sklearn_uses(source)) == [1, 2, 3, 5, 6]


def test_fallbacks_equal_sklearns_own():
    scores = [{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}]
    local = compat._local_aggregate_score_dicts(scores)
    np.testing.assert_array_equal(local["a"], compat.aggregate_score_dicts(scores)["a"])
    assert local["b"] == compat.aggregate_score_dicts(scores)["b"] == ["x", "y"]
    X = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(
        compat.safe_indexing(X, [2, 0]), sklearn_safe_indexing(X, [2, 0])
    )


def test_scorer_internals_read_as_sklearn_defines_them():
    # What permutation importance's fast paths rely on, checked against the
    # scorers' public behaviour rather than against the compat code itself.
    assert compat.scorer_spec(get_scorer("accuracy")) == (
        accuracy_score,
        "predict",
        {},
        1,
    )
    spec = compat.scorer_spec(
        make_scorer(top_k_accuracy_score, response_method="predict_proba", k=2)
    )
    assert spec.kwargs == {"k": 2} and spec.response_method == "predict_proba"
    assert compat.scorer_spec(get_scorer("neg_log_loss")).sign == -1
    assert compat.scorer_spec(len) is None
    probe = LogisticRegression()
    both = check_scoring(probe, ["accuracy", "neg_log_loss"])
    assert set(compat.multimetric_scorers(both)) == {"accuracy", "neg_log_loss"}
    assert compat.is_passthrough_scorer(check_scoring(probe))
    assert not compat.is_passthrough_scorer(get_scorer("accuracy"))
    assert compat.is_response_scorer(get_scorer("roc_auc"))
    assert not compat.is_response_scorer(lambda est, X, y: 0.0)


def test_without_the_scorer_classes_permutation_importance_takes_the_general_path(
    monkeypatch,
):
    # A release that drops the private scorer classes turns the fast path off,
    # and the numbers stay sklearn's.
    from sklearn.inspection import permutation_importance as sklearn_importance

    from skvlm.inspection import permutation_importance

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
    probe = LogisticRegression().fit(X, y)
    scorer = get_scorer("accuracy")
    assert _scoring.scorer_uses_only_outputs(scorer, probe)
    for name in ("_BaseScorer", "_MultimetricScorer", "_PassthroughScorer", "_Scorer"):
        monkeypatch.setattr(compat, name, None)
    assert not _scoring.scorer_uses_only_outputs(scorer, probe)
    assert not _scoring.is_plain_accuracy(scorer, probe)
    ours = permutation_importance(
        probe, X, y, scoring="accuracy", n_repeats=3, random_state=0
    )
    theirs = sklearn_importance(
        probe, X, y, scoring="accuracy", n_repeats=3, random_state=0
    )
    np.testing.assert_allclose(ours.importances, theirs.importances)


def test_validate_parameters_refuses_what_the_constraints_refuse():
    with pytest.raises(ValueError, match="'C' parameter"):
        compat.validate_parameters(LogisticRegression(C=-1.0))
    compat.validate_parameters(LogisticRegression())


def test_oldest_pin_is_the_floor_pyproject_declares():
    declared = re.search(
        r'"scikit-learn>=([0-9.]+)"', (REPO / "pyproject.toml").read_text()
    )
    pinned = re.search(
        r"^scikit-learn==([0-9.]+)$",
        (REPO / "constraints" / "sklearn-oldest.txt").read_text(),
        re.MULTILINE,
    )
    assert declared and pinned
    floor = tuple(int(p) for p in declared.group(1).split("."))
    oldest = tuple(int(p) for p in pinned.group(1).split("."))
    assert oldest[: len(floor)] == floor, (
        f"pyproject.toml says scikit-learn>={declared.group(1)} but the oldest "
        f"release tested is {pinned.group(1)}: keep them the same."
    )


def test_cross_validate_still_aggregates_as_we_expect():
    # skvlm's multi-metric permutation scores are aggregated the way
    # cross_validate aggregates its own: same keys, arrays of floats.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    out = cross_validate(LogisticRegression(), X, y, scoring=["accuracy"], cv=3)
    folds = [{"accuracy": float(v)} for v in out["test_accuracy"]]
    np.testing.assert_array_equal(
        compat.aggregate_score_dicts(folds)["accuracy"], out["test_accuracy"]
    )
