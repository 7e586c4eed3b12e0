"""The layers of DESIGN.md hold: import-linter's contracts, and no private names shared.

The contracts live in pyproject.toml ([tool.importlinter]). The tests below
also prove they can fail: the same contracts, run on a copy of the package
with one forbidden import added, must break.
"""

import ast
import importlib.util
import os
import re
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


# -- other packages' private names ---------------------------------------------------
# transformers, peft and accelerate change their private names without notice (the
# transformers 5.25 break came from overriding a private classmethod). Only each
# library's compat module may name them.
UPSTREAM = ("transformers", "peft", "accelerate")
COMPAT_MODULES = {"skvlm/_transformers_compat.py", "skvlm/_sklearn_compat.py"}
_DEFINED = re.compile(
    r"(?:def\s+|class\s+|self\.|cls\.|^\s*)(_[A-Za-z][A-Za-z0-9_]*)\s*[(=:]", re.M
)


def _upstream_private_names(distribution):
    """Private names an installed package defines (methods, attributes, globals)."""
    spec = importlib.util.find_spec(distribution)
    if spec is None or spec.origin is None:
        return set()
    names = set()
    for path in Path(spec.origin).parent.rglob("*.py"):
        names.update(_DEFINED.findall(path.read_text(errors="ignore")))
    return {name for name in names if not name.startswith("__")}


def _own_names(trees):
    """Names skvlm itself defines or assigns, so its own ``_lock`` is not upstream's."""
    own, classes = set(), set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes.add(node.name)
                own.add(node.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
    return own, classes


def _upstream_violations(tree, upstream, own, skvlm_classes):
    """Where a module imports, reads, writes or overrides an upstream private name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] in UPSTREAM:
                private = [p for p in parts if p.startswith("_")]
                private += [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    found.append(
                        f"line {node.lineno}: from {node.module} import {private}"
                    )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in UPSTREAM and any(p.startswith("_") for p in parts):
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute):
            if node.attr in upstream and node.attr not in own:
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ClassDef):
            foreign = [
                b
                for b in node.bases
                if not (isinstance(b, ast.Name) and b.id in skvlm_classes)
            ]
            if not foreign:
                continue
            for item in node.body:
                names = []
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names = [item.name]
                elif isinstance(item, ast.Assign):
                    names = [t.id for t in item.targets if isinstance(t, ast.Name)]
                for name in names:
                    if name in upstream:
                        found.append(
                            f"line {item.lineno}: {node.name} overrides {name}"
                        )
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "type"
            and len(node.args) == 3
            and isinstance(node.args[2], ast.Dict)
        ):
            for key in node.args[2].keys:
                if isinstance(key, ast.Constant) and key.value in upstream:
                    found.append(f"line {node.lineno}: type(...) overrides {key.value}")
    return found


@pytest.fixture(scope="module")
def upstream_private():
    names = set()
    for distribution in UPSTREAM:
        names |= _upstream_private_names(distribution)
    assert "_get_arguments_from_pretrained" in names or not importlib.util.find_spec(
        "transformers"
    )
    return names


def _scan(trees, upstream, own, classes):
    return {
        name: found
        for name, tree in trees.items()
        if name not in COMPAT_MODULES
        and (found := _upstream_violations(tree, upstream, own, classes))
    }


@pytest.fixture(scope="module")
def package():
    """skvlm's modules parsed once, and the names skvlm defines."""
    trees = {
        path.relative_to(ROOT).as_posix(): ast.parse(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    return trees, *_own_names(trees.values())


def test_no_module_but_the_compat_modules_uses_an_upstream_private_name(
    upstream_private, package
):
    assert _scan(package[0], upstream_private, *package[1:]) == {}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # the transformers 5.25 break: overriding a private classmethod through type()
        (
            "Sub = type('P', (object,), {'_get_arguments_from_pretrained': None})",
            "type(...) overrides _get_arguments_from_pretrained",
        ),
        (
            "class P(transformers.ProcessorMixin):\n"
            "    def _get_arguments_from_pretrained(cls):\n        pass",
            "P overrides _get_arguments_from_pretrained",
        ),
        ("from transformers.utils.import_utils import _is_package_available", "import"),
        ("from transformers.models.llava import _private_helper", "import"),
        (
            "def f(model):\n    return model.config._attn_implementation",
            "._attn_implementation",
        ),
        ("def f(model):\n    return model._no_split_modules", "._no_split_modules"),
    ],
)
def test_the_upstream_private_name_check_can_fail(
    upstream_private, package, line, expected
):
    trees, own, classes = package
    for target, flagged in [
        ("skvlm/models/_llava.py", True),
        ("skvlm/_transformers_compat.py", False),  # the same line is allowed there
    ]:
        source = (ROOT / target).read_text() + "\n" + line + "\n"
        found = _scan(
            {**trees, target: ast.parse(source)}, upstream_private, own, classes
        )
        if not flagged:
            assert found == {}
            continue
        assert list(found) == [target], found
        assert any(expected in problem for problem in found[target]), found
