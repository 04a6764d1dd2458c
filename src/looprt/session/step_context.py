"""``StepContext``: what ``MonitoredSession.run_step_fn`` hands a step function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["StepContext"]


class StepContext:
    """The raw session, a hooked ``run``, and a way to stop, for one ``step_fn`` call.

    ``session`` runs without hooks; ``run_with_hooks`` runs as
    ``MonitoredSession.run`` does; ``request_stop()`` ends the step function
    and the loop (it raises ``StopIteration``, which a ``with`` block treats as
    a clean end).
    """

    __slots__ = ("_session", "_run_with_hooks_fn")

    def __init__(self, session: Any, run_with_hooks_fn: Callable[..., Any]) -> None:
        self._session = session
        self._run_with_hooks_fn = run_with_hooks_fn

    @property
    def session(self) -> Any:
        """The raw session; running it calls no hook."""
        return self._session

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any:
        """Run as ``MonitoredSession.run`` does, calling every hook."""
        return self._run_with_hooks_fn(*args, **kwargs)

    def request_stop(self) -> NoReturn:
        """Stop the loop: leaves the step function by raising ``StopIteration``."""
        raise StopIteration("step_fn has requested the iterations to stop.")
