"""The merge engine: flatten fetch structures into unique leaves, rebuild results.

Glossary
--------
structure
    What a caller or a hook asks a session for: a leaf, or a container of
    structures. Containers are ``list``, ``tuple`` and their subclasses
    (namedtuples included), ``dict`` and other ``Mapping`` types, dataclass
    instances and attrs instances, nested to any depth.
leaf
    Anything that is not a container: a tensor, an operation, a program
    handle, a name. What a leaf *means* is the backend's business; the engine
    only requires that it is hashable, so duplicates can be found.
path
    Where a leaf sits, written as a Python accessor: ``['loss']``, ``[1].w``.
shape
    A structure with its leaves taken out: hashable, so a plan compiled for
    one shape is reused by every structure of the same shape.

Order: leaves are flattened depth first, containers in their own iteration
order (a mapping's insertion order, a dataclass's field order); results are
rebuilt in the same container types with the same key order.

A ``FetchPlan`` is compiled once per distinct (shape, leaves) pair and cached:
it knows the unique leaves to evaluate and rebuilds every requested structure
from their values with one generated function call.

>>> cache = PlanCache()
>>> plan = cache.plan({"a": "x", "b": ["y", "x"]})
>>> plan.leaves
('x', 'y')
>>> plan.rebuild([1, 2])
{'a': 1, 'b': [2, 1]}
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from looprt.errors import FetchError

__all__ = ["FetchPlan", "PlanCache", "flatten", "leaf_paths"]

# Deeper structures are rebuilt by closures instead of one generated
# expression, which the Python parser cannot nest without limit.
_MAX_CODEGEN_DEPTH = 40
_CACHE_LIMIT = 1024


class _Leaf:
    __slots__ = ()

    def __repr__(self) -> str:
        return "*"


_LEAF = _Leaf()

# Container kinds, decided once per type.
_KIND_LEAF = 0
_KIND_MAPPING = 1
_KIND_NAMEDTUPLE = 2
_KIND_SEQUENCE = 3
_KIND_DATACLASS = 4
_KIND_ATTRS = 5

_kinds: dict[type, int] = {}
_leaf_types: set[type] = set()  # the types whose kind is _KIND_LEAF, for a one-lookup test


def _kind(t: type) -> int:
    kind = _kinds.get(t)
    if kind is None:
        if issubclass(t, Mapping):
            kind = _KIND_MAPPING
        elif issubclass(t, tuple) and hasattr(t, "_fields"):
            kind = _KIND_NAMEDTUPLE
        elif issubclass(t, (list, tuple)):
            kind = _KIND_SEQUENCE
        elif dataclasses.is_dataclass(t):
            kind = _KIND_DATACLASS
        elif hasattr(t, "__attrs_attrs__"):
            kind = _KIND_ATTRS
        else:
            kind = _KIND_LEAF
            _leaf_types.add(t)
        _kinds[t] = kind
    return kind


def _init_fields(t: type, kind: int) -> tuple[tuple[str, str], ...]:
    """(attribute name, constructor keyword) of the fields a constructor takes."""
    if kind == _KIND_DATACLASS:
        return tuple((f.name, f.name) for f in dataclasses.fields(t) if f.init)
    return tuple(
        (a.name, getattr(a, "alias", None) or a.name.lstrip("_"))
        for a in t.__attrs_attrs__  # type: ignore[attr-defined]
        if a.init
    )


_fields_cache: dict[type, tuple[tuple[str, str], ...]] = {}


def _walk(obj: Any, leaves: list[Any]) -> Any:  # noqa: PLR0911 - one return per kind of value
    """Append the leaves of ``obj`` to ``leaves``; return its shape."""
    t = type(obj)
    if t is dict:
        return (dict, tuple(obj), _walk_values(obj.values(), leaves))
    if t is list:
        return (list, _walk_values(obj, leaves))
    if t is tuple:
        return (tuple, _walk_values(obj, leaves))
    kind = _kinds.get(t)
    if kind is None:
        kind = _kind(t)
    if kind == _KIND_LEAF:
        leaves.append(obj)
        return _LEAF
    if kind == _KIND_MAPPING:
        # A defaultdict's factory (possibly None), boxed so None means "not a defaultdict".
        extra = (obj.default_factory,) if isinstance(obj, defaultdict) else None
        keys = tuple(obj)
        return (t, keys, _walk_values([obj[k] for k in keys], leaves), extra)
    if kind in (_KIND_NAMEDTUPLE, _KIND_SEQUENCE):
        return (t, _walk_values(obj, leaves))
    fields = _fields_cache.get(t)
    if fields is None:
        fields = _fields_cache[t] = _init_fields(t, kind)
    return (t, fields, _walk_values([getattr(obj, name) for name, _ in fields], leaves))


def _walk_values(values: Any, leaves: list[Any]) -> tuple[Any, ...]:
    """The shapes of ``values`` (a container's children), their leaves appended to ``leaves``.

    A child whose type is known to be a leaf is handled here, without a call
    of ``_walk``: most children are leaves, so this is most of the per-run work.
    """
    shapes = []
    for value in values:
        if type(value) in _leaf_types:
            leaves.append(value)
            shapes.append(_LEAF)
        else:
            shapes.append(_walk(value, leaves))
    return tuple(shapes)


def flatten(structure: Any) -> tuple[Any, list[Any]]:
    """Return ``(shape, leaves)`` of a structure, leaves depth first."""
    leaves: list[Any] = []
    return _walk(structure, leaves), leaves


def leaf_paths(structure: Any, prefix: str = "") -> list[str]:
    """The path of every leaf of ``structure``, in flattening order."""
    t = type(structure)
    kind = _kind(t)
    if kind == _KIND_LEAF:
        return [prefix]
    paths: list[str] = []
    if kind == _KIND_MAPPING:
        for k in structure:
            paths += leaf_paths(structure[k], f"{prefix}[{k!r}]")
    elif kind in (_KIND_NAMEDTUPLE, _KIND_SEQUENCE):
        for i, v in enumerate(structure):
            paths += leaf_paths(v, f"{prefix}[{i}]")
    else:
        for name, _ in _init_fields(t, kind):
            paths += leaf_paths(getattr(structure, name), f"{prefix}.{name}")
    return paths


def _depth(shape: Any) -> int:
    if shape is _LEAF:
        return 0
    return 1 + max((_depth(c) for c in _children(shape)), default=0)


def _children(shape: Any) -> tuple[Any, ...]:
    return shape[1] if len(shape) == 2 else shape[2]  # type: ignore[no-any-return]


def _codegen(shape: Any, index: Sequence[int]) -> Callable[[Sequence[Any]], Any]:
    """Compile ``shape`` into one function ``rebuild(values)``."""
    namespace: dict[str, Any] = {}
    positions = iter(index)

    def const(value: Any) -> str:
        name = f"c{len(namespace)}"
        namespace[name] = value
        return name

    def emit(s: Any) -> str:  # noqa: PLR0911 - one return per kind of value
        if s is _LEAF:
            return f"v[{next(positions)}]"
        t = s[0]
        if t is list:
            return "[" + "".join(emit(c) + ", " for c in s[1]) + "]"
        if t is tuple:
            return "(" + "".join(emit(c) + ", " for c in s[1]) + ")"
        if t is dict:
            items = "".join(f"{const(k)}: {emit(c)}, " for k, c in zip(s[1], s[2]))  # noqa: B905 - equal lengths by construction
            return "{" + items + "}"
        kind = _kind(t)
        if kind == _KIND_MAPPING:
            pairs = "".join(f"({const(k)}, {emit(c)}), " for k, c in zip(s[1], s[2]))  # noqa: B905 - equal lengths by construction
            if s[3] is not None:
                return f"{const(t)}({const(s[3][0])}, [{pairs}])"
            return f"{const(t)}([{pairs}])"
        if kind == _KIND_NAMEDTUPLE:
            return f"{const(t)}(" + "".join(emit(c) + ", " for c in s[1]) + ")"
        if kind == _KIND_SEQUENCE:
            return f"{const(t)}([" + "".join(emit(c) + ", " for c in s[1]) + "])"
        kwargs = "".join(f"{alias}={emit(c)}, " for (_, alias), c in zip(s[1], s[2]))  # noqa: B905 - equal lengths by construction
        return f"{const(t)}({kwargs})"

    body = emit(shape)
    exec(f"def rebuild(v):\n    return {body}\n", namespace)  # noqa: S102 - generated from a shape, never from user text
    return namespace["rebuild"]  # type: ignore[no-any-return]


def _closures(shape: Any, index: Sequence[int]) -> Callable[[Sequence[Any]], Any]:
    """Rebuild ``shape`` with nested closures; for structures too deep for codegen."""
    positions = iter(index)

    def build(s: Any) -> Callable[[Sequence[Any]], Any]:
        if s is _LEAF:
            i = next(positions)
            return lambda v: v[i]
        kids = [build(c) for c in _children(s)]
        t = s[0]
        kind = _kind(t)
        if kind == _KIND_MAPPING:
            keys, extra = s[1], (s[3] if len(s) == 4 else None)
            if extra is not None:
                factory = extra[0]
                return lambda v: t(factory, zip(keys, [k(v) for k in kids]))  # noqa: B905 - equal lengths by construction
            return lambda v: t(zip(keys, [k(v) for k in kids]))  # noqa: B905 - equal lengths by construction
        if kind == _KIND_NAMEDTUPLE:
            return lambda v: t(*[k(v) for k in kids])
        if kind == _KIND_SEQUENCE:
            return lambda v: t([k(v) for k in kids])
        aliases = [alias for _, alias in s[1]]
        return lambda v: t(**dict(zip(aliases, [k(v) for k in kids])))  # noqa: B905 - equal lengths by construction

    return build(shape)


class FetchPlan:
    """A compiled plan for one structure: its unique leaves and how to rebuild it.

    ``leaves`` lists each distinct leaf once, in order of first appearance;
    ``rebuild(values)`` takes one value per entry of ``leaves`` and returns the
    structure with values in place of leaves. ``resolved`` is free for the
    evaluating session to cache its own per-plan work (e.g. resolved handles).
    """

    __slots__ = ("leaves", "paths", "rebuild", "resolved", "structure_repr")

    def __init__(self, shape: Any, leaves: Sequence[Any], structure: Any) -> None:
        positions: dict[Any, int] = {}
        index = [positions.setdefault(leaf, len(positions)) for leaf in leaves]
        self.leaves: tuple[Any, ...] = tuple(positions)
        all_paths = leaf_paths(structure)
        first: dict[int, str] = {}
        for i, path in zip(index, all_paths):  # noqa: B905 - equal lengths by construction
            first.setdefault(i, path)
        self.paths: tuple[str, ...] = tuple(first[i] for i in range(len(self.leaves)))
        self.structure_repr = _short_repr(structure)
        if _depth(shape) > _MAX_CODEGEN_DEPTH:
            self.rebuild = _closures(shape, index)
        else:
            self.rebuild = _codegen(shape, index)
        self.resolved: Any = None

    def error(self, position: int, problem: str) -> FetchError:
        """A ``FetchError`` for the leaf at ``position``, naming its path."""
        path = self.paths[position] or "(the fetch itself)"
        return FetchError(
            f"fetch at {path} {problem}; fetches were {self.structure_repr}"
        )


def _short_repr(structure: Any) -> str:
    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxother = 4, 8, 8, 8, 60
    return r.repr(structure)


class PlanCache:
    """Compiles and caches a ``FetchPlan`` per distinct structure.

    The cache key is the structure's shape and its leaves, so a loop that asks
    for the same things every step compiles once. The cache is bounded: past
    ``limit`` entries it starts over, so structures that never repeat cannot
    grow memory without bound.
    """

    __slots__ = ("_plans", "_limit", "hits", "misses")

    def __init__(self, limit: int = _CACHE_LIMIT) -> None:
        self._plans: dict[Hashable, FetchPlan] = {}
        self._limit = limit
        self.hits = 0
        self.misses = 0

    def plan(self, structure: Any) -> FetchPlan:
        """The plan for ``structure``; raises ``FetchError`` for an unhashable leaf."""
        t = type(structure)
        key: Hashable
        if t in _leaf_types:
            # One leaf, the commonest fetch: its own key (no container key is a leaf).
            shape, leaves, key = _LEAF, [structure], structure
        else:
            leaves = []
            try:
                shape = _walk(structure, leaves)
            except RecursionError:
                raise FetchError(
                    f"fetches nest deeper than Python's recursion limit or contain themselves: "
                    f"{_short_repr(structure)}"
                ) from None
            except AttributeError as error:
                raise FetchError(
                    f"a dataclass or attrs fetch lacks a field ({error}); fetches were "
                    f"{_short_repr(structure)}"
                ) from None
            key = (shape, *leaves)
        try:
            plan = self._plans.get(key)
        except Exception:  # noqa: BLE001 - whatever a leaf's __hash__ raises, name the leaf
            raise _unhashable(structure) from None
        if plan is not None:
            self.hits += 1
            return plan
        self.misses += 1
        if len(self._plans) >= self._limit:
            self._plans.clear()
        plan = FetchPlan(shape, leaves, structure)
        self._plans[key] = plan
        return plan

    def __len__(self) -> int:
        return len(self._plans)


def _unhashable(structure: Any) -> FetchError:
    leaves: list[Any] = []
    _walk(structure, leaves)
    for leaf, path in zip(leaves, leaf_paths(structure)):  # noqa: B905 - equal lengths by construction
        try:
            hash(leaf)
        except Exception:  # noqa: BLE001 - a leaf's own __hash__ may raise anything
            return FetchError(
                f"fetch at {path or '(the fetch itself)'} is a {type(leaf).__name__}, "
                f"which cannot be a fetch (leaves must be hashable handles or names); "
                f"fetches were {_short_repr(structure)}"
            )
    return FetchError(f"fetches {_short_repr(structure)} cannot be hashed")
