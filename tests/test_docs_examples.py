"""Every code example in the README and docs/ runs as written (issue 15, item 6).

Each page (``README.md``, every ``.md`` and ``.rst`` under ``docs/``, found anew on
every run) is read for its code blocks; the Python ones run in page order, in one
namespace per page, in an empty temporary working directory, offline. A failure
names the page and the line of the block. A block the reader cannot classify fails
``test_every_block_is_classified``, so no example goes unrun by accident. The
convention for authors (languages, the skip marker) is ``docs/dev/docs_examples.md``.
"""

from __future__ import annotations

import ast
import doctest
import os
import re
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]

# Languages, as Pygments names them. A block in PYTHON or PYCON runs; one in OTHER
# is shown only; any other name (or none) is a block nobody decided about.
PYTHON = frozenset({"python", "python3", "py", "py3"})
PYCON = frozenset({"pycon", "python-console"})
OTHER = frozenset(
    {
        "text", "none", "console", "bash", "sh", "shell", "shell-session", "zsh",
        "powershell", "bat", "yaml", "yml", "json", "toml", "ini", "cfg", "csv",
        "html", "xml", "jinja", "rst", "markdown", "md", "diff", "dockerfile",
        "make", "c", "cpp",
    }
)  # fmt: skip
CODE_DIRECTIVES = ("code-block", "code", "sourcecode")
# Directives that show or run code the reader cannot run as a page block.
UNSUPPORTED_DIRECTIVES = (
    "doctest", "testcode", "testsetup", "testcleanup", "testoutput", "ipython",
    "jupyter-execute", "literalinclude", "plot", "exec",
)  # fmt: skip

RST_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\.\s+(?P<name>[\w:-]+)::(?P<arg>.*)$")
RST_SKIP = re.compile(r"^\s*\.\.\s+skip:(?P<reason>.*)$")
MD_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MD_SKIP = re.compile(r"^\s*<!--\s*skip:(?P<reason>.*?)-->\s*$")
MD_LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")


@dataclass(frozen=True)
class Block:
    """One code block of a page."""

    page: str  # path relative to the repository root
    line: int  # 1-based line of the block's first line of code
    kind: str  # "python", "pycon", "other" or "unclassified"
    language: str  # as written; "::" for an rst literal block, ">>>" for a doctest one
    source: str  # dedented; line k of source is line (line + k) of the page
    skip: str | None = None  # the reason given by a skip marker
    problem: str | None = None  # why the block is "unclassified"

    @property
    def runs(self):
        return self.kind in ("python", "pycon") and self.skip is None


def _unclassified(page, line, problem, source=""):
    return Block(page, line, "unclassified", "", source, problem=problem)


RST_DANGLING = "a skip marker not followed by a code-block directive"
MD_DANGLING = "a skip marker not followed by a fenced code block"


def _indent(line):
    return len(line) - len(line.lstrip())


def _kind(language):
    language = language.lower()
    if language in PYTHON:
        return "python", None
    if language in PYCON:
        return "pycon", None
    if language in OTHER:
        return "other", None
    if not language:
        return "unclassified", "a code block without a language"
    return "unclassified", f"unknown language {language!r}"


def _guess_kind(source):
    """An rst ``::`` block is Python when it parses, as Sphinx's highlighter decides."""
    if source.lstrip().startswith(">>>"):
        return "pycon"
    try:
        ast.parse(source)
    except SyntaxError:
        return "other"
    return "python"


def _take_indented(lines, start, indent):
    """The lines after ``start`` indented deeper than ``indent`` (blank lines first)."""
    first = start
    while first < len(lines) and not lines[first].strip():
        first += 1
    if first == len(lines) or _indent(lines[first]) <= indent:
        return None, first, start
    end = first
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    return textwrap.dedent("\n".join(lines[first:end])), first, end


def _skip_reason(match, line_no, page, problems):
    reason = match["reason"].strip()
    if not reason:
        problem = "a skip marker without a reason: say why the block must not run"
        problems.append(_unclassified(page, line_no, problem))
    return reason or "(no reason)"


UNSUPPORTED = (
    "'.. {}::' is not run by the docs test: show the code in a "
    "'.. code-block:: python' (it runs) or mark it with '.. skip:'"
)


