"""Hypothesis strategies for fetch structures, and a reference walker to check them.

A *structure* is a leaf or a container of structures: list, tuple, namedtuple,
dict, OrderedDict, defaultdict, a dataclass or an attrs class, nested to a
bounded depth. Leaves come from a small pool so that duplicates are common.

The reference helpers (``ref_leaves``, ``ref_map``, ``check_rebuilt``) walk
the container types used here by hand, independently of
``looprt.structure``, so the tests do not check the merge engine against
itself.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import attrs
from hypothesis import strategies as st

__all__ = [
    "KEYS",
    "LEAF_NAMES",
    "AttrsBox",
    "DataPoint",
    "Pair",
    "check_rebuilt",
    "containers",
    "deep_structures",
    "leaf_names",
    "ref_leaves",
    "ref_map",
    "structures",
]

LEAF_NAMES = ("a", "b", "c", "d", "e")
KEYS = ("k0", "k1", "k2", "k3")
# defaultdict factories whose rebuild must keep default_factory; None is tested apart.
FACTORIES: tuple[Callable[[], Any], ...] = (list, int, dict)


class Pair(NamedTuple):
    first: Any
    second: Any


@dataclasses.dataclass
class DataPoint:
    x: Any
    y: Any


@attrs.define
class AttrsBox:
    """An attrs class with a private attribute: its constructor keyword is ``hidden``."""

    value: Any
    _hidden: Any


def leaf_names() -> st.SearchStrategy[str]:
    """A small pool of string leaves: duplicates are frequent."""
    return st.sampled_from(LEAF_NAMES)


def containers(
    child: st.SearchStrategy[Any], factories: Sequence[Callable[[], Any] | None] = FACTORIES
) -> st.SearchStrategy[Any]:
    """One container level whose elements are drawn from ``child``."""
    items = st.lists(st.tuples(st.sampled_from(KEYS), child), max_size=3, unique_by=lambda kv: kv[0])
    return st.one_of(
        st.lists(child, max_size=3),
        st.lists(child, max_size=3).map(tuple),
        st.builds(Pair, child, child),
        items.map(dict),
        items.map(OrderedDict),
        st.builds(defaultdict, st.sampled_from(list(factories)), items),
        st.builds(DataPoint, child, child),
        st.builds(AttrsBox, child, child),
    )


def structures(
    leaves: st.SearchStrategy[Hashable] | None = None,
    depth: int = 4,
    factories: Sequence[Callable[[], Any] | None] = FACTORIES,
) -> st.SearchStrategy[Any]:
    """A leaf or containers nested at most ``depth`` levels, leaves from ``leaves``."""
    return _nested(leaf_names() if leaves is None else leaves, depth, tuple(factories))


@st.composite
def _nested(
    draw: st.DrawFn,
    leaves: st.SearchStrategy[Hashable],
    depth: int,
    factories: tuple[Callable[[], Any] | None, ...],
) -> Any:
    # A composite per level keeps the strategy's repr short (a one_of nested four
    # times over eight container kinds has a repr of tens of kilobytes).
    if depth == 0:
        return draw(leaves)
    return draw(st.one_of(leaves, containers(_nested(leaves, depth - 1, factories), factories)))


_WRAPPERS: tuple[Callable[[Any, Any], Any], ...] = (
    lambda s, leaf: [s],
    lambda s, leaf: (leaf, s),
    Pair,
    lambda s, leaf: {"k0": leaf, "k1": s},
    lambda s, leaf: OrderedDict(k1=s),
    lambda s, leaf: defaultdict(list, {"k2": s}),
    lambda s, leaf: DataPoint(leaf, s),
    AttrsBox,
)


@st.composite
def deep_structures(draw: st.DrawFn, leaves: st.SearchStrategy[Hashable] | None = None, min_depth: int = 41) -> Any:
    """A small structure wrapped in at least ``min_depth`` random containers.

    Deeper than the merge engine's code generation goes, so its rebuild takes
    the closure path.
    """
    leaves = leaf_names() if leaves is None else leaves
    s = draw(structures(leaves, depth=2))
    for wrap in draw(st.lists(st.sampled_from(_WRAPPERS), min_size=min_depth, max_size=min_depth + 5)):
        s = wrap(s, draw(leaves))
    return s


# --- reference walkers ------------------------------------------------------------------


def _children(s: Any) -> list[tuple[Any, Any]] | None:
    """``(key, child)`` pairs of a container, None for a leaf."""
    if isinstance(s, dict):  # dict, OrderedDict, defaultdict
        return list(s.items())
    if isinstance(s, (list, tuple)):  # tuple includes Pair
        return list(enumerate(s))
    if isinstance(s, DataPoint):
        return [("x", s.x), ("y", s.y)]
    if isinstance(s, AttrsBox):
        return [("value", s.value), ("_hidden", s._hidden)]
    return None


def ref_leaves(s: Any) -> list[Any]:
    """Every leaf of ``s``, depth first, duplicates kept."""
    children = _children(s)
    if children is None:
        return [s]
    out: list[Any] = []
    for _, child in children:
        out += ref_leaves(child)
    return out


def ref_map(fn: Callable[[Any], Any], s: Any) -> Any:
    """``s`` with ``fn(leaf)`` in place of each leaf, fresh containers of the same types.

    Also accepts dicts with arbitrary keys (the merged ``{"caller": ..., hook: ...}``).
    """
    t = type(s)
    if t is defaultdict:
        return defaultdict(s.default_factory, [(k, ref_map(fn, v)) for k, v in s.items()])
    if t in (dict, OrderedDict):
        return t([(k, ref_map(fn, v)) for k, v in s.items()])
    if t is Pair:
        return Pair(ref_map(fn, s.first), ref_map(fn, s.second))
    if t in (list, tuple):
        return t([ref_map(fn, v) for v in s])
    if t is DataPoint:
        return DataPoint(ref_map(fn, s.x), ref_map(fn, s.y))
    if t is AttrsBox:
        return AttrsBox(ref_map(fn, s.value), ref_map(fn, s._hidden))
    return fn(s)


def _same_leaf(actual: Any, expected: Any) -> bool:
    try:
        return bool(actual == expected)
    except ValueError:  # numpy arrays
        import numpy as np

        return bool(np.array_equal(actual, expected))


def check_rebuilt(
    original: Any,
    rebuilt: Any,
    value_of: Callable[[Any], Any],
    path: str = "",
    same: Callable[[Any, Any], bool] = _same_leaf,
) -> None:
    """Assert ``rebuilt`` is ``original`` with ``value_of(leaf)`` at each leaf.

    Container types must match exactly at every level (a namedtuple is not a
    tuple, an OrderedDict is not a dict), mapping key order and a
    defaultdict's ``default_factory`` included.
    """
    children = _children(original)
    if children is None:
        expected = value_of(original)
        assert same(rebuilt, expected), f"at {path or '<root>'}: got {rebuilt!r}, expected {expected!r}"
        return
    assert type(rebuilt) is type(original), (
        f"at {path or '<root>'}: got a {type(rebuilt).__name__}, expected a {type(original).__name__}"
    )
    if isinstance(original, defaultdict):
        assert rebuilt.default_factory is original.default_factory, f"default_factory at {path or '<root>'}"
    rebuilt_children = _children(rebuilt)
    assert rebuilt_children is not None
    assert [k for k, _ in rebuilt_children] == [k for k, _ in children], f"keys at {path or '<root>'}"
    for (key, child), (_, rebuilt_child) in zip(children, rebuilt_children):
        check_rebuilt(child, rebuilt_child, value_of, f"{path}[{key!r}]", same)
