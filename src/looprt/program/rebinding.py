"""Catch, when a step is declared, state updates that would silently do nothing.

A step gets its state by reference. Two ways of "updating" it change only a
local name, so training runs, checkpoints are written, and the state never
moves:

* assigning to the parameter (``w = w - lr * g``): a new object is bound to
  the local name;
* an augmented assignment to state that cannot change in place (``b += 1``
  on a Python number, a tuple, a read-only array, a JAX array).

``check_rebinding`` reads the step function's source and raises
``StateUpdateError`` for either, unless the step declares the state in
``updates`` (then it returns the new value and the session assigns it). A
function whose source cannot be read (built in, generated, compiled) is not
checked; nested functions and classes are their own scopes and are skipped.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from looprt.errors import StateUpdateError

__all__ = ["check_rebinding"]

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def check_rebinding(
    step_name: str,
    fn: Callable[..., Any],
    states: Mapping[str, Any],
    updates: set[str],
    in_place: Callable[[Any], bool],
) -> None:
    """Raise ``StateUpdateError`` if ``fn`` rebinds a state parameter it does not declare updated.

    ``states`` maps each parameter that takes state to the state's live
    value; ``updates`` names the parameters the step returns new values for;
    ``in_place(value)`` says whether an augmented assignment changes
    ``value`` itself.
    """
    watched = {name: value for name, value in states.items() if name not in updates}
    if not watched:
        return
    node = _function_node(fn)
    if node is None:
        return
    declared_elsewhere = _global_names(node)
    for target, statement, augmented in _bindings(node):
        if target not in watched or target in declared_elsewhere:
            continue
        value = watched[target]
        if augmented and in_place(value):
            continue
        code = ast.get_source_segment(_source_of(fn), statement) or ast.unparse(statement)
        code = code.strip().splitlines()[0]
        line = statement.lineno + _first_line(fn) - 1
        if augmented:
            why = (
                f"state {target!r} is a {type(value).__name__}, which cannot change in place, so "
                f"`{code}` (line {line}) only rebinds the local name"
            )
        else:
            why = f"`{code}` (line {line}) binds a new object to the local name {target!r}"
        raise StateUpdateError(
            f"step {step_name!r}: {why}; the state would never change. Update it in place "
            f"(`{target}[...] = ...`, `{target} -= ...` on an array, a module's parameters), "
            f"or declare updates=({target!r},) and return the new value under {target!r}."
        )


def _source_of(fn: Callable[..., Any]) -> str:
    return textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))


def _first_line(fn: Callable[..., Any]) -> int:
    try:
        return inspect.getsourcelines(inspect.unwrap(fn))[1]
    except (OSError, TypeError):
        return 1


def _function_node(fn: Callable[..., Any]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The parsed definition of ``fn``, or None (no source, a lambda, a callable object)."""
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    if code is None or code.co_name == "<lambda>":
        return None  # a lambda has no statements: nothing can rebind
    try:
        tree = ast.parse(_source_of(fn))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == code.co_name:
            return node
    return None


def _global_names(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for child in _own_scope(node):
        if isinstance(child, (ast.Global, ast.Nonlocal)):
            names.update(child.names)
    return names


def _own_scope(node: ast.AST) -> Iterator[ast.AST]:
    """Every node of the function's body, not descending into nested scopes."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, _SCOPES):
            stack.extend(ast.iter_child_nodes(child))


_Binding = tuple[str, "ast.stmt | ast.expr", bool]


def _bindings(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[_Binding]:
    """``(name, statement, augmented)`` for each name the function body binds."""
    for child in _own_scope(node):
        if not isinstance(child, (ast.stmt, ast.expr)):
            continue
        if isinstance(child, ast.Assign):
            for target in child.targets:
                yield from ((name, child, False) for name in _names(target))
        elif isinstance(child, ast.AugAssign):
            yield from ((name, child, True) for name in _names(child.target))
        elif isinstance(child, ast.AnnAssign) and child.value is not None:
            yield from ((name, child, False) for name in _names(child.target))
        elif isinstance(child, ast.NamedExpr):
            yield child.target.id, child, False
        elif isinstance(child, (ast.For, ast.AsyncFor)):
            yield from ((name, child, False) for name in _names(child.target))
        elif isinstance(child, (ast.With, ast.AsyncWith)):
            for item in child.items:
                if item.optional_vars is not None:
                    yield from ((name, child, False) for name in _names(item.optional_vars))


def _names(target: ast.AST) -> Iterator[str]:
    """The plain names a target binds (``a``, ``a, (b, *c)``); ``a[0]`` and ``a.x`` bind none."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _names(element)
    elif isinstance(target, ast.Starred):
        yield from _names(target.value)
