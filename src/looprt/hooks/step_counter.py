"""``StepCounterHook``: logs and records global steps per second, like TF's.

Every ``every_n_steps`` global steps (or ``every_n_secs`` seconds; exactly
one), the rate since the previous trigger is logged on the "looprt.hooks.step_counter" logger as
``"global_step/sec: %g"`` and written as the scalar ``global_step/sec`` to
``summary_writer`` (or the cached writer of ``output_dir``). Nothing is
written at the first trigger, which only starts the clock. The global step is
looked up in ``after_create_session``; ``clock`` is injectable for tests.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable
from typing import Any

from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.summary import SummaryWriterCache
from looprt.timer import SecondOrStepTimer
from looprt.training_util import get_global_step, global_step_name

__all__ = ["StepCounterHook"]

logger = logging.getLogger(__name__)

_MAX_STALL_WARNINGS = 5


class StepCounterHook(SessionRunHook):
    """Counts global steps per second between triggers; see the module docstring."""

    #: Where the hook logs: this module's logger; the TF drop-in's hooks log on TF's "tensorflow".
    logger: logging.Logger = logger

    def __init__(
        self,
        every_n_steps: int | None = 100,
        every_n_secs: float | None = None,
        output_dir: str | None = None,
        summary_writer: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (every_n_steps is None) == (every_n_secs is None):
            raise ValueError("exactly one of every_n_steps and every_n_secs should be provided.")
        if isinstance(every_n_steps, numbers.Real) and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self._timer = SecondOrStepTimer(every_steps=every_n_steps, every_secs=every_n_secs, clock=clock)
        self._clock = clock
        self._due_step, self._due_time = self._timer.due()
        self._summary_writer = summary_writer
        self._output_dir = output_dir
        self._last_global_step: Any = None
        self._steps_per_run = 1
        self._global_step: Any = None
        self._summary_tag = "global_step/sec"
        self._stall_warnings = 0

    def _set_steps_per_run(self, steps_per_run: int) -> None:
        self._steps_per_run = steps_per_run

    def begin(self) -> None:
        if self._summary_writer is None and self._output_dir:
            self._summary_writer = SummaryWriterCache.get(self._output_dir)

    def after_create_session(self, session: Any, coord: Any) -> None:
        self._global_step = get_global_step(session.graph)
        # <name of the global step>/sec: a TF variable's op name (not its read tensor's), a handle's name
        self._summary_tag = f"{global_step_name(session.graph)}/sec"

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        try:
            if run_context.global_step is not None:
                return None
        except AttributeError:  # TF's own run context has none
            pass
        return SessionRunArgs(self._global_step)

    def _log_and_record(self, elapsed_steps: Any, elapsed_time: float, global_step: Any) -> None:
        steps_per_sec = elapsed_steps / elapsed_time
        writer = self._summary_writer
        if writer is not None:
            add_scalar = getattr(writer, "add_scalar", None)
            if add_scalar is not None:
                add_scalar(self._summary_tag, steps_per_sec, global_step)
            else:
                writer.add_summary({self._summary_tag: steps_per_sec}, global_step)
        self.logger.info("%s: %g", self._summary_tag, steps_per_sec)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        try:
            stale_global_step = run_context.global_step
        except AttributeError:  # TF's own run context has none
            stale_global_step = None
        if stale_global_step is None:
            stale_global_step = run_values.results
        # Ask the timer only when it may trigger (SecondOrStepTimer.due): most runs end here.
        due_time = self._due_time
        if stale_global_step + self._steps_per_run >= self._due_step or (
            due_time is not None and self._clock() >= due_time
        ):
            self._maybe_trigger(run_context, stale_global_step)
        if stale_global_step == self._last_global_step and self._stall_warnings < _MAX_STALL_WARNINGS:
            self._stall_warnings += 1
            self.logger.warning(
                "It seems that global step has not been increased. Current value (could be "
                "stable): %s vs previous value: %s. You could increase the global step by running "
                "a step declared with advance_global_step=True (the default) or, in TF, by passing "
                "tf.train.get_global_step() to Optimizer.apply_gradients or Optimizer.minimize.",
                stale_global_step,
                self._last_global_step,
            )
        self._last_global_step = stale_global_step

    def _maybe_trigger(self, run_context: SessionRunContext, stale_global_step: Any) -> None:
        if self._timer.should_trigger_for_step(stale_global_step + self._steps_per_run):
            global_step = run_context.session.run(self._global_step)
            if self._timer.should_trigger_for_step(global_step):
                elapsed_time, elapsed_steps = self._timer.update_last_triggered_step(global_step)
                self._due_step, self._due_time = self._timer.due()
                if elapsed_time is not None:
                    self._log_and_record(elapsed_steps, elapsed_time, global_step)
