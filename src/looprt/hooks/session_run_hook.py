"""The hook contract: what a hook is told, and what it may ask for.

A hook sees one training loop through five calls, in this order::

    begin()                                 once, before the session exists
    after_create_session(session, coord)    after each (re)creation of the session
    before_run(run_context) -> SessionRunArgs | None    before every run
    after_run(run_context, run_values)      after every run that succeeded
    end(session)                            once, on a clean close

``before_run`` may return ``SessionRunArgs`` to add fetches, feeds and run
options to the caller's run; the results come back to that hook alone in
``run_values.results``. ``run_context.request_stop()`` makes the session's
``should_stop()`` true after this run. ``run_context.global_step`` is the
global step before the run, read on the host by sessions that can
(``looprt.backends.CountingSession``), else None: a hook then fetches it.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class SessionRunHook:
    """Base class for hooks; every method is optional and does nothing here.

    Methods a subclass does not override are never called by the session.
    """

    def begin(self) -> None:
        """Called once before the session is created; the program may still grow."""

    def after_create_session(self, session: Any, coord: Any) -> None:
        """Called after the session is created (and after every recovery)."""

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        """Called before each run; return ``SessionRunArgs`` to add to it."""
        return None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        """Called after each successful run with this hook's results."""

    def end(self, session: Any) -> None:
        """Called once when the session closes without an error propagating."""


class SessionRunArgs(NamedTuple):
    """What a hook adds to a run: fetches, feeds and run options."""

    fetches: Any
    feed_dict: Any = None
    options: Any = None


class SessionRunValues(NamedTuple):
    """What a hook gets back: its own ``results`` (None if it fetched nothing)."""

    results: Any
    options: Any
    run_metadata: Any


class SessionRunContext:
    """The run being made: the caller's arguments, the raw session, stop requests.

    ``session`` is the raw backend session: running it calls no hooks.
    ``global_step`` (a looprt extension; TF's context has no such field) is
    the global step before this run, known without a fetch where the session
    counts it on the host (a program's session), else None: fetch it then.
    A hook that may also run under TF's own sessions reads it in a ``try``
    that takes ``AttributeError`` as None (the standard hooks do; cheaper
    than ``getattr`` with a default right after a real training step).
    """

    # ``global_step`` is a plain slot, not a property: hooks read it on every run.
    __slots__ = ("_original_args", "_session", "_stop_requested", "global_step")

    def __init__(self, original_args: SessionRunArgs, session: Any, global_step: int | None = None) -> None:
        self._original_args = original_args
        self._session = session
        self._stop_requested = False
        self.global_step = global_step

    @property
    def original_args(self) -> SessionRunArgs:
        """The caller's fetches and feeds, as passed to ``run``."""
        return self._original_args

    @property
    def session(self) -> Any:
        """The raw session; running it does not call any hook."""
        return self._session

    @property
    def stop_requested(self) -> bool:
        """Whether a hook asked to stop during this run."""
        return self._stop_requested

    def request_stop(self) -> None:
        """Ask the loop to stop: ``should_stop()`` is true once this run ends."""
        self._stop_requested = True

