"""JAX state as pytrees: bringing it to the host, naming its leaves, and restoring it.

Glossary:

* a *tree* is any JAX pytree: nested dicts, lists, tuples, namedtuples,
  registered dataclasses and Optax states, whose *leaves* are arrays (JAX or
  NumPy), PRNG keys and Python scalars;
* a leaf's *path* is ``jax.tree_util.keystr`` of its key path: ``['w1']``,
  ``[0].mu['w1']``, ``.count``; the root of a tree that is a single array has
  the path ``""``;
* a *host tree* is a tree with every JAX array replaced by a NumPy array (a
  new-style PRNG key by ``KeyData``): what fetching state gives, what a
  checkpoint holds, and what ``restore`` takes;
* a ``SavedTree`` is a host tree flattened to ``{path: leaf}``, as a
  checkpoint is read back without the live tree at hand.

Restoring matches leaves by path, so a tree with another structure is refused
with the paths that differ, and each array must have the live leaf's shape
and dtype. Restored arrays go where the live leaf is (its sharding).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path, tree_map, tree_unflatten

__all__ = [
    "KeyData",
    "SavedTree",
    "check",
    "contains_jax_array",
    "host_copy",
    "host_view",
    "leaves_by_path",
    "restore",
    "to_host",
]

_PLAIN = (bool, int, float, complex, str)


@dataclass(frozen=True, eq=False)
class KeyData:
    """A new-style PRNG key (``jax.random.key``) on the host: its raw bits and implementation name.

    A leaf, not a pytree node (so a host tree has the live tree's structure).
    """

    impl: str
    data: np.ndarray


class SavedTree(dict[str, Any]):
    """A host tree flattened to ``{path: leaf}`` (see the module docstring)."""


def is_key(leaf: Any) -> bool:
    """Whether ``leaf`` is a JAX array of new-style PRNG keys."""
    return isinstance(leaf, jax.Array) and jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def contains_jax_array(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a JAX array (which no step can change in place)."""
    if isinstance(tree, jax.Array):
        return True
    # Objects JAX does not know as pytree nodes are leaves: flattening never fails.
    leaves = jax.tree_util.tree_leaves(tree)
    return any(isinstance(leaf, jax.Array) for leaf in leaves)


def _key_data(leaf: Any) -> Any:
    if is_key(leaf):
        return KeyData(str(jax.random.key_impl(leaf)), jax.random.key_data(leaf))  # type: ignore[arg-type]
    return leaf


def _writable(leaf: Any) -> Any:
    if isinstance(leaf, np.ndarray):
        if leaf.ndim == 0:
            return leaf[()]
        return leaf if leaf.flags.writeable else leaf.copy()
    if isinstance(leaf, KeyData):
        return KeyData(leaf.impl, np.array(leaf.data))
    return leaf


def to_host(value: Any) -> Any:
    """A fetched output as the caller gets it: NumPy arrays (0-d: NumPy scalars), copied.

    A single array takes ``numpy.array`` (about 10x cheaper than
    ``jax.device_get``); a tree takes ``jax.device_get``, which starts every
    leaf's copy before waiting for the first: one wait, not one per leaf.
    """
    if isinstance(value, jax.Array) and not is_key(value):
        array = np.array(value)  # a copy: on CPU, np.asarray would share the buffer
        return array[()] if array.ndim == 0 else array
    if isinstance(value, _PLAIN) or value is None:
        return value
    return tree_map(_writable, jax.device_get(tree_map(_key_data, value)))


def host_copy(value: Any) -> Any:
    """An independent host copy of live state (a host tree); a NumPy array stays an array."""
    if isinstance(value, np.ndarray):
        return value[()] if value.ndim == 0 else value.copy()
    host = jax.device_get(tree_map(_key_data, value))
    return tree_map(_copy_leaf, host)


def host_view(value: Any) -> Any:
    """A host tree of live state that may share memory with it (on a CPU, no copy is made).

    Valid while the live arrays are: until a step that donates them runs.
    """
    if isinstance(value, np.ndarray):
        return value
    return jax.device_get(tree_map(_key_data, value))


def _copy_leaf(leaf: Any) -> Any:
    if isinstance(leaf, np.ndarray):
        return np.array(leaf)
    if isinstance(leaf, KeyData):
        return KeyData(leaf.impl, np.array(leaf.data))
    return leaf


def leaves_by_path(tree: Any) -> dict[str, Any]:
    """``{path: leaf}`` for every leaf of ``tree``, in the tree's order; a ``SavedTree`` as it is."""
    if isinstance(tree, SavedTree):
        return tree
    flat, _ = tree_flatten_with_path(tree)
    return {keystr(path): leaf for path, leaf in flat}


def _describe(leaf: Any) -> tuple[tuple[int, ...] | None, str]:
    """A leaf's shape (None for a Python scalar) and dtype name, as errors show them."""
    if isinstance(leaf, KeyData):
        return tuple(leaf.data.shape[:-1]), f"key<{leaf.impl}>"
    if is_key(leaf):
        return tuple(leaf.shape), f"key<{jax.random.key_impl(leaf)}>"
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        return tuple(leaf.shape), str(leaf.dtype)
    return None, type(leaf).__name__


def _paths(paths: Iterator[str] | list[str]) -> str:
    return ", ".join(p or "(the root)" for p in paths) or "none"


def check(name: str, live: Any, value: Any) -> None:
    """Raise if ``value`` cannot restore the live tree of state ``name``; change nothing.

    ``KeyError`` names the paths one tree has and the other lacks;
    ``ValueError`` names the leaf whose shape or dtype differs.
    """
    live_leaves = leaves_by_path(live)
    saved = leaves_by_path(value)
    missing = [p for p in live_leaves if p not in saved]
    unexpected = [p for p in saved if p not in live_leaves]
    if missing or unexpected:
        raise KeyError(
            f"state {name!r}: the saved tree and the live tree differ. Leaves the saved tree lacks: "
            f"{_paths(missing)}; leaves only the saved tree has: {_paths(unexpected)}"
        )
    for path, leaf in live_leaves.items():
        want, got = _describe(leaf), _describe(saved[path])
        if isinstance(leaf, _PLAIN) and isinstance(saved[path], (*_PLAIN, np.generic)):
            continue  # a Python scalar in the tree takes the saved number
        if want != got:
            raise ValueError(
                f"state {name!r}, leaf {name}{path}: the live tree has shape {want[0]} and dtype "
                f"{want[1]}; the saved value has shape {got[0]} and dtype {got[1]}"
            )


def _restore_leaf(live: Any, saved: Any) -> Any:
    if is_key(live):
        data = jax.device_put(np.asarray(saved.data), live.sharding)
        return jax.random.wrap_key_data(data, impl=saved.impl)
    if isinstance(live, jax.Array):
        return jax.device_put(np.asarray(saved, dtype=live.dtype), live.sharding)
    if isinstance(live, np.ndarray):
        return np.array(saved, dtype=live.dtype)
    if isinstance(live, np.generic):
        return live.dtype.type(saved)
    if isinstance(live, _PLAIN):
        return type(live)(saved.item() if isinstance(saved, np.generic) else saved)
    return saved


def restore(name: str, live: Any, value: Any) -> Any:
    """The live tree of state ``name`` with every leaf taken from ``value`` (after ``check``)."""
    check(name, live, value)
    saved = leaves_by_path(value)
    flat, treedef = tree_flatten_with_path(live)
    return tree_unflatten(treedef, [_restore_leaf(leaf, saved[keystr(path)]) for path, leaf in flat])

