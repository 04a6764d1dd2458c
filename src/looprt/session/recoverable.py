"""``RecoverableSession``: re-creates the session when a peer was lost.

On a recoverable error (``AbortedError`` / ``UnavailableError`` by default)
from creating the session, from a run or from checking whether to stop, the
session is closed, a new one is made through the creator (which restores the
latest checkpoint and calls every hook's ``after_create_session`` again) and
the run is retried from ``before_run``. Like TF, it retries without bound by
default; ``max_recoveries`` bounds the consecutive attempts, with exponential
backoff between them, so that a permanent fault ends in a clear error.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable
from typing import Any

from looprt.session.step_context import StepContext
from looprt.session.wrapped import WrappedSession
from looprt.structure import flatten

__all__ = ["RecoverableSession"]

logger = logging.getLogger(__name__)

_CREATION = "creation"
_STOP_CHECK = "should_stop"


class _Call:
    """A run's fetches (or a step function), compared by structure and leaf identity.

    Leaves are compared with ``is`` (names by value), never with ``==``, which
    frameworks overload on tensors.
    """

    __slots__ = ("shape", "leaves")

    def __init__(self, fetches: Any) -> None:
        try:
            self.shape, self.leaves = flatten(fetches)
        except Exception:  # noqa: BLE001 - an odd structure just never matches
            self.shape, self.leaves = object(), []

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Call):
            return False
        return (
            self.shape == other.shape
            and len(self.leaves) == len(other.leaves)
            and all(a is b or (type(a) is str and a == b) for a, b in zip(self.leaves, other.leaves))  # noqa: B905 - equal lengths by construction
        )

    __hash__ = None  # type: ignore[assignment]


class RecoverableSession(WrappedSession):
    """Re-creates its session through ``sess_creator`` on a recoverable error.

    ``max_recoveries`` (None: no bound, as TF) is how many recoveries in a row
    may happen; past it, the last error is raised, with a note saying so. The
    row ends when training gets past the fault: for a program, when a run
    succeeds with the global step beyond where it was at the first fault of
    the row (a recovery restores a checkpoint, so runs before that point
    prove nothing); for other graphs, when what failed last succeeds (a run
    of the same fetches or step function, a ``should_stop`` check, or after
    failed creations any run). ``backoff_secs`` is the first wait between
    attempts, doubled each time up to ``max_backoff_secs``; ``sleep`` is
    injectable for tests.
    """

    def __init__(
        self,
        sess_creator: Any,
        recoverable_errors: tuple[type[BaseException], ...],
        *,
        max_recoveries: int | None = None,
        backoff_secs: float = 0.0,
        max_backoff_secs: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_recoveries is not None and (
            isinstance(max_recoveries, bool)
            or not isinstance(max_recoveries, numbers.Integral)
            or max_recoveries < 0
        ):
            raise ValueError(f"max_recoveries must be None (no bound) or an int >= 0, got {max_recoveries!r}")
        for name, value in (("recovery_backoff_secs", backoff_secs), ("max_backoff_secs", max_backoff_secs)):
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not real or not 0 <= float(value) < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        self._sess_creator = sess_creator
        self._recoverable_errors = recoverable_errors
        self.close_errors = recoverable_errors
        self._max_recoveries = max_recoveries
        self._backoff_secs = backoff_secs
        self._max_backoff_secs = max_backoff_secs
        self._sleep = sleep
        self._failures = 0  # recoveries in a row
        self._failed: Any = None  # what failed last in this row: _CREATION, _STOP_CHECK or a _Call
        self._fault_step: int | None = None  # the global step at the row's first fault, if known
        super().__init__(self._create_session())

    def _global_step(self) -> int | None:
        """The live global step of a program's session; None for other graphs or none."""
        try:
            return int(getattr(self, "_sess", None).graph.global_step.value)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - no program, no session, or not a number: unknown
            return None

    def _succeeded(self, what: Any) -> None:
        """End the row of recoveries if training got past the fault (only called within a row)."""
        if self._fault_step is not None:
            step = self._global_step()
            if step is None or step <= self._fault_step:
                return
        elif not (what == self._failed or (self._failed is _CREATION and isinstance(what, _Call))):
            return
        self._failures = 0
        self._failed = self._fault_step = None

    def _recovering(self, error: BaseException, where: str, what: Any) -> None:
        """Count a recovery; raise ``error`` once the bound is passed, else back off."""
        if not self._failures:
            self._fault_step = self._global_step()
        self._failures += 1
        if what is not _CREATION or self._failed is None:  # a failed re-creation continues the row
            self._failed = what
        if self._max_recoveries is not None and self._failures > self._max_recoveries:
            logger.error(
                "Giving up after %d consecutive recoveries; last error %s: %s",
                self._max_recoveries, type(error).__name__, error,
            )
            if hasattr(error, "add_note"):
                error.add_note(
                    f"looprt gave up after {self._max_recoveries} consecutive recoveries "
                    f"(max_recoveries={self._max_recoveries}) {where}"
                )
            raise error
        logger.info(
            "A recoverable error was raised %s; a new session will be created. "
            "This may be due to a preemption of a peer. Error: %s", where, error,
        )
        if self._backoff_secs > 0:
            delay = min(self._backoff_secs * 2 ** (self._failures - 1), self._max_backoff_secs)
            self._sleep(delay)

    def _create_session(self) -> Any:
        while True:
            try:
                return self._sess_creator.create_session()
            except self._recoverable_errors as e:
                self._recovering(e, "while creating the session", _CREATION)

    def check_stop(self) -> bool:
        try:
            if self._sess is not None:
                return bool(self._sess.check_stop())
            return True
        except self._recoverable_errors as e:
            self._recover(e)
            return False
        except Exception:  # noqa: BLE001 - TF's contract: any other error means stop
            return True

    def should_stop(self) -> bool:
        if self.check_stop():
            return True
        if self._sess is None:
            return True
        try:
            stop = bool(self._sess.should_stop())
        except self._recoverable_errors as e:
            # The layers below check again; a session just re-created may fail there at once
            # (TF lets that error escape): recover the same way.
            self._recover(e)
            return False
        if self._failures:
            self._succeeded(_STOP_CHECK)
        return stop

    def _recover(self, error: BaseException) -> None:
        self._recovering(error, "while checking whether to stop", _STOP_CHECK)
        self.close()
        self._sess = self._create_session()

    def run(
        self,
        fetches: Any,
        feed_dict: Any = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        while True:
            try:
                if self._sess is None:
                    self._sess = self._create_session()
                result = self._sess.run(fetches, feed_dict, options, run_metadata)
            except self._recoverable_errors as e:
                self._recovering(e, "during a run", _Call(fetches))
                self.close()
                self._sess = None
            else:
                if self._failures:
                    self._succeeded(_Call(fetches))
                return result

    def run_step_fn(
        self,
        step_fn: Callable[[StepContext], Any],
        raw_session: Any,
        run_with_hooks: Callable[..., Any] | None,
    ) -> Any:
        while True:
            try:
                if self._sess is None:
                    self._sess = self._create_session()
                result = self._sess.run_step_fn(step_fn, raw_session, self._sess.run)
            except self._recoverable_errors as e:
                self._recovering(e, "during a step function", _Call(step_fn))
                self.close()
                self._sess = None
            else:
                if self._failures:
                    self._succeeded(_Call(step_fn))
                return result
