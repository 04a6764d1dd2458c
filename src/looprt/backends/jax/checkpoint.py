"""The JAX checkpoint format: one ``arrays.npz`` of every leaf, keyed by path, and a JSON index.

A checkpoint folder (written by looprt's checkpoint manager, which adds its
own commit record and checksums) holds:

``arrays.npz``
    every array leaf of every piece of state, under ``<state><path>``:
    ``params['w1']``, ``opt_state[0].mu['w1']``, ``global_step``, ``key``.
    ``numpy.load`` opens it; nothing in it is pickled. Arrays of dtypes NumPy
    lacks (bfloat16, float8, int4) are stored as unsigned integers of the
    same width; new-style PRNG keys as their raw bits (``jax.random.key_data``).
``tree.json``
    ``{"format": "looprt.jax/1", "states": {state: {path: leaf}}, "extras": {...}}``
    where a leaf is ``{"array": key, "dtype": name, "shape": [...]}`` (plus
    ``"prng_impl"`` for a key) or ``{"value": number}`` for a Python scalar;
    ``extras`` holds looprt's own JSON values (the inputs' positions).

Why not Orbax: its format needs ``orbax-checkpoint`` and TensorStore to read
(tens of MB) and brings its own atomic-commit protocol, which would sit
inside looprt's; an ``.npz`` keyed by tree paths is readable with NumPy
alone, and ``load_tree`` rebuilds a tree from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from looprt.backends.jax.trees import KeyData, SavedTree, leaves_by_path

__all__ = ["ARRAYS", "FORMAT", "INDEX", "load", "load_tree", "save"]

ARRAYS = "arrays.npz"
INDEX = "tree.json"
FORMAT = "looprt.jax/1"


def _storable(array: np.ndarray) -> np.ndarray:
    """``array``, or its bits as unsigned integers when ``.npz`` cannot name its dtype."""
    if np.dtype(array.dtype.str) == array.dtype:
        return array
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def _dtype(name: str) -> np.dtype[Any]:
    """The NumPy dtype a saved dtype name means (JAX's extended dtypes included)."""
    try:
        return np.dtype(name)
    except TypeError:
        import jax.numpy as jnp

        return np.dtype(jnp.dtype(name))


def save(state: Mapping[str, Any], extras: Mapping[str, Any], directory: str) -> list[str]:
    """Write host trees ``state`` (by state name) and JSON ``extras``; return the file names.

    ``TypeError`` names the path of a leaf that is neither an array nor a
    Python scalar.
    """
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, Any]] = {}
    for name, tree in state.items():
        entries: dict[str, Any] = {}
        for path, leaf in leaves_by_path(tree).items():
            key = f"{name}{path}"
            if key in arrays:
                raise ValueError(f"two leaves would be stored as {key!r}; rename state {name!r}")
            if isinstance(leaf, KeyData):
                arrays[key] = np.asarray(leaf.data)
                entries[path] = {"array": key, "dtype": str(leaf.data.dtype), "shape": list(leaf.data.shape),
                                 "prng_impl": leaf.impl}
            elif isinstance(leaf, (np.ndarray, np.generic)):
                array = np.asarray(leaf)
                if array.dtype == object:
                    raise TypeError(f"state {name!r}, leaf {key}: an object array cannot be checkpointed")
                arrays[key] = _storable(array)
                entries[path] = {"array": key, "dtype": str(array.dtype), "shape": list(array.shape)}
            elif isinstance(leaf, (bool, int, float)):
                entries[path] = {"value": leaf}
            else:
                raise TypeError(
                    f"state {name!r}, leaf {key} is a {type(leaf).__name__}; JAX checkpoints hold "
                    "arrays, PRNG keys and Python numbers (make it an array, or a pytree node)"
                )
        index[name] = entries
    with open(os.path.join(directory, ARRAYS), "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    try:
        text = json.dumps({"format": FORMAT, "states": index, "extras": dict(extras)}, allow_nan=True)
    except TypeError as e:
        raise TypeError(f"extras of a JAX checkpoint must be JSON values: {e}") from None
    with open(os.path.join(directory, INDEX), "w", encoding="utf-8") as f:
        f.write(text)
    return [ARRAYS, INDEX]


def load(directory: str) -> tuple[dict[str, SavedTree], dict[str, Any]]:
    """Read what ``save`` wrote: ``({state: SavedTree}, extras)``, with the saved dtypes."""
    with open(os.path.join(directory, INDEX), encoding="utf-8") as f:
        index = json.load(f)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{INDEX} in {directory} is not a looprt JAX checkpoint of format {FORMAT}")
    states: dict[str, SavedTree] = {}
    with np.load(os.path.join(directory, ARRAYS), allow_pickle=False) as data:
        for name, entries in index["states"].items():
            tree = states[name] = SavedTree()
            for path, entry in entries.items():
                if "value" in entry:
                    tree[path] = entry["value"]
                    continue
                stored = data[entry["array"]]
                if "prng_impl" in entry:
                    tree[path] = KeyData(entry["prng_impl"], stored)
                    continue
                dtype = _dtype(entry["dtype"])
                array = stored if stored.dtype == dtype else stored.view(dtype)
                if list(array.shape) != entry["shape"]:
                    raise ValueError(f"leaf {entry['array']} of {directory} has shape {array.shape}, "
                                     f"its index says {entry['shape']}")
                tree[path] = array
    return states, dict(index.get("extras", {}))


def load_tree(directory: str, name: str, like: Any) -> Any:
    """State ``name`` of the checkpoint in ``directory``, as a tree shaped like ``like``.

    For reading a checkpoint outside a session (evaluation, export): the
    result has ``like``'s structure, dtypes and shardings, and the saved
    values; errors name the paths that differ.
    """
    from looprt.backends.jax.trees import restore

    states, _ = load(directory)
    if name not in states:
        raise KeyError(f"the checkpoint in {directory} has no state {name!r} (it has {sorted(states)})")
    return restore(name, like, states[name])
