"""``TensorFlowBackend``: runs looprt programs whose state is TF2 eager objects.

State is ``tf.Variable``s, Keras models, layers and optimizers, or
``tf.Module``s (anything with ``variables``); steps are plain functions or
``tf.function``s that update it in place. Sessions, hooks and checkpoint
hooks are looprt's, as for NumPy and PyTorch programs::

    model, opt = keras.Sequential([...]), keras.optimizers.Adam()
    prog = looprt.Program(backend="tensorflow")
    prog.state("model", model); prog.state("optimizer", opt)
    batch = prog.input("batch", iterable=dataset)

    @prog.step(outputs=("loss",))
    @tf.function
    def train(batch, model, optimizer): ...

What the backend does:

* the global step is a ``tf.Variable`` (int64), so a step may take it;
* fetched tensors and variables come back as NumPy values (0-d ones as NumPy
  scalars, as TF's ``Session.run`` gives them);
* fed Python numbers become scalar tensors, so a ``tf.function`` step is
  traced once, not once per value (bools stay Python bools);
* a snapshot of a variable is its NumPy value; of a model, optimizer or
  module, the NumPy values of its ``variables`` in order. Setting state from
  a snapshot with fewer values (one taken before a Keras optimizer made its
  slots) sets those and leaves the newer variables, with a warning: build a
  model or optimizer before declaring it for ``Scaffold``'s init op to reset
  all of it;
* ``tf.errors`` raised by a step become looprt's errors of the same code, so
  ``AbortedError`` / ``UnavailableError`` recover and ``OutOfRangeError`` (a
  ``tf.data`` iterator running dry) ends a ``with`` block cleanly;
* the default saver writes ``tf.train.Checkpoint`` files (``ObjectSaver``):
  a plain TF program restores them with ``tf.train.Checkpoint(model=...,
  optimizer=...)``; ``looprt.Saver`` (``save_payload``) writes the snapshots
  as the NumPy backend does.

Graph mode does not mix with this backend: creating a program or a session
inside ``with tf.Graph().as_default():`` raises ``EagerModeRequiredError``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from looprt.backends.protocol import Session
from looprt.backends.tensorflow.errors import require_eager_mode, translate_error
from looprt.backends.tensorflow.object_saver import ObjectSaver
from looprt.errors import UnimplementedError
from looprt.program.backend import ProgramBackend

if TYPE_CHECKING:
    from looprt.program.handles import State
    from looprt.program.program import Program

__all__ = ["TensorFlowBackend"]

logger = logging.getLogger(__name__)

_LIST_TAG = "__looprt_list__"


def _is_variable(value: Any) -> bool:
    """A ``tf.Variable`` or a Keras ``Variable`` (which is not a ``tf.Variable``)."""
    return isinstance(value, tf.Variable) or (
        hasattr(value, "assign") and hasattr(value, "numpy") and hasattr(value, "dtype")
    )


def _variables_of(value: Any) -> list[Any] | None:
    """The variables of a model, layer, optimizer or module, in order; None if it is none of those."""
    if isinstance(value, (tf.Tensor, np.ndarray)) or _is_variable(value):
        return None
    variables = getattr(value, "variables", None)
    if variables is None or callable(variables):
        return None
    return list(variables)


def _host(value: Any) -> Any:
    array = value.numpy()
    if isinstance(array, np.ndarray):
        # A copy: TF may hand out the variable's own buffer.
        return array[()] if array.ndim == 0 else array.copy()
    return array


class TensorFlowBackend(ProgramBackend):
    """Runs programs whose state is TF2 eager objects (see the module docstring)."""

    name = "tensorflow"

    def create_session(self, program: Program, target: str = "", config: Any = None) -> Session:
        require_eager_mode(f"The TensorFlow backend (program {program.name!r})")
        return super().create_session(program, target, config)

    def new_global_step(self) -> Any:
        require_eager_mode("The TensorFlow backend")
        return tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")

    def increment(self, counter: Any) -> None:
        counter.assign_add(1)

    def snapshot(self, value: Any) -> Any:
        if _is_variable(value) or isinstance(value, tf.Tensor):
            return _host(value)
        variables = _variables_of(value)
        if variables is not None:
            return [_host(v) for v in variables]
        if isinstance(value, np.ndarray):
            return value.copy()
        return copy.deepcopy(value)

    def to_host(self, value: Any) -> Any:
        if isinstance(value, tf.Tensor) or _is_variable(value):
            return _host(value)
        if isinstance(value, (list, tuple, dict)):
            return tf.nest.map_structure(
                lambda v: _host(v) if isinstance(v, tf.Tensor) or _is_variable(v) else v, value
            )
        if type(value) is np.ndarray and value.ndim == 0:
            return value[()]
        return value

    def from_feed(self, value: Any) -> Any:
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            return tf.constant(value)
        return value

    def assign(self, state: State, value: Any) -> None:
        live = state.value
        if _is_variable(live):
            live.assign(value)
            return
        variables = _variables_of(live)
        if variables is None:
            state.value = copy.deepcopy(value)
            return
        values = list(value)
        if len(values) > len(variables):
            raise ValueError(
                f"state {state.name!r} has {len(variables)} variables; the value to restore has "
                f"{len(values)} (was the model or optimizer built differently?)"
            )
        if len(values) < len(variables):
            # Built since the snapshot (a Keras optimizer's slots): those variables keep their values.
            logger.warning(
                "state %r has %d variables, the value to restore %d: setting the first %d (was it "
                "built after it was declared?)",
                state.name,
                len(variables),
                len(values),
                len(values),
            )
        for variable, new in zip(variables, values, strict=False):
            if tuple(variable.shape) != np.shape(new):
                raise ValueError(
                    f"state {state.name!r}: variable {getattr(variable, 'path', variable.name)!r} has "
                    f"shape {tuple(variable.shape)}; the value to restore has {np.shape(new)}"
                )
        for variable, new in zip(variables, values, strict=False):
            variable.assign(new)

    def translate_error(self, error: BaseException) -> BaseException | None:
        return translate_error(error)

    def default_saver(self, program: Program, *, storage_options: Mapping[str, Any] | None = None) -> Any:
        """A ``tf.train.Checkpoint`` saver of the program's live objects (``ObjectSaver``).

        Raises:
            UnimplementedError: ``storage_options`` given: ``tf.train.Checkpoint``
                writes through TF's own file layer, which takes no fsspec options.
        """
        if storage_options is not None:
            raise UnimplementedError(
                "storage_options are not supported by the TF eager backend's saver: "
                "tf.train.Checkpoint writes through TF's file layer, not fsspec; "
                "give a looprt.checkpoint.Saver in the scaffold, or leave storage_options out"
            )
        return ObjectSaver(program)

    def save_payload(self, state: Mapping[str, Any], directory: str) -> list[str]:
        """Snapshots (from ``state_dict``) as the NumPy backend's files; lists of arrays flattened."""
        from looprt.backends.numpy import NumpyBackend

        flat: dict[str, Any] = {}
        for name, value in state.items():
            if isinstance(value, list) and all(isinstance(v, (np.ndarray, np.generic)) for v in value):
                flat[name] = {_LIST_TAG: len(value)}
                flat.update({f"{name}/{i}": v for i, v in enumerate(value)})
            else:
                flat[name] = value
        return NumpyBackend().save_payload(flat, directory)

    def load_payload(self, directory: str) -> dict[str, Any]:
        from looprt.backends.numpy import NumpyBackend

        flat = NumpyBackend().load_payload(directory)
        values: dict[str, Any] = {}
        items: set[str] = set()
        for name, value in flat.items():
            if isinstance(value, dict) and set(value) == {_LIST_TAG}:
                keys = [f"{name}/{i}" for i in range(value[_LIST_TAG])]
                values[name] = [flat[key] for key in keys]
                items.update(keys)
        values.update(
            (name, value) for name, value in flat.items() if name not in values and name not in items
        )
        return values
