"""Every code block on the documentation pages runs, or says why not; every public name is in the API reference.

The pages are reStructuredText in ``docs/``. A block is a ``.. code-block::``
directive; the comment right before it says how it is checked:

- none: a ``python`` block runs as a script, in a fresh directory of its own;
- ``.. saved-as: NAME.py``: the block is saved as ``NAME.py`` in that
  directory, and in the directory of every later block on the page (so they
  can import it), then run: with pytest when ``NAME`` starts with ``test_``;
- ``.. not-run: REASON``: not run, for the reason given.

Sections of README.md included with ``.. include:: ../README.md`` are checked
where they live: their python blocks are run by test_readme.py, and any other
block in them needs a ``.. not-run:`` comment right before the include.
"""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.rst"))
README = (ROOT / "README.md").read_text()
README_PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)

#: The public modules and the names each exports (its ``__all__``).
PUBLIC_MODULES = ["polystore", "polystore.errors", "polystore.paths", "polystore.testing", "polystore_dask"]

_MARKER = re.compile(r"^\.\. (not-run|saved-as):(.*)$")
_DIRECTIVE = re.compile(r"^(\s*)\.\. ([\w:-]+)::\s*(.*)$")


@dataclass
class Block:
    page: str
    line: int
    language: str
    code: str
    marker: str | None  # "not-run", "saved-as" or None
    argument: str  # the reason, or the file name

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Include:
    page: str
    line: int
    fragment: str
    marker: str | None


def _marker_before(lines: list[str], index: int) -> tuple[str | None, str]:
    """The ``not-run`` or ``saved-as`` comment right before line ``index`` (blank lines between allowed)."""
    previous = index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    if previous >= 0 and (match := _MARKER.match(lines[previous].strip())):
        return match.group(1), match.group(2).strip()
    return None, ""


def _body(lines: list[str], index: int, indent: int) -> tuple[dict[str, str], str]:
    """The options and the content of the directive at line ``index``."""
    options: dict[str, str] = {}
    content: list[str] = []
    position = index + 1

    def inside(line: str) -> bool:
        return not line.strip() or len(line) - len(line.lstrip()) > indent

    while position < len(lines) and inside(lines[position]):
        text = lines[position].strip()
        if not content and text.startswith(":") and (option := re.match(r"^:([\w-]+):\s*(.*)$", text)):
            options[option.group(1)] = option.group(2)
        else:
            content.append(lines[position])
        position += 1
    body = "\n".join(content)
    margin = min((len(line) - len(line.lstrip()) for line in content if line.strip()), default=0)
    return options, "\n".join(line[margin:] for line in body.splitlines()).strip("\n") + "\n"


