"""The layers of DESIGN.md hold: import-linter's contracts, and no private names shared.

The contracts live in pyproject.toml ([tool.importlinter]). The tests below
also prove they can fail: the same contracts, run on a copy of the package
with one forbidden import added, must break.
"""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "skvlm"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (dev extra)"
)


def _lint(package_parent, tmp_path):
    """Run lint-imports with pyproject.toml's contracts on the package found in a dir."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_package(tmp_path):
    parent = tmp_path / "src"
    shutil.copytree(
        PACKAGE, parent / "skvlm", ignore=shutil.ignore_patterns("_data", "__pycache__")
    )
    return parent


def test_the_import_contracts_are_kept(tmp_path):
    result = _lint(ROOT, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # The store sits below the estimators: it must not import one.
        (
            "store/_serving.py",
            "from .._embedding import VLMEmbeddingTransformer",
            "Layers",
        ),
        # Another package's private module: only the public skvlm.models may be used.
        ("classifiers/_generative.py", "from ..models._base import Adapter", "Private"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    parent = _copy_package(tmp_path)
    path = parent / "skvlm" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = _lint(parent, tmp_path)
    assert result.returncode != 0, result.stdout
    assert "1 broken" in result.stdout
    broken_line = [ln for ln in result.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(broken in ln for ln in broken_line), result.stdout


def _package_of(path):
    """The package a module belongs to: ``skvlm.models`` for skvlm/models/_base.py."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1])


def _absolute(module, level, package):
    if level == 0:
        return module or ""
    base = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join(base + ([module] if module else []))


def _private_methods():
    """Names of the private methods and functions skvlm defines, by module."""
    defined = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = node.name
                if name.startswith("_") and not name.startswith("__"):
                    defined.setdefault(name, set()).add(_package_of(path))
    return defined


def _violations(source, package, defined):
    """Private names of another package that module ``source`` of ``package`` uses."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, package)
            if not source.startswith("skvlm") or source.startswith(package):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(
                        f"line {node.lineno}: from {source} import {alias.name}"
                    )
        elif isinstance(node, ast.Attribute) and node.attr in defined:
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "super":
                continue
            if package in defined[node.attr]:
                continue  # the package's own private name
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another_package():
    defined = _private_methods()
    problems = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = _violations(path.read_text(), _package_of(path), defined)
        if found:
            problems[str(path.relative_to(ROOT))] = found
    assert not problems, problems


def test_the_private_name_check_can_fail():
    defined = _private_methods()
    calls = "def f(vlm):\n    return vlm._adapter()\n"
    imports = "from ..models._loading import _memo_key\n"
    assert _violations(calls, "skvlm.inspection", defined) == ["line 2: ._adapter"]
    assert _violations(imports, "skvlm.classifiers", defined) == [
        "line 1: from skvlm.models._loading import _memo_key"
    ]
    # Inside its own package the same name is fine.
    assert _violations(calls, "skvlm.classifiers", defined) == []