def _rst_code_block(lines, i, match, page, skip):
    """The block of the code directive on line ``i``, and the line after it."""
    options = i + 1
    while options < len(lines) and lines[options].strip().startswith(":"):
        options += 1
    source, first, end = _take_indented(lines, options, len(match["indent"]))
    language = match["arg"].strip()
    if match["name"] in UNSUPPORTED_DIRECTIVES:
        kind, problem = "unclassified", UNSUPPORTED.format(match["name"])
    else:
        kind, problem = _kind(language)
    if source is None and problem is None:  # an empty block: nothing to run
        return None, max(end, i + 1)
    return Block(page, first + 1, kind, language, source or "", skip, problem), end


def _rst_text_block(lines, i, page):
    """A ``::`` literal block or a ``>>>`` doctest block starting at line ``i``."""
    stripped = lines[i].strip()
    if stripped.endswith("::"):
        source, first, end = _take_indented(lines, i + 1, _indent(lines[i]))
        if source is not None:
            return Block(page, first + 1, _guess_kind(source), "::", source), end
    elif stripped.startswith(">>>") and (i == 0 or not lines[i - 1].strip()):
        end = i
        while end < len(lines) and lines[end].strip():
            end += 1
        source = textwrap.dedent("\n".join(lines[i:end]))
        return Block(page, i + 1, "pycon", ">>>", source), end
    return None, i + 1


def parse_rst(text, page="page.rst"):
    """The code blocks of an reStructuredText page, in page order."""
    lines = text.splitlines()
    blocks, pending = [], None  # pending: (line number, reason) of a skip marker
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        directive = RST_DIRECTIVE.match(line)
        code = (
            directive and directive["name"] in CODE_DIRECTIVES + UNSUPPORTED_DIRECTIVES
        )
        if pending is not None and not code:
            blocks.append(_unclassified(page, pending[0], RST_DANGLING))
            pending = None
        if skip := RST_SKIP.match(line):
            pending = (i + 1, _skip_reason(skip, i + 1, page, blocks))
            i += 1
        elif code:
            reason = pending[1] if pending is not None else None
            block, i = _rst_code_block(lines, i, directive, page, reason)
            blocks += [block] if block else []
            pending = None
        elif directive:  # another directive: its content is rst, read on as such
            i += 1
        elif line.strip().startswith(".."):  # a comment, target or footnote
            _, _, end = _take_indented(lines, i + 1, _indent(line))
            i = max(end, i + 1)
        else:
            block, i = _rst_text_block(lines, i, page)
            blocks += [block] if block else []
    if pending is not None:
        blocks.append(_unclassified(page, pending[0], RST_DANGLING))
    return blocks


def parse_markdown(text, page="page.md"):
    """The fenced code blocks of a Markdown page, in page order."""
    lines = text.splitlines()
    blocks, pending = [], None
    i, previous = 0, ""  # previous: the last non-blank line outside a fence
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if match := MD_FENCE.match(line):
            fence, indent = match["fence"], len(match["indent"])
            end = i + 1
            while end < len(lines) and not (
                lines[end].strip().startswith(fence[0] * len(fence))
                and not lines[end].strip().strip(fence[0])
            ):
                end += 1
            body = [ln[min(indent, _indent(ln)) :] for ln in lines[i + 1 : end]]
            info = match["info"].strip().split()
            language = info[0].strip("{}") if info else ""
            kind, problem = _kind(language)
            skip = pending[1] if pending is not None else None
            blocks.append(
                Block(page, i + 2, kind, language, "\n".join(body), skip, problem)
            )
            pending, previous = None, line
            i = end + 1
            continue
        if pending is not None:
            blocks.append(_unclassified(page, pending[0], MD_DANGLING))
            pending = None
        if match := MD_SKIP.match(line):
            pending = (i + 1, _skip_reason(match, i + 1, page, blocks))
        elif (
            _indent(line) >= 4
            and not lines[i - 1].strip()
            and previous
            and not MD_LIST_ITEM.match(previous)
            and _indent(previous) < 2
        ):
            problem = "an indented code block: use a fence with a language"
            blocks.append(_unclassified(page, i + 1, problem, line.strip()))
        previous = line
        i += 1
    if pending is not None:
        blocks.append(_unclassified(page, pending[0], MD_DANGLING))
    return blocks


