"""The documentation is true: its code runs, its lifecycle table matches, its API pages are complete.

Conventions for ```python blocks in ``docs/**/*.md`` (one test per block, run
with ``exec`` in a fresh temporary working directory):

* ``# requires: torch, looprt.backends.torch`` as the first line: unless every
  named module can be found, the block and the blocks that continue from it
  are skipped. Blocks for planned backends name the module that will provide
  them, so they start running, and must pass, the day it lands.
* ``# continued`` as the first line (or the second, after ``requires``): the
  block runs in the namespace left by the previous block of the same page, in
  the same folder; such a chain is one test, named after its first block.

Blocks fenced as ```text (or anything other than ``python``) are not run.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.backends import registry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)

_FENCE = re.compile(r"^(?P<indent>[ ]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```[ ]*$", re.M | re.S)
_REQUIRES = re.compile(r"^#\s*requires:\s*(?P<modules>.+)$")
_CONTINUED = re.compile(r"^#\s*continued\b")


@dataclasses.dataclass
class Block:
    page: Path
    line: int
    code: str
    requires: list[str]
    continued: bool


def _dedent(code: str, indent: str) -> str:
    return "".join(line[len(indent):] if line.startswith(indent) else line for line in code.splitlines(True))


def parse_blocks(page: Path) -> list[Block]:
    """The ```python blocks of ``page``, with their conventions parsed."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        code = _dedent(match["code"], match["indent"])
        requires: list[str] = []
        continued = False
        for first in code.splitlines()[:2]:
            if m := _REQUIRES.match(first.strip()):
                requires += [name.strip() for name in m["modules"].split(",") if name.strip()]
            elif _CONTINUED.match(first.strip()):
                continued = True
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(page, line, code, requires, continued))
    return blocks


def chains() -> Iterator[Any]:
    for page in PAGES:
        chain: list[Block] = []
        for block in [*parse_blocks(page), None]:
            if block is not None and block.continued:
                assert chain, f"{page.name}:{block.line}: '# continued' with no block before it"
                chain.append(block)
                continue
            if chain:
                rel = chain[0].page.relative_to(DOCS).as_posix()
                yield pytest.param(chain, id=f"{rel}:{chain[0].line}")
            chain = [block] if block is not None else []


def _missing(modules: list[str]) -> list[str]:
    missing = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:  # a parent package is missing
            spec = None
        # A folder with no __init__.py (a namespace package) is work in progress, not a module.
        if spec is None or spec.origin is None:
            missing.append(name)
    return missing


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory; logging, backends and summary writers put back afterwards."""
    monkeypatch.chdir(tmp_path)
    loggers = [logging.getLogger(), logging.getLogger("looprt")]
    saved = [(list(logger.handlers), logger.level) for logger in loggers]
    # Backends a page registers stay on that page.
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    monkeypatch.setattr(registry, "_instances", dict(registry._instances))
    yield tmp_path
    looprt.SummaryWriterCache.clear()
    for logger, (handlers, level) in zip(loggers, saved):
        logger.handlers[:] = handlers
        logger.setLevel(level)


@pytest.mark.parametrize("chain", list(chains()))
def test_code_block_runs(chain: list[Block], isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real module, as a script has, so that dataclasses and pickling can find it.
    module = types.ModuleType("__docs__")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for block in chain:
        missing = _missing(block.requires)
        if missing:
            pytest.skip(f"{block.page.name}:{block.line} and what follows need {', '.join(missing)}")
        # Pad with blank lines so tracebacks point at the line in the page.
        code = "\n" * block.line + block.code
        exec(compile(code, str(block.page), "exec", dont_inherit=True), namespace)


def test_the_conventions_are_parsed(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\n# requires: torch, looprt.backends.torch\nx = 1\n```\n\n"
        "```text\nnot run\n```\n\n"
        "!!! note\n    ```python\n    # continued\n    y = x\n    ```\n"
    )
    first, second = parse_blocks(page)
    assert (first.line, first.requires, first.continued) == (3, ["torch", "looprt.backends.torch"], False)
    assert (second.requires, second.continued, second.code) == ([], True, "# continued\ny = x\n")
    assert _missing(["numpy", "looprt.backends.no_such_backend", "no_such_package.sub"]) == [
        "looprt.backends.no_such_backend",
        "no_such_package.sub",
    ]


def test_every_page_has_been_collected() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"index.md", "quickstart.md", "lifecycle.md", "hooks.md", "backends/writing.md"} <= names
    assert sum(len(parse_blocks(p)) for p in PAGES) >= 20


# -- the lifecycle table ---------------------------------------------------------------------------

LIFECYCLE = DOCS / "lifecycle.md"
HOOK_COLUMNS = ("begin", "after_create_session", "before_run", "after_run", "end")


