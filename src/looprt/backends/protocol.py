"""The backend protocols: what a framework adapter and its sessions provide.

Protocols only; this module imports no framework and no other looprt module
at run time. A backend turns a ``Program`` into a session and knows its
framework's values: how to copy state, bring values to the host, restore
state, count the global step, and which of its errors mean a peer was lost.
``looprt.program.ProgramBackend`` gives every part a default that suits
in-process eager frameworks. Third parties register theirs with
``looprt.backends.register_backend`` or through the ``looprt.backends`` entry
point group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from looprt.program.handles import State
    from looprt.program.program import Program
    from looprt.session.scaffold import Scaffold

__all__ = ["Backend", "CountingSession", "EndableSession", "EpochSession", "Session"]


@runtime_checkable
class Session(Protocol):
    """What ``MonitoredSession`` needs of the session a creator returns."""

    def run(
        self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None
    ) -> Any: ...

    def close(self) -> None: ...

    @property
    def graph(self) -> Any: ...


@runtime_checkable
class CountingSession(Session, Protocol):
    """A session that reads its global step on the host without a run (optional).

    ``HookedSession`` calls ``global_step_value()`` once before each run and
    hands the number to hooks on ``run_context.global_step``, so periodic
    hooks decide without fetching; None means "fetch it" (the value needs a
    device or a graph run).
    """

    def global_step_value(self) -> int | None: ...


@runtime_checkable
class EndableSession(Session, Protocol):
    """A session told when training has ended, before the hooks' ``end`` (optional).

    After ``end_training()`` a run that would advance the global step
    raises ``TrainingEndedError`` instead of training past the end.
    """

    def end_training(self) -> None: ...


@runtime_checkable
class EpochSession(Session, Protocol):
    """A session that reports the epochs its runs ended (optional; the torch backend's does).

    ``HookedSession`` calls ``epoch_ends()`` after each run, when a hook
    defines ``after_epoch``, and calls ``after_epoch(run_context, end)`` for
    each ``looprt.hooks.EpochEnd`` it returns (empty: no epoch ended).
    """

    def epoch_ends(self) -> list[Any]: ...


class Backend(Protocol):
    """A framework adapter."""

    name: str

    def create_session(self, program: Program, target: str = "", config: Any = None) -> Session: ...
    def new_global_step(self) -> Any: ...
    def increment(self, counter: Any) -> None: ...
    def snapshot(self, value: Any) -> Any: ...
    def updatable_in_place(self, value: Any) -> bool: ...
    def to_host(self, value: Any) -> Any: ...
    def from_feed(self, value: Any) -> Any: ...
    def assign(self, state: State, value: Any) -> None: ...
    def state_dict(self, program: Program) -> dict[str, Any]: ...
    def load_state_dict(self, program: Program, values: Mapping[str, Any]) -> None: ...
    def translate_error(self, error: BaseException) -> BaseException | None: ...
    def mark_ready(self, program: Program) -> None: ...
    def wait_until_ready(self, program: Program, timeout: float | None) -> None: ...
    def default_saver(self, program: Program, *, storage_options: Mapping[str, Any] | None = None) -> Any: ...
    def save_payload(self, state: Mapping[str, Any], directory: str) -> list[str]: ...
    def load_payload(self, directory: str) -> dict[str, Any]: ...
    def session_manager(self, scaffold: Scaffold) -> Any: ...
