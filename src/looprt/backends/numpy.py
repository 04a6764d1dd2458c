"""The NumPy backend: the reference adapter, with state held in NumPy arrays.

State arrays are passed to steps by reference: update them in place
(``w -= lr * grad``, ``w[...] = new``). Fetched arrays are independent
copies when they are state; 0-d arrays come back as NumPy scalars, as TF does.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from looprt.program.backend import ProgramBackend

if TYPE_CHECKING:
    from looprt.program.handles import State

__all__ = ["NumpyBackend"]

PAYLOAD = "state.npz"
OTHERS = "state.json"


class NumpyBackend(ProgramBackend):
    """Runs programs whose state is NumPy arrays (or other copyable objects)."""

    name = "numpy"

    def state_view(self, program: Any) -> dict[str, Any]:
        """The live values themselves: a synchronous save writes them before the next step."""
        return {name: state.value for name, state in program.states.items()}

    def snapshot(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value[()] if value.ndim == 0 else value.copy()
        return copy.deepcopy(value)

    def to_host(self, value: Any) -> Any:
        if type(value) is np.ndarray and value.ndim == 0:
            return value[()]
        return value

    def check_assign(self, state: State, value: Any) -> None:
        """Raise ``ValueError`` if ``value`` cannot be assigned to array state; change nothing.

        An array's value must have its shape and a dtype that casts to its
        dtype within the same kind (float64 to float32, not float to int).
        State that is not an array is replaced, and takes any value.
        """
        live = state.value
        if not isinstance(live, np.ndarray):
            return
        new = np.asarray(value)
        if new.shape != live.shape:
            raise ValueError(
                f"state {state.name!r} has shape {live.shape}; the value to restore has {new.shape}"
            )
        if not np.can_cast(new.dtype, live.dtype, casting="same_kind"):
            raise ValueError(
                f"state {state.name!r} has dtype {live.dtype}; the value to restore has {new.dtype}, "
                "which does not cast to it"
            )

    def assign(self, state: State, value: Any) -> None:
        """Set ``state`` from ``value``: arrays in place, after ``check_assign``; others replaced."""
        live = state.value
        if isinstance(live, np.ndarray):
            self.check_assign(state, value)
            live[...] = value
        else:
            state.value = copy.deepcopy(value)

    def save_payload(self, state: Mapping[str, Any], directory: str) -> list[str]:
        """Arrays (and NumPy scalars) go to ``state.npz``; other values to ``state.json``.

        Nothing is pickled, so a checkpoint can be loaded without trusting it.
        """
        arrays: dict[str, np.ndarray] = {}
        others: dict[str, Any] = {}
        for name, value in state.items():
            if isinstance(value, (np.ndarray, np.generic)):
                if value.dtype == object:
                    raise TypeError(f"state {name!r} is an object array; numpy checkpoints hold no objects")
                arrays[name] = np.asarray(value)
            else:
                others[name] = value
        with open(os.path.join(directory, PAYLOAD), "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        files = [PAYLOAD]
        if others:
            try:
                text = json.dumps(others, allow_nan=True)
            except TypeError as e:
                raise TypeError(
                    f"state {sorted(others)} must be NumPy arrays or JSON values to be checkpointed "
                    f"by the numpy backend: {e}"
                ) from None
            with open(os.path.join(directory, OTHERS), "w", encoding="utf-8") as f:
                f.write(text)
            files.append(OTHERS)
        return files

    def load_payload(self, directory: str) -> dict[str, Any]:
        with np.load(os.path.join(directory, PAYLOAD), allow_pickle=False) as data:
            values: dict[str, Any] = {name: data[name] for name in data.files}
        others = os.path.join(directory, OTHERS)
        if os.path.exists(others):
            with open(others, encoding="utf-8") as f:
                values.update(json.load(f))
        return values
