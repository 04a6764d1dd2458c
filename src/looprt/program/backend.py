"""``ProgramBackend``: the defaults of an in-process eager backend; subclass and override.

The protocol it implements is ``looprt.backends.protocol.Backend``; the
NumPy, PyTorch and TensorFlow (eager) adapters subclass it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from looprt.errors import DeadlineExceededError

if TYPE_CHECKING:
    from looprt.backends.protocol import Session
    from looprt.program.handles import State
    from looprt.program.program import Program
    from looprt.session.scaffold import Scaffold

__all__ = ["ProgramBackend"]


class ProgramBackend:
    """Defaults for an in-process eager backend; subclass and override."""

    name = "base"

    def create_session(self, program: Program, target: str = "", config: Any = None) -> Session:
        from looprt.program.session import ProgramSession

        return ProgramSession(program, target=target, config=config)

    def new_global_step(self) -> Any:
        import numpy as np

        return np.zeros((), dtype=np.int64)

    def increment(self, counter: Any) -> None:
        """Add one to ``counter`` (made by ``new_global_step``) in place."""
        counter += 1

    def incrementer(self, counter: Any) -> Callable[[], None]:
        """A function that adds one to ``counter`` in place, as ``increment(counter)`` does.

        Optional (not in ``Backend``: a session falls back to ``increment``).
        Sessions call it once per step that advances the global step, so it
        should be cheap. The default calls ``increment``. (A ``ProgramSession``
        counts the default counter of a backend that overrides neither method
        in place, through a memoryview, with no call.)
        """
        return functools.partial(self.increment, counter)

    def counter_view(self, counter: Any) -> memoryview | None:
        """A memoryview through which a session may count ``counter`` in place, or None.

        Optional (not in ``Backend``). The default gives one for the default
        counter (a 0-d native int64 NumPy array) of a backend that keeps the
        default ``increment`` and ``incrementer``: counted through its
        buffer, about 15x cheaper than a NumPy ``+= 1``, with the same
        result; ``ProgramSession`` also reads the global step through it
        (``global_step_value``).
        """
        if type(self).increment is not ProgramBackend.increment:
            return None
        if type(self).incrementer is not ProgramBackend.incrementer:
            return None
        return _int64_scalar_view(counter)

    def feed_converter(self) -> Callable[[Any], Any] | None:
        """``from_feed``, or None where it is the identity (a session then skips the call).

        Optional (not in ``Backend``): the session calls ``from_feed`` on
        every pulled or default input value without it.
        """
        return None if type(self).from_feed is ProgramBackend.from_feed else self.from_feed

    def training_session_defaults(self) -> Mapping[str, Any]:
        """What this process's part in a distributed job means for ``MonitoredTrainingSession``.

        Optional (not in ``Backend``). Keys: ``"is_chief"`` (used when the
        caller leaves ``is_chief=None``), ``"hooks"`` (added after the
        caller's) and ``"chief_only_hooks"`` (added before the caller's).
        Empty outside a job: a single process is the chief.
        """
        return {}

    def snapshot(self, value: Any) -> Any:
        """An independent host copy of a piece of state."""
        return copy.deepcopy(value)

    def updatable_in_place(self, value: Any) -> bool:
        """Whether ``value`` can change in place (``x += 1`` changes the object itself).

        False for Python numbers, strings, tuples, NumPy scalars and
        read-only arrays: a step must replace such state (``updates``). A
        backend with immutable arrays (JAX) says False for them too.
        """
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, tuple, frozenset)):
            return False
        flags = getattr(value, "flags", None)
        if flags is not None and hasattr(flags, "writeable"):
            return bool(flags.writeable)  # a NumPy array
        return type(value).__module__ != "numpy"  # NumPy scalars are immutable

    def to_host(self, value: Any) -> Any:
        """A fetched value as the caller gets it."""
        return value

    def from_feed(self, value: Any) -> Any:
        """A fed value as the step gets it."""
        return value

    def assign(self, state: State, value: Any) -> None:
        """Set live state from a snapshot, in place (the steps hold references to it)."""
        raise NotImplementedError(f"backend {self.name!r} cannot assign state {state.name!r}")

    def state_view(self, program: Program) -> dict[str, Any]:
        """What a synchronous save writes: ``state_dict``'s values, possibly sharing live memory.

        Optional (not in ``Backend``). Valid until the next step runs; a
        synchronous save writes it before training goes on, so it needs no
        copy of a large model. The default is ``state_dict`` (a copy).
        """
        return self.state_dict(program)

    def state_dict(self, program: Program) -> dict[str, Any]:
        """A snapshot of every piece of state, by name: what a checkpoint holds."""
        return {name: self.snapshot(s.value) for name, s in program.states.items()}

    # Optional: ``check_assign(state, value)`` raises, changing nothing, if ``assign(state,
    # value)`` would reject ``value`` (a wrong shape or dtype). A backend that has it promises
    # that ``load_state_dict`` checks every value before it assigns the first, so a restore
    # that fails leaves the state as it was; ``Saver.restore`` then keeps no rollback copy of
    # the live state. None: values are checked as they are assigned, and a restore copies the
    # live state first, to put it back if one is rejected.
    check_assign: Callable[[State, Any], None] | None = None

    def load_state_dict(self, program: Program, values: Mapping[str, Any]) -> None:
        """Set every piece of state from ``values``; the keys must match exactly.

        A missing or unexpected key raises ``KeyError`` before anything is
        set; so does a value ``check_assign`` (where the backend has it)
        rejects, since every value is checked before the first is assigned.
        """
        missing = sorted(set(program.states) - set(values))
        unexpected = sorted(set(values) - set(program.states))
        if missing or unexpected:
            raise KeyError(
                f"state of {program.name!r} does not match: missing {missing}, unexpected {unexpected}"
            )
        check = self.check_assign
        if check is not None:
            for name, state in program.states.items():
                check(state, values[name])
        for name, state in program.states.items():
            self.assign(state, values[name])

    def translate_error(self, error: BaseException) -> BaseException | None:
        """The looprt error a framework error means, or None to raise it as it is."""
        return None

    def default_saver(self, program: Program, *, storage_options: Mapping[str, Any] | None = None) -> Any:
        """The saver a ``Scaffold`` without one uses: a ``looprt.checkpoint.Saver``.

        ``storage_options``: for checkpoints at URLs (see ``looprt.checkpoint.storage``).
        """
        from looprt.checkpoint import Saver

        return Saver(program, storage_options=storage_options)

    def save_payload(self, state: Mapping[str, Any], directory: str) -> list[str]:
        """Write ``state`` (from ``state_dict``) as files in ``directory``; return their names.

        ``directory`` is a fresh temporary folder; the checkpoint manager
        fsyncs, checksums and renames what is written here.
        """
        raise NotImplementedError(f"backend {self.name!r} cannot write checkpoints")

    def load_payload(self, directory: str) -> dict[str, Any]:
        """Read back what ``save_payload`` wrote in ``directory``."""
        raise NotImplementedError(f"backend {self.name!r} cannot read checkpoints")

    def session_manager(self, scaffold: Scaffold) -> Any:
        """What prepares (chief) or waits for (worker) a session of the scaffold's program."""
        from looprt.session.manager import SessionManager

        return SessionManager(
            scaffold.program,
            local_init_op=scaffold.local_init_op,
            ready_op=scaffold.ready_op,
            ready_for_local_init_op=scaffold.ready_for_local_init_op,
            local_init_feed_dict=scaffold.local_init_feed_dict,
        )

    def mark_ready(self, program: Program) -> None:
        """Tell waiting workers that the chief has initialized the state."""
        program.ready.set()

    def wait_until_ready(self, program: Program, timeout: float | None) -> None:
        """Wait for the chief; ``DeadlineExceededError`` after ``timeout`` seconds."""
        if not program.ready.wait(timeout):
            raise DeadlineExceededError(
                f"Session was not ready after waiting {timeout:g} secs: no chief initialized "
                f"program {program.name!r}. Start a chief (ChiefSessionCreator) or raise max_wait_secs."
            )


def _int64_scalar_view(counter: Any) -> memoryview | None:
    """A writable memoryview of ``counter`` if it is a 0-d native int64 NumPy array, else None."""
    import numpy as np

    if type(counter) is not np.ndarray or counter.shape != () or counter.dtype != np.int64:
        return None
    view = counter.data
    # Only a native, writable int64 buffer ("l" or "q"; "<q" etc. name other byte orders).
    if view.readonly or view.format not in ("l", "q") or view.itemsize != 8:
        return None
    return view
