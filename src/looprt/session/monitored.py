"""``MonitoredSession`` and ``SingularMonitoredSession``: a training loop with hooks.

The lifecycle, as TF's ``tf.compat.v1.train.MonitoredSession`` defines it::

    for hook in hooks: hook.begin()
    raw = session_creator.create_session()     # scaffold.finalize(); init or restore
    coord = Coordinator()
    for hook in hooks: hook.after_create_session(raw, coord)

    sess.run(fetches, feed_dict):              # until should_stop()
        raise if a stop was already requested
        context = SessionRunContext(SessionRunArgs(fetches, feed_dict), raw)
        requests = [hook.before_run(context) for hook in hooks]
        results = raw.run(caller's + hooks' fetches and feeds, merged)
        for hook in hooks: hook.after_run(context, SessionRunValues(its results, ...))
        on AbortedError / UnavailableError (MonitoredSession only):
            close raw, create a new one (after_create_session again), retry the run

    close() / leaving the with block:
        if no error is propagating (OutOfRangeError and StopIteration count as none):
            raw.end_training()                 # looprt: a fetch in end() may not train on
            for hook in hooks: hook.end(raw)
        coord.request_stop(); coord.join(grace period); raw.close()

Layers, top to bottom: ``RecoverableSession`` (recovery; not in the singular
session) > ``CoordinatedSession`` (threads) > ``HookedSession`` (hooks) > the
raw session made by the creator.
"""

from __future__ import annotations

import inspect
import logging
import numbers
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from looprt.coordinator import Coordinator
from looprt.errors import (
    AbortedError,
    ClosedSessionError,
    OutOfRangeError,
    StepFnSignatureError,
    UnavailableError,
)
from looprt.hooks.dispatch import calls
from looprt.session.coordinated import CoordinatedSession
from looprt.session.creator import ChiefSessionCreator, SessionCreator
from looprt.session.hooked import HookedSession
from looprt.session.recoverable import RecoverableSession
from looprt.session.scaffold import Scaffold
from looprt.session.step_context import StepContext

_HOOK_METHODS = ("begin", "after_create_session", "before_run", "after_run", "end")

__all__ = ["MonitoredSession", "SingularMonitoredSession"]

logger = logging.getLogger(__name__)


class _CoordinatedSessionCreator(SessionCreator):
    """Creates the raw session, its coordinator, and the hooked, coordinated layers."""

    def __init__(
        self,
        session_creator: Any,
        hooks: list[Any],
        stop_grace_period_secs: float,
        recoverable_errors: tuple[type[BaseException], ...],
        hooked_session_options: dict[str, Any],
        start_threads: Callable[[Any, Coordinator], None] | None,
    ) -> None:
        self._session_creator = session_creator
        self._hooks = hooks
        self._after_create = calls(hooks, "after_create_session")
        self._stop_grace_period_secs = stop_grace_period_secs
        self._recoverable_errors = recoverable_errors
        self._hooked_session_options = hooked_session_options
        self._start_threads = start_threads
        self.coord: Coordinator | None = None
        self.raw_session: Any = None
        self.hooked: HookedSession | None = None
        self.start_step: int | None = None  # the host global step when the session was created

    def global_step(self) -> int | None:
        """The raw session's global step read on the host, or None where that takes a run."""
        read = getattr(self.raw_session, "global_step_value", None)
        step = read() if read is not None else None
        return None if step is None else int(step)

    def create_session(self) -> CoordinatedSession:
        self.raw_session = self._session_creator.create_session()
        self.start_step = self.global_step()
        self.coord = Coordinator(clean_stop_exception_types=[])
        if self._start_threads is not None:
            self._start_threads(self.raw_session, self.coord)
        for _, after_create_session in self._after_create:
            after_create_session(self.raw_session, self.coord)
        hooked = self.hooked = HookedSession(self.raw_session, self._hooks, **self._hooked_session_options)
        return CoordinatedSession(
            hooked, self.coord, self._stop_grace_period_secs, self._recoverable_errors
        )


