"""The backend protocol: what a framework adapter provides. Imports no framework.

A backend turns a ``Program`` into a session and knows its framework's values:
how to copy state, bring values to the host, restore state, count the global
step, and which of its errors mean a peer was lost. ``ProgramBackend`` gives
every part a default that suits in-process eager frameworks; an adapter
overrides what differs. Third parties register theirs with
``looprt.backends.register_backend`` or through the ``looprt.backends`` entry
point group.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from looprt.errors import DeadlineExceededError

if TYPE_CHECKING:
    from looprt.program import Program, State
    from looprt.scaffold import Scaffold

__all__ = ["Backend", "ProgramBackend", "Session"]


@runtime_checkable
class Session(Protocol):
    """What ``MonitoredSession`` needs of the session a creator returns."""

    def run(
        self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None
    ) -> Any: ...

    def close(self) -> None: ...

    @property
    def graph(self) -> Any: ...


class Backend(Protocol):
    """A framework adapter."""

    name: str

    def create_session(self, program: Program, target: str = "", config: Any = None) -> Session: ...
    def new_global_step(self) -> Any: ...
    def increment(self, counter: Any) -> None: ...
    def snapshot(self, value: Any) -> Any: ...
    def to_host(self, value: Any) -> Any: ...
    def from_feed(self, value: Any) -> Any: ...
    def assign(self, state: State, value: Any) -> None: ...
    def state_dict(self, program: Program) -> dict[str, Any]: ...
    def load_state_dict(self, program: Program, values: Mapping[str, Any]) -> None: ...
    def translate_error(self, error: BaseException) -> BaseException | None: ...
    def mark_ready(self, program: Program) -> None: ...
    def wait_until_ready(self, program: Program, timeout: float | None) -> None: ...
    def default_saver(self, program: Program) -> Any: ...
    def save_payload(self, state: Mapping[str, Any], directory: str) -> list[str]: ...
    def load_payload(self, directory: str) -> dict[str, Any]: ...
    def session_manager(self, scaffold: Scaffold) -> Any: ...


class ProgramBackend:
    """Defaults for an in-process eager backend; subclass and override."""

    name = "base"

    def create_session(self, program: Program, target: str = "", config: Any = None) -> Session:
        from looprt.program_session import ProgramSession

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

    def to_host(self, value: Any) -> Any:
        """A fetched value as the caller gets it."""
        return value

    def from_feed(self, value: Any) -> Any:
        """A fed value as the step gets it."""
        return value

    def assign(self, state: State, value: Any) -> None:
        """Set live state from a snapshot, in place (the steps hold references to it)."""
        raise NotImplementedError(f"backend {self.name!r} cannot assign state {state.name!r}")

    def state_dict(self, program: Program) -> dict[str, Any]:
        """A snapshot of every piece of state, by name: what a checkpoint holds."""
        return {name: self.snapshot(s.value) for name, s in program.states.items()}

    def load_state_dict(self, program: Program, values: Mapping[str, Any]) -> None:
        """Set every piece of state from ``values``; the keys must match exactly."""
        missing = sorted(set(program.states) - set(values))
        unexpected = sorted(set(values) - set(program.states))
        if missing or unexpected:
            raise KeyError(
                f"state of {program.name!r} does not match: missing {missing}, unexpected {unexpected}"
            )
        for name, state in program.states.items():
            self.assign(state, values[name])

    def translate_error(self, error: BaseException) -> BaseException | None:
        """The looprt error a framework error means, or None to raise it as it is."""
        return None

    def default_saver(self, program: Program) -> Any:
        """The saver a ``Scaffold`` without one uses: a ``looprt.checkpoint.Saver``."""
        from looprt.checkpoint import Saver

        return Saver(program)

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
        from looprt.session_manager import SessionManager

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
