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
import time
from collections.abc import Callable
from typing import Any

from looprt.step_context import StepContext
from looprt.wrapped_session import WrappedSession

__all__ = ["RecoverableSession"]

logger = logging.getLogger("looprt")


class RecoverableSession(WrappedSession):
    """Re-creates its session through ``sess_creator`` on a recoverable error.

    ``max_recoveries`` (None: no bound, as TF) is how many recoveries in a row
    may happen without a successful run in between; past it, the last error is
    raised. ``backoff_secs`` is the first wait between attempts, doubled each
    time up to ``max_backoff_secs``; ``sleep`` is injectable for tests.
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
        self._sess_creator = sess_creator
        self._recoverable_errors = recoverable_errors
        self.close_errors = recoverable_errors
        self._max_recoveries = max_recoveries
        self._backoff_secs = backoff_secs
        self._max_backoff_secs = max_backoff_secs
        self._sleep = sleep
        self._failures = 0
        super().__init__(self._create_session())

    def _recovering(self, error: BaseException, where: str) -> None:
        """Count a recovery; raise ``error`` once the bound is passed, else back off."""
        self._failures += 1
        if self._max_recoveries is not None and self._failures > self._max_recoveries:
            logger.error(
                "Giving up after %d consecutive recoveries; last error %s: %s",
                self._max_recoveries, type(error).__name__, error,
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
                self._recovering(e, "while creating the session")

    def check_stop(self) -> bool:
        try:
            if self._sess is not None:
                return bool(self._sess.check_stop())
            return True
        except self._recoverable_errors as e:
            self._recovering(e, "while checking whether to stop")
            self.close()
            self._sess = self._create_session()
            return False
        except Exception:  # noqa: BLE001 - TF's contract: any other error means stop
            return True

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
                self._recovering(e, "during a run")
                self.close()
                self._sess = None
            else:
                if self._failures:
                    self._failures = 0
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
                self._recovering(e, "during a step function")
                self.close()
                self._sess = None
            else:
                self._failures = 0
                return result
