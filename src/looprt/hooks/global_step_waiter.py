"""``GlobalStepWaiterHook``: hold a worker's first run until the global step reaches a value.

Mirrors ``tf.compat.v1.train.GlobalStepWaiterHook``: before the first run the
hook reads the global step (with the raw session, every ``sleep(0.5)``) until
it is at least ``wait_until_step``, then lets every later run through at once.
It logs ``"Waiting for global step %d before starting training."`` when it
starts waiting, and the current step whenever that advanced by more than
1000 since the last such log. A ``wait_until_step`` of 0 or less never waits.
Like TF's, it waits without a time limit.

``sleep`` (keyword-only; ``time.sleep`` by default) is called between
reads, so tests (or a caller that wants to watch a coordinator) can replace it.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable
from typing import Any

from looprt.hooks.session_run_hook import SessionRunArgs, SessionRunContext, SessionRunHook
from looprt.training_util import get_global_step

__all__ = ["GlobalStepWaiterHook"]

logger = logging.getLogger(__name__)

POLL_SECS = 0.5
LOG_EVERY_STEPS = 1000


class GlobalStepWaiterHook(SessionRunHook):
    """Blocks the first run until the global step is at least ``wait_until_step``."""

    #: Where the hook logs: this module's logger; the TF drop-in's hooks log on TF's "tensorflow".
    logger: logging.Logger = logger

    def __init__(self, wait_until_step: int, *, sleep: Callable[[float], Any] = time.sleep) -> None:
        step: Any = wait_until_step
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"wait_until_step must be an int, got {type(wait_until_step).__name__}")
        self._wait_until_step = wait_until_step
        self._sleep = sleep
        self._worker_is_started = False
        self._global_step: Any = None

    def begin(self) -> None:
        self._worker_is_started = False

    def after_create_session(self, session: Any, coord: Any) -> None:
        try:
            self._global_step = get_global_step(session.graph)
        except RuntimeError as error:
            raise RuntimeError("Global step should be created to use _GlobalStepWaiterHook.") from error

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        if self._worker_is_started:
            return None
        if self._wait_until_step <= 0:
            self._worker_is_started = True
            return None
        self.logger.info("Waiting for global step %d before starting training.", self._wait_until_step)
        last_logged_step = 0
        while True:
            current_step = run_context.session.run(self._global_step)
            if current_step >= self._wait_until_step:
                self._worker_is_started = True
                return None
            if current_step - last_logged_step > LOG_EVERY_STEPS:
                self.logger.info(
                    "Waiting for global step %d before starting training. Current step is %d.",
                    self._wait_until_step,
                    current_step,
                )
                last_logged_step = current_step
            self._sleep(POLL_SECS)
