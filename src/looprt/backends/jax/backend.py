"""``JaxBackend``: runs programs whose state is JAX pytrees, updated functionally.

What it does for the runtime:

* values stay on the device: a step's results are assigned to state as they
  are (JAX arrays, still being computed: dispatch stays asynchronous), and
  only what a caller or hook fetches is brought to the host, as NumPy
  arrays (0-d: NumPy scalars, as TF gives). A run that fetches nothing never
  waits for the device.
* state is any pytree of JAX arrays, NumPy arrays, PRNG keys and Python
  numbers; no step can change it in place, so a step names it in
  ``updates`` and returns its new value. The global step stays a host NumPy
  counter, so hooks read it without touching the device.
* restoring matches leaves by tree path, checks every shape and dtype before
  anything changes, and puts each array where the live leaf is (its
  sharding); see ``trees``.
* checkpoints: ``arrays.npz`` and ``tree.json`` (see ``checkpoint``), with
  each iterable input's position, so a resumed run pulls the batch the
  uninterrupted one would have.
* profiling: ``ProfilerHook`` writes ``jax.profiler`` traces (see ``profiler``).
* distributed: in a ``jax.distributed`` job the chief (process 0) broadcasts
  the state it initialized or restored, workers wait for it, and every
  process stops at the same step (see ``distributed``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from looprt.backends.jax import checkpoint, distributed, trees
from looprt.backends.jax.errors import translate
from looprt.backends.jax.profiler import JaxProfiler
from looprt.program.backend import ProgramBackend

if TYPE_CHECKING:
    from looprt.program.handles import State
    from looprt.program.program import Program
    from looprt.session.scaffold import Scaffold

__all__ = ["INPUTS_KEY", "JaxBackend"]

logger = logging.getLogger(__name__)

# Not program state: a "/" never appears in the name of state a step binds by parameter name.
INPUTS_KEY = "looprt/inputs"


class JaxBackend(ProgramBackend):
    """Runs JAX programs (``Program(backend="jax")``, ``looprt.wrap(..., backend="jax")``).

    Fed and pulled values reach the step as they are (a jitted step moves
    NumPy batches to the device itself).
    """

    name = "jax"

    def __repr__(self) -> str:
        return "JaxBackend()"

    # -- values --------------------------------------------------------------------

    def updatable_in_place(self, value: Any) -> bool:
        """False for JAX arrays and every pytree holding one: a step must return the new value."""
        if trees.contains_jax_array(value):
            return False
        return super().updatable_in_place(value)

    def snapshot(self, value: Any) -> Any:
        """An independent host copy of state (a host tree: NumPy arrays, ``KeyData`` for keys)."""
        return trees.host_copy(value)

    def to_host(self, value: Any) -> Any:
        return trees.to_host(value)

    def translate_error(self, error: BaseException) -> BaseException | None:
        return translate(error)

    def profiler(self, show_dataflow: bool = True, show_memory: bool = False) -> JaxProfiler:
        """What ``ProfilerHook`` traces a run with: ``jax.profiler`` (see ``profiler``)."""
        return JaxProfiler(show_dataflow=show_dataflow, show_memory=show_memory)

    # -- state ---------------------------------------------------------------------

    def check_assign(self, state: State, value: Any) -> None:
        """Raise, changing nothing, if ``value`` does not fit ``state``'s live tree.

        ``KeyError`` names the leaf paths only one tree has; ``ValueError``
        the leaf whose shape or dtype differs.
        """
        live = state.value
        if isinstance(live, np.ndarray) and not isinstance(value, trees.SavedTree):
            value = trees.SavedTree({"": np.asarray(value)})
        trees.check(state.name, live, value)

    def assign(self, state: State, value: Any) -> None:
        """Set ``state`` from a host tree or ``SavedTree``: a NumPy array in place, a tree replaced."""
        live = state.value
        if isinstance(live, np.ndarray):  # the global step: counted in place, keep the object
            self.check_assign(state, value)
            live[...] = trees.leaves_by_path(value)[""] if isinstance(value, trees.SavedTree) else value
            return
        state.value = trees.restore(state.name, live, value)

    def state_dict(self, program: Program) -> dict[str, Any]:
        """Every state's host tree (a copy), plus where each iterable input stands."""
        return self._state(program, trees.host_copy)

    def state_view(self, program: Program) -> dict[str, Any]:
        """``state_dict`` without copies where the host can read device memory (a CPU).

        What a synchronous save writes, before the next step could donate a buffer.
        """
        return self._state(program, trees.host_view)

    def _state(self, program: Program, host: Callable[[Any], Any]) -> dict[str, Any]:
        values: dict[str, Any] = {name: host(s.value) for name, s in program.states.items()}
        positions = {
            name: handle.position for name, handle in program.inputs.items() if handle.iterable is not None
        }
        if positions:
            values[INPUTS_KEY] = positions
        return values

    def load_state_dict(self, program: Program, values: Mapping[str, Any]) -> None:
        """Restore every state from ``values``; every leaf is checked before any is set.

        Input positions are optional; where given, each iterable input
        continues from its saved position (a re-iterable one is iterated
        afresh and the items before it skipped).
        """
        names = [key for key in values if key != INPUTS_KEY]
        missing = sorted(set(program.states) - set(names))
        unexpected = sorted(set(names) - set(program.states))
        if missing or unexpected:
            raise KeyError(
                f"state of {program.name!r} does not match the values to restore: "
                f"missing {missing}, unexpected {unexpected}"
            )
        positions = values.get(INPUTS_KEY) or {}
        unknown = sorted(set(positions) - set(program.inputs))
        if unknown:
            raise KeyError(
                f"the values to restore have positions of inputs {unknown}, which {program.name!r} lacks"
            )
        for name, handle in program.states.items():
            self.check_assign(handle, values[name])
        for name, handle in program.states.items():
            self.assign(handle, values[name])
        for name, position in positions.items():
            _resume_input(program.inputs[name], int(position))

    # -- checkpoints ---------------------------------------------------------------

    def save_payload(self, state: Mapping[str, Any], directory: str) -> list[str]:
        """Write ``state`` (from ``state_dict``) as ``arrays.npz`` and ``tree.json``."""
        trees_only = {name: value for name, value in state.items() if name != INPUTS_KEY}
        extras = {INPUTS_KEY: state[INPUTS_KEY]} if INPUTS_KEY in state else {}
        return checkpoint.save(trees_only, extras, directory)

    def load_payload(self, directory: str) -> dict[str, Any]:
        states, extras = checkpoint.load(directory)
        values: dict[str, Any] = dict(states)
        if INPUTS_KEY in extras:
            values[INPUTS_KEY] = extras[INPUTS_KEY]
        return values

    # -- chief and workers ---------------------------------------------------------

    def session_manager(self, scaffold: Scaffold) -> Any:
        """The default manager, once every process has checked its state is its own.

        In a ``jax.distributed`` job, state spanning processes is refused
        here, by every process, before a restore or the broadcast could
        deadlock (see ``distributed.check_process_local``).
        """
        distributed.check_process_local(scaffold.program)
        return super().session_manager(scaffold)

    def mark_ready(self, program: Program) -> None:
        """Tell waiting workers the state is ready; in a distributed job, broadcast it."""
        super().mark_ready(program)
        if distributed.is_distributed():
            distributed.send_state(self.state_dict(program), program.name)

    def training_session_defaults(self) -> dict[str, Any]:
        """In a ``jax.distributed`` job: process 0 is the chief, and processes stop together."""
        return distributed.job_defaults()

    def wait_until_ready(self, program: Program, timeout: float | None) -> None:
        """Wait for the chief; in a distributed job, receive its state and load it."""
        if not distributed.is_distributed():
            super().wait_until_ready(program, timeout)
            return
        self.load_state_dict(program, distributed.receive_state(timeout, program.name))


def _resume_input(handle: Any, position: int) -> None:
    """Make ``handle`` pull next the item after the first ``position`` of its iterable."""
    iterable = handle.iterable
    iterator: Callable[[], Any] | None = getattr(iterable, "__iter__", None)
    if iterator is None:
        return
    if iter(iterable) is not iterable:  # re-iterable: start again and skip what was pulled
        handle.restart(itertools.islice(iter(iterable), position, None), position)
        return
    if handle.position > position:  # a one-shot iterator cannot go back
        logger.warning(
            "input %r cannot go back from item %d to %d (its iterable is a one-shot iterator); "
            "it continues from item %d",
            handle.name, handle.position, position, handle.position,
        )
        return
    skip = position - handle.position
    handle.restart(itertools.islice(iterable, skip, None), position)