def pages():
    """README.md and the top-level .md files, and every .md and .rst under docs/."""
    found = set(ROOT.glob("*.md"))
    for suffix in ("*.md", "*.rst"):
        for path in (ROOT / "docs").rglob(suffix):
            parts = path.relative_to(ROOT / "docs").parts
            if not any(p.startswith(("_", ".")) or p == "generated" for p in parts):
                found.add(path)
    return sorted(found)


def read_blocks(path):
    parse = parse_markdown if path.suffix == ".md" else parse_rst
    return parse(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


class ExampleFailed(Exception):
    """A block of a page failed; the message names the page, the line and why."""


def _run_python(block, namespace, filename):
    # Leading newlines put every line of the code at its own line of the page, so a
    # traceback quotes the page itself.
    code = compile("\n" * (block.line - 1) + block.source, filename, "exec")
    try:
        exec(code, namespace)
    except Exception as exc:
        trace = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)
        )
        raise ExampleFailed(
            f"{block.page}:{block.line}: this example fails:\n{trace}"
        ) from exc


def _run_pycon(block, namespace, filename):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    test = doctest.DocTestParser().get_doctest(
        block.source, {}, block.page, filename, block.line - 1
    )
    # get_doctest copies the names; the page keeps one namespace
    test.globs = namespace
    report = []
    runner = doctest.DocTestRunner(optionflags=flags)
    result = runner.run(test, out=report.append, clear_globs=False)
    if result.failed:
        raise ExampleFailed(
            f"{block.page}:{block.line}: this doctest block fails:\n" + "".join(report)
        )


def run_blocks(blocks, filename):
    """Run a page's blocks in order in one fresh namespace; return it."""
    namespace = {"__name__": "__main__"}
    for block in blocks:
        if block.runs:
            run = _run_python if block.kind == "python" else _run_pycon
            run(block, namespace, filename)
            _close_figures()
    return namespace


def _close_figures():
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


PAGES = pages()
RUNNABLE = [p for p in PAGES if any(b.runs for b in read_blocks(p))]


@pytest.fixture
def offline_workdir(tmp_path, monkeypatch):
    """What a newcomer's shell would be: an empty directory, no network."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    # One BLAS thread, as torch gets one in conftest.py: xdist already runs one
    # worker per core, and on a loaded machine two OpenBLAS threads per worker made
    # LogisticRegression's fits 20 times slower. A limit reaches only the libraries
    # loaded when it is set: importing sklearn.linear_model loads scipy's BLAS.
    import sklearn.linear_model  # noqa: F401

    with threadpool_limits(limits=1):
        yield tmp_path


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(path, offline_workdir):
    try:
        run_blocks(read_blocks(path), str(path))
    except ExampleFailed as exc:
        pytest.fail(str(exc), pytrace=False)


def test_every_block_is_classified():
    problems = [
        f"{b.page}:{b.line}: {b.problem}"
        for path in PAGES
        for b in read_blocks(path)
        if b.kind == "unclassified"
    ]
    assert not problems, (
        "code blocks the docs test cannot classify (see docs/dev/docs_examples.md):\n"
        + "\n".join(problems)
    )


def test_skipped_python_blocks_still_parse():
    broken = []
    for path in PAGES:
        for block in read_blocks(path):
            if block.kind == "python" and block.skip is not None:
                try:
                    ast.parse(block.source)
                except SyntaxError as exc:
                    broken.append(
                        f"{block.page}:{block.line + (exc.lineno or 1) - 1}: {exc.msg}"
                    )
    assert not broken, "skipped blocks that are not valid Python:\n" + "\n".join(broken)


def test_the_pages_are_found():
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "docs/index.rst", "docs/user_guide/searching.rst"} <= names
    assert not any("_build" in n or n.startswith("docs/generated") for n in names)
    assert os.path.join("docs", "dev", "docs_examples.md") in names


# ------------------------------------------------ the reader and runner themselves

RST_PAGE = """\
Title
=====