def parse(page: Path) -> tuple[list[Block], list[Include], list[str]]:
    """The code blocks and README includes of ``page``, and the problems found in it."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    includes: list[Include] = []
    problems: list[str] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        directive = _DIRECTIVE.match(line)
        if directive is None:
            if stripped.endswith("::") and not stripped.startswith(".."):
                problems.append(f"line {index + 1}: a literal block ('::'); use '.. code-block:: LANGUAGE'")
            if stripped.startswith(">>>"):
                problems.append(f"line {index + 1}: a doctest block; use '.. code-block:: python' with asserts")
            continue
        name, argument = directive.group(2), directive.group(3).strip()
        marker, marker_argument = _marker_before(lines, index)
        if name in ("code", "sourcecode", "literalinclude", "doctest", "testcode"):
            problems.append(f"line {index + 1}: '.. {name}::'; use '.. code-block:: LANGUAGE'")
        elif name == "code-block":
            _, code = _body(lines, index, len(directive.group(1)))
            blocks.append(Block(page.name, index + 1, argument, code, marker, marker_argument))
        elif name == "include":
            options, _ = _body(lines, index, len(directive.group(1)))
            if argument != "../README.md":
                problems.append(f"line {index + 1}: includes {argument}; only sections of README.md are included")
                continue
            start, end = options.get("start-after"), options.get("end-before")
            if not start or not end or start not in README or end not in README:
                problems.append(f"line {index + 1}: the include's start-after/end-before markers are not in README.md")
                continue
            fragment = README.split(start, 1)[1].split(end, 1)[0]
            includes.append(Include(page.name, index + 1, fragment, marker))
    return blocks, includes, problems


PARSED = {page.name: parse(page) for page in PAGES}
BLOCKS = [block for blocks, _, _ in PARSED.values() for block in blocks]
RUN = [block for block in BLOCKS if block.marker != "not-run"]


def test_the_documentation_has_its_pages() -> None:
    names = {page.stem for page in PAGES}
    assert {"index", "getting-started", "registry", "backends", "custom-backends", "dask", "guarantees",
            "performance", "api"} <= names


@pytest.mark.parametrize("page", [page.name for page in PAGES])
def test_page_uses_only_checked_kinds_of_block(page: str) -> None:
    assert PARSED[page][2] == []


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_every_block_runs_or_says_why_not(block: Block) -> None:
    if block.marker == "not-run":
        assert len(block.argument) > 10, f"{block.id}: '.. not-run:' needs a reason"
    else:
        assert block.language == "python", f"{block.id}: a {block.language} block must be marked '.. not-run: REASON'"
    if block.marker == "saved-as":
        assert re.fullmatch(r"\w+\.py", block.argument), f"{block.id}: saved-as needs a module file name"


def test_readme_sections_included_are_checked_where_they_live() -> None:
    for _, includes, _ in PARSED.values():
        for include in includes:
            for language, code in re.findall(r"```(\w*)\n(.*?)```", include.fragment, flags=re.S):
                if language == "python":
                    assert code in README_PYTHON_BLOCKS  # run by test_readme.py
                else:
                    assert include.marker == "not-run", (
                        f"{include.page}:{include.line}: the included {language or 'unnamed'} block "
                        "needs a '.. not-run: REASON' comment before the include"
                    )


def _write_earlier_modules(block: Block, directory: Path) -> None:
    for earlier in BLOCKS:
        if earlier.page == block.page and earlier.line < block.line and earlier.marker == "saved-as":
            (directory / earlier.argument).write_text(earlier.code)


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_documentation_code_block_runs(block: Block, tmp_path: Path) -> None:
    _write_earlier_modules(block, tmp_path)
    script = tmp_path / (block.argument if block.marker == "saved-as" else "block.py")
    script.write_text(block.code)
    if script.name.startswith("test_"):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    else:
        command = [sys.executable, script.name]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{block.id} failed:\n{block.code}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )


def _documented_names() -> set[str]:
    api = (DOCS / "api.rst").read_text()
    return set(re.findall(r"^\.\. auto(?:class|function|exception|data)::\s*(\S+)", api, flags=re.M))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name: str) -> None:
    module = importlib.import_module(module_name)
    api = (DOCS / "api.rst").read_text()
    assert re.search(rf"^\.\. automodule:: {re.escape(module_name)}$", api, flags=re.M), module_name
    documented = _documented_names()
    for name in module.__all__:
        # The errors of polystore.errors are documented once, under the
        # shorter path polystore re-exports them at.
        spelled = f"polystore.{name}" if module_name == "polystore.errors" else f"{module_name}.{name}"
        assert spelled in documented, f"{spelled} is not in docs/api.rst"


def test_the_api_reference_names_only_public_objects() -> None:
    public = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        public |= {f"{module_name}.{name}" for name in module.__all__}
    assert _documented_names() <= public


def _docstring_examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found: dict[str, doctest.DocTest] = {}
    for full_name in sorted(_documented_names()):
        module_name, _, name = full_name.rpartition(".")
        obj = getattr(importlib.import_module(module_name), name)
        if not isinstance(obj, type) and not callable(obj):
            continue  # data such as polystore.testing.SAMPLES has no examples of its own
        for test in finder.find(obj, full_name, globs={**vars(sys.modules[obj.__module__])}):
            if test.examples:
                found.setdefault(test.name, test)
    return list(found.values())


def test_docstring_examples_in_the_api_reference_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ``>>>`` examples the reference shows run, except those marked ``+SKIP`` (they need a cluster)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    tests = _docstring_examples()
    assert len(tests) >= 5
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0