def _step_fn_arguments(step_fn: Callable[..., Any]) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(step_fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


class _MonitoredSessionBase:
    """What ``MonitoredSession`` and ``SingularMonitoredSession`` share."""

    StepContext = StepContext

    # Errors that re-create the session, and errors that end a with block cleanly;
    # backends whose frameworks raise their own (TF) extend these in a subclass.
    recoverable_errors: tuple[type[BaseException], ...] = (AbortedError, UnavailableError)
    clean_end_errors: tuple[type[BaseException], ...] = (OutOfRangeError, StopIteration)
    hooked_session_options: dict[str, Any] = {}  # noqa: RUF012 - a class-level default, never mutated

    def __init__(
        self,
        session_creator: Any,
        hooks: Iterable[Any] | None,
        should_recover: bool,
        stop_grace_period_secs: float = 120,
        recovery: dict[str, Any] | None = None,
    ) -> None:
        if session_creator is not None and not callable(getattr(session_creator, "create_session", None)):
            raise TypeError(
                f"session_creator must be a SessionCreator (with create_session()), "
                f"got {type(session_creator).__name__}"
            )
        if isinstance(stop_grace_period_secs, numbers.Real) and not stop_grace_period_secs >= 0:
            raise ValueError(f"stop_grace_period_secs must be >= 0, got {stop_grace_period_secs}")
        self._hooks = list(hooks or [])
        for hook in self._hooks:
            if not any(callable(getattr(hook, name, None)) for name in _HOOK_METHODS):
                raise TypeError(f"each hook must be a SessionRunHook, got {type(hook).__name__}")
        self._end = calls(self._hooks, "end")
        for _, begin in calls(self._hooks, "begin"):
            begin()
        self._coordinated_creator = _CoordinatedSessionCreator(
            session_creator if session_creator is not None else ChiefSessionCreator(),
            self._hooks,
            stop_grace_period_secs,
            self.recoverable_errors,
            self.hooked_session_options,
            self.start_threads,
        )
        self._sess: Any
        if should_recover:
            self._sess = RecoverableSession(
                self._coordinated_creator, self.recoverable_errors, **(recovery or {})
            )
        else:
            self._sess = self._coordinated_creator.create_session()
        if type(self).run is _MonitoredSessionBase.run:
            # The hot path: calls go straight to the top layer, one Python frame fewer
            # per step. close() removes the shortcut, so run() then raises as documented.
            vars(self)["run"] = self._sess.run

    def start_threads(self, raw_session: Any, coord: Coordinator) -> None:
        """Start the backend's background threads; none by default.

        A seam for a backend's subclass: called after each (re)creation of the
        raw session, before the hooks' ``after_create_session``, with the
        session's coordinator (the TF drop-in starts TF's queue runners here).
        """

    @property
    def graph(self) -> Any:
        """The raw session's graph (for programs: the ``Program``), None once closed."""
        raw = self._coordinated_creator.raw_session
        return None if raw is None else raw.graph

    def run(
        self,
        fetches: Any,
        feed_dict: Any = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        """Run ``fetches`` with every hook; returns exactly the structure asked for.

        Raises ``StopRequestedError`` after a stop was requested and
        ``ClosedSessionError`` after ``close()``.
        """
        sess = self._sess
        if sess is None:
            raise ClosedSessionError("Attempted to use a closed MonitoredSession.")
        return sess.run(fetches, feed_dict, options, run_metadata)

    def run_step_fn(self, step_fn: Callable[[Any], Any]) -> Any:
        """Call ``step_fn(step_context)`` with recovery; returns what it returns.

        ``step_context.session`` is the raw session, ``run_with_hooks`` runs
        with hooks, and ``request_stop()`` ends the loop.
        """
        arguments = _step_fn_arguments(step_fn)
        if arguments not in (("step_context",), ("self", "step_context")):
            raise StepFnSignatureError(
                "`step_fn` may either have one `step_context` argument, or `self` and "
                f"`step_context` arguments if it's an instance method. Got {arguments} instead."
            )
        if self._sess is None:
            raise ClosedSessionError("Attempted to use a closed MonitoredSession.")
        return self._sess.run_step_fn(step_fn, self._coordinated_creator.raw_session, None)

    def should_stop(self) -> bool:
        """Whether the loop should end: a hook or a thread asked, or the session is closed."""
        return self._sess is None or bool(self._sess.should_stop())

    def close(self) -> None:
        """Call every hook's ``end``, stop the threads and close the raw session."""
        self.close_session()

    def __enter__(self) -> _MonitoredSessionBase:
        return self

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        # Exactly these types, as TF compares them: a subclass is an error like any other.
        if exception_type in self.clean_end_errors:
            self._log_end_of_input(exception_value)
            exception_type = None
        self.close_session(exception_type)
        return exception_type is None

    def _log_end_of_input(self, error: BaseException | None) -> None:
        """Say that the input ran out, at which step; a WARNING when no step ran in this session."""
        creator = self._coordinated_creator
        step = creator.global_step() if creator.raw_session is not None else None
        where = "" if step is None else f" at global step {step}"
        what = f" ({error})" if error is not None and str(error) else ""
        if step is not None and step == creator.start_step:
            logger.warning(
                "The input ran out%s before this session ran any step%s. An iterable input is "
                "pulled through once, and a resumed run continues where it stood; to train for "
                "several epochs, iterate the loader several times (looprt.backends.torch.Epochs).",
                where,
                what,
            )
        else:
            start = creator.start_step
            ran = "" if step is None or start is None else f" after {step - start} steps"
            logger.info("The input ran out%s%s; the session ends%s.", where, what, ran)

    def close_session(self, exception_type: type[BaseException] | None = None) -> None:
        """What ``close`` and ``__exit__`` do: the hooks' ``end`` unless ``exception_type``, then close.

        The seam a backend's subclass extends (the TF drop-in unfinalizes its
        graph after it); call ``super().close_session(exception_type)``.
        """
        try:
            if not exception_type:
                raw = self._coordinated_creator.raw_session
                end_training = getattr(raw, "end_training", None)
                if end_training is not None and self._end:
                    end_training()
                for _, end in self._end:
                    end(raw)
        finally:
            try:
                if self._sess is None:
                    raise ClosedSessionError("Session is already closed.")
                self._sess.close()
            finally:
                vars(self).pop("run", None)
                self._sess = None
                self._coordinated_creator.raw_session = None
                self._coordinated_creator.coord = None
                self._coordinated_creator.hooked = None


class MonitoredSession(_MonitoredSessionBase):
    """A session that handles initialization, recovery and hooks.

    ``session_creator`` defaults to ``ChiefSessionCreator()``. On
    ``AbortedError`` or ``UnavailableError`` the session is re-created and the
    run retried, without bound as in TF; ``max_recoveries`` (an extension)
    bounds consecutive recoveries, waiting ``recovery_backoff_secs`` (doubled
    each time) between them.
    """

    def __init__(
        self,
        session_creator: Any = None,
        hooks: Iterable[Any] | None = None,
        stop_grace_period_secs: float = 120,
        *,
        max_recoveries: int | None = None,
        recovery_backoff_secs: float = 0.0,
    ) -> None:
        super().__init__(
            session_creator,
            hooks,
            should_recover=True,
            stop_grace_period_secs=stop_grace_period_secs,
            recovery={"max_recoveries": max_recoveries, "backoff_secs": recovery_backoff_secs},
        )


class SingularMonitoredSession(_MonitoredSessionBase):
    """A chief session with hooks and no recovery, whose raw session is reachable.

    Use ``raw_session()`` to run without hooks, or to save and restore.
    """

    def __init__(
        self,
        hooks: Iterable[Any] | None = None,
        scaffold: Scaffold | None = None,
        master: str = "",
        config: Any = None,
        checkpoint_dir: str | None = None,
        stop_grace_period_secs: float = 120,
        checkpoint_filename_with_path: str | None = None,
    ) -> None:
        creator = ChiefSessionCreator(
            scaffold=scaffold,
            master=master,
            config=config,
            checkpoint_dir=checkpoint_dir,
            checkpoint_filename_with_path=checkpoint_filename_with_path,
        )
        super().__init__(creator, hooks, should_recover=False, stop_grace_period_secs=stop_grace_period_secs)

    def raw_session(self) -> Any:
        """The raw session: running it calls no hook."""
        return self._coordinated_creator.raw_session