.. code-block:: python

   x = 1

Some text::

   y = x + 1

Output::

   CLIP zero-shot   top-1 1.00

.. code-block:: console

   $ skvlm probe

>>> x + y
3

.. skip: needs the 7B checkpoint

.. code-block:: python
   :caption: hub

   z = load("llava-hf/llava-1.5-7b-hf")

.. code-block:: pycon

   >>> y
   2

.. note::

   In a note::

      w = 2
"""


def test_rst_blocks_are_found_with_their_kind_and_line():
    blocks = parse_rst(RST_PAGE)
    got = [(b.kind, b.line, b.source.splitlines()[0], b.skip) for b in blocks]
    assert got == [
        ("python", 6, "x = 1", None),
        ("python", 10, "y = x + 1", None),
        ("other", 14, "CLIP zero-shot   top-1 1.00", None),
        ("other", 18, "$ skvlm probe", None),
        ("pycon", 20, ">>> x + y", None),
        (
            "python",
            28,
            'z = load("llava-hf/llava-1.5-7b-hf")',
            "needs the 7B checkpoint",
        ),
        ("pycon", 32, ">>> y", None),
        ("python", 39, "w = 2", None),
    ]
    namespace = run_blocks(blocks, "page.rst")
    assert namespace["y"] == 2 and namespace["w"] == 2 and "z" not in namespace


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        (".. code-block::\n\n   x = 1\n", "without a language"),
        (".. code-block:: pyhton\n\n   x = 1\n", "unknown language 'pyhton'"),
        (".. doctest::\n\n   >>> 1\n   1\n", "'.. doctest::' is not run"),
        (".. literalinclude:: ../example.py\n", "'.. literalinclude::' is not run"),
        (".. skip: hub only\n\nText.\n", "skip marker not followed"),
        (".. skip:\n\n.. code-block:: python\n\n   x = 1\n", "without a reason"),
        (".. skip: at the end\n", "skip marker not followed"),
    ],
)
def test_rst_blocks_nobody_decided_about_are_unclassified(page, problem):
    problems = [b.problem for b in parse_rst(page) if b.kind == "unclassified"]
    assert len(problems) == 1 and problem in problems[0]


MD_PAGE = """\
# Title

```python
a = 1
```

<!-- skip: hub only -->
```python
b = load("llava-hf/llava-1.5-7b-hf")
```

- a list item

    still the list item

```bash
make test
```
"""


def test_markdown_blocks_are_found_with_their_kind_and_line():
    blocks = parse_markdown(MD_PAGE)
    got = [(b.kind, b.line, b.source, b.skip) for b in blocks]
    assert got == [
        ("python", 4, "a = 1", None),
        ("python", 9, 'b = load("llava-hf/llava-1.5-7b-hf")', "hub only"),
        ("other", 17, "make test", None),
    ]


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ("```\nx = 1\n```\n", "without a language"),
        ("~~~ipython\nx = 1\n~~~\n", "unknown language 'ipython'"),
        ("Text.\n\n    x = 1\n", "indented code block"),
        ("<!-- skip: hub -->\nText.\n", "skip marker not followed"),
        ("<!-- skip: -->\n```python\nx = 1\n```\n", "without a reason"),
    ],
)
def test_markdown_blocks_nobody_decided_about_are_unclassified(page, problem):
    problems = [b.problem for b in parse_markdown(page) if b.kind == "unclassified"]
    assert len(problems) == 1 and problem in problems[0]


def test_a_failing_block_is_reported_with_its_page_and_line():
    page = "Intro\n\n.. code-block:: python\n\n   a = 1\n\nThen::\n\n   b = a + c\n"
    with pytest.raises(ExampleFailed, match=r"(?s)guide\.rst:9: .*NameError: name 'c'"):
        run_blocks(parse_rst(page, "guide.rst"), "guide.rst")
    doctest_page = "```pycon\n>>> 1 + 1\n3\n```\n"
    with pytest.raises(
        ExampleFailed, match=r"(?s)README\.md:2: .*Expected:\s+3\s+Got:\s+2"
    ):
        run_blocks(parse_markdown(doctest_page, "README.md"), "README.md")
