"""The package's shape: no import cycles, small modules, a light ``import looprt``, no private imports.

Glossary: a *module* is a file under ``src/looprt`` named as Python imports it
(``looprt/session/hooked.py`` is ``looprt.session.hooked``, a package's
``__init__.py`` is the package). An *import* is an ``import`` or ``from ...
import`` statement anywhere in a module (at the top or inside a function,
since a function's import runs too), except under ``if TYPE_CHECKING:``. It
depends on the module it names: ``from looprt.x import y`` on ``looprt.x.y``
when that is a module, else on ``looprt.x``. Importing ``looprt.x.y`` also
runs ``looprt/x/__init__.py``; those implicit dependencies on parent
packages are not counted, or every package would be in a cycle with its
modules.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "looprt"

MAX_LINES = 450
FRAMEWORKS = ("torch", "tensorflow", "jax", "tensorboard", "tensorboardX")


@dataclass(frozen=True)
class Import:
    """One imported name: ``from <module> import <name>`` (``name`` None for ``import <module>``)."""

    module: str
    name: str | None
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: str | None, level: int, importer: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{module}" if module else base


def imports(name: str) -> Iterator[Import]:
    """Every import in module ``name`` that runs (not under ``if TYPE_CHECKING:``), top or nested."""

    def visit(node: ast.AST) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    yield from visit_one(other)
            else:
                yield from visit_one(child)

    def visit_one(node: ast.AST) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, name)
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        else:
            yield from visit(node)

    path = MODULES[name]
    yield from visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))


def dependency(imported: Import) -> str | None:
    """The looprt module an import depends on, None for other packages' modules."""
    if imported.name is not None and f"{imported.module}.{imported.name}" in MODULES:
        return f"{imported.module}.{imported.name}"
    return imported.module if imported.module in MODULES else None


def import_graph() -> dict[str, dict[str, int]]:
    """For each module, the modules it depends on, each with the line of its first import there."""
    graph: dict[str, dict[str, int]] = {}
    for name in MODULES:
        edges = graph.setdefault(name, {})
        for imported in imports(name):
            target = dependency(imported)
            if target is not None and target != name:
                edges.setdefault(target, imported.line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(components)


def cycle_in(component: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """One cycle through the component's first module: a shortest path back to it (breadth first)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")  # a component always has one


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
    return "\n    ".join(steps)


def test_the_module_list_is_not_empty() -> None:
    assert {"looprt", "looprt.session.monitored", "looprt.program.program"} <= set(MODULES)


def test_dependencies_resolve_submodules_relative_imports_and_skip_type_checking() -> None:
    graph = import_graph()
    assert "looprt.session.monitored" in graph["looprt"]  # from looprt.session.monitored import ...
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        if "if TYPE_CHECKING:" in source:
            guarded = ast.parse(source)
            for node in ast.walk(guarded):
                if isinstance(node, ast.If) and _is_type_checking(node.test):
                    lines = {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
                    assert not lines & {i.line for i in imports(name)}, name


def test_no_import_cycles() -> None:
    graph = import_graph()
    components = strongly_connected(graph)
    report = [
        f"  modules {', '.join(c)}; for one:\n    {describe(cycle_in(c, graph), graph)}" for c in components
    ]
    assert not components, (
        "import cycles among looprt's modules (break each by moving what both need):\n" + "\n".join(report)
    )


def test_modules_are_small() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split each by concern): {long}"


def test_import_looprt_imports_no_framework() -> None:
    code = (
        "import sys, looprt\n"
        f"heavy = {FRAMEWORKS!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]", f"`import looprt` imported {result.stdout.strip()}"


def private_imports() -> list[str]:
    found = []
    for name in MODULES:
        for imported in imports(name):
            if (
                imported.name is not None
                and imported.name.startswith("_")
                and not imported.name.startswith("__")
                and imported.module.split(".")[0] == "looprt"
                and imported.module != name
            ):
                found.append(f"{name} (line {imported.line}): from {imported.module} import {imported.name}")
    return found


def test_no_module_imports_another_modules_private_name() -> None:
    found = private_imports()
    assert not found, "private names imported across modules (make each public, or move it):\n  " + (
        "\n  ".join(found)
    )


def test_every_module_logs_to_its_own_logger() -> None:
    """``logging.getLogger(__name__)``: log names follow module paths (docs/logging.md)."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
                and node.args
                and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__")
                and not (name == "looprt" and ast.unparse(node.args[0]) == "'looprt'")
            ):
                found.append(f"{name} (line {node.lineno}): getLogger({ast.unparse(node.args[0])})")
    assert not found, "loggers not named by __name__:\n  " + "\n  ".join(found)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b": 1}, "b": {}}, []),
        ({"a": {"b": 1}, "b": {"a": 2}}, [["a", "b", "a"]]),
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}}, [["a", "b", "c", "a"]]),
        ({"a": {"b": 1}, "b": {"a": 1}, "c": {"d": 1}, "d": {"c": 1}}, [["a", "b", "a"], ["c", "d", "c"]]),
    ],
)
def test_cycle_finder(graph: dict[str, dict[str, int]], expected: list[list[str]]) -> None:
    assert [cycle_in(c, graph) for c in strongly_connected(graph)] == expected