def lifecycle_table() -> dict[str, dict[str, str]]:
    """The table under "## Which hook methods run", as {path key: {column: cell}}."""
    text = LIFECYCLE.read_text(encoding="utf-8")
    section = text.split("## Which hook methods run", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip().strip("`") for cell in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        key = re.search(r"\*\*(.+?)\*\*", cells[0])
        assert key, f"row {row!r} names no path in bold"
        table[key[1]] = dict(zip(header[1:], cells[1:]))
    return table


class Counter(looprt.SessionRunHook):
    """Counts each hook method; requests a stop in the after_run of run ``stop_at`` (1-based)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls = dict.fromkeys(HOOK_COLUMNS, 0)
        self.stop_at = stop_at

    def begin(self) -> None:
        self.calls["begin"] += 1

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.calls["after_create_session"] += 1

    def before_run(self, run_context: looprt.SessionRunContext) -> None:
        self.calls["before_run"] += 1

    def after_run(self, run_context: looprt.SessionRunContext, run_values: looprt.SessionRunValues) -> None:
        self.calls["after_run"] += 1
        if self.calls["after_run"] == self.stop_at:
            run_context.request_stop()

    def end(self, session: Any) -> None:
        self.calls["end"] += 1


def _program(items: int | None = None, third_run_raises: type[BaseException] | None = None) -> Any:
    """A step that counts its runs; the third one raises once, or the input has ``items`` items."""
    prog = looprt.Program(name="lifecycle")
    prog.state("total", np.zeros((), dtype=np.int64))
    if items is None:
        prog.input("x", default=1)
    else:
        prog.input("x", iterable=[1] * items)
    attempts = {"n": 0}

    @prog.step()
    def add(x: int, total: np.ndarray) -> None:
        attempts["n"] += 1
        if attempts["n"] == 3 and third_run_raises is not None:
            raise third_run_raises("raised by the third run")
        total += x

    return prog, add


def _loop(session_factory: Callable[[Any, list[Any]], Any], prog: Any, step: Any, hook: Counter,
          runs: int | None) -> BaseException | None:
    """Run ``runs`` runs (None: until should_stop); return what escaped the ``with`` block."""
    try:
        with session_factory(prog, [hook]) as sess:
            if runs is None:
                while not sess.should_stop():
                    sess.run(step)
            else:
                for _ in range(runs):
                    sess.run(step)
    except Exception as escaped:
        return escaped
    return None


def _monitored(prog: Any, hooks: list[Any]) -> Any:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks)


def _singular(prog: Any, hooks: list[Any]) -> Any:
    return looprt.SingularMonitoredSession(hooks, looprt.Scaffold(program=prog))


def _drive(key: str) -> tuple[dict[str, int], BaseException | None]:
    """Drive the path the table calls ``key``; the hook calls counted, what escaped."""
    hook = Counter()
    if key == "normal end":
        prog, step = _program()
        escaped = _loop(_monitored, prog, step, hook, runs=3)
    elif key == "stop request":
        hook.stop_at = 3
        prog, step = _program()
        escaped = _loop(_monitored, prog, step, hook, runs=None)
    elif key == "input exhaustion":
        prog, step = _program(items=2)
        escaped = _loop(_monitored, prog, step, hook, runs=None)
    elif key == "error":
        prog, step = _program(third_run_raises=ValueError)
        escaped = _loop(_monitored, prog, step, hook, runs=None)
    elif key == "recovery":
        hook.stop_at = 3
        prog, step = _program(third_run_raises=looprt.AbortedError)
        escaped = _loop(_monitored, prog, step, hook, runs=None)
    elif key == "no recovery":
        prog, step = _program(third_run_raises=looprt.AbortedError)
        escaped = _loop(_singular, prog, step, hook, runs=None)
    else:
        raise AssertionError(f"the lifecycle table has a row {key!r} that no test drives")
    return hook.calls, escaped


DRIVEN = ("normal end", "stop request", "input exhaustion", "error", "recovery", "no recovery")


def test_the_lifecycle_table_has_every_path_and_column() -> None:
    table = lifecycle_table()
    assert list(table) == list(DRIVEN)
    for row in table.values():
        assert [*HOOK_COLUMNS, "the with block"] == list(row)


@pytest.mark.parametrize("key", DRIVEN)
def test_the_lifecycle_table_is_what_happens(key: str) -> None:
    row = lifecycle_table()[key]
    calls, escaped = _drive(key)
    documented = {column: int(re.match(r"\d+", row[column])[0]) for column in HOOK_COLUMNS}  # type: ignore[index]
    assert calls == documented, f"{key}: the page says {documented}, the session made {calls}"
    raises = re.search(r"raises `?(\w+)`?", row["the with block"])
    if raises:
        assert escaped is not None and type(escaped).__name__ == raises[1], (key, escaped)
    else:
        assert escaped is None, (key, escaped)


# -- the API reference and the hooks page are complete ----------------------------------------------


def _directive_targets() -> list[str]:
    targets = []
    for page in sorted((DOCS / "api").glob("*.md")):
        targets += re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M)
    return targets


def _resolve(target: str) -> Any:
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(target)


def test_every_export_has_an_api_entry() -> None:
    documented: set[int] = set()
    for target in _directive_targets():
        obj = _resolve(target)
        documented.add(id(obj))
        if isinstance(obj, type(looprt)):  # a module page documents its __all__
            documented |= {id(getattr(obj, name)) for name in getattr(obj, "__all__", ())}
    missing = [
        name for name in looprt.__all__ if name != "__version__" and id(getattr(looprt, name)) not in documented
    ]
    assert not missing, f"add these to a page in docs/api/: {missing}"


def test_every_hook_has_a_section() -> None:
    import looprt.hooks

    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^## `(\w+)`", text, re.M))
    hooks = {name for name in looprt.hooks.__all__ if name.endswith("Hook") and name != "SessionRunHook"}
    assert hooks <= headings, f"docs/hooks.md has no section for {sorted(hooks - headings)}"


# -- the site builds -------------------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "lifecycle" / "index.html").exists()
