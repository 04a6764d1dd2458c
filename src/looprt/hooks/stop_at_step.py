"""``StopAtStepHook``: request a stop once the global step reaches a given step.

Mirrors ``tf.compat.v1.train.StopAtStepHook``. Give exactly one of
``num_steps`` (that many steps after the global step found when the session is
first created) or ``last_step`` (an absolute global step). After each run the
hook predicts the global step as the value before the run plus one (from
``run_context.global_step``, or fetched where the session cannot count it),
and only when that reaches ``last_step`` reads the global step again to
confirm before asking the loop to stop.

The global step is looked up in ``after_create_session`` from the raw
session's ``graph`` (TF's hook does it in ``begin``), so a missing global step
raises ``RuntimeError`` when the session is created.

Difference from TF (``stop_at_start``, on by default): a session that starts
with its global step already at or past ``last_step`` (a finished job
relaunched, ``num_steps=0``) runs no step. The hook asks the coordinator it is
given in ``after_create_session`` to stop, so ``should_stop()`` is true
before the first run, and the ``with`` block ends cleanly (every hook's
``end`` runs). TF's hook lets one run through and stops after it, training
one step past ``last_step``; ``stop_at_start=False`` (what the TF drop-in
``looprt.backends.tensorflow.StopAtStepHook`` uses) keeps that.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any

from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.training_util import get_global_step

__all__ = ["StopAtStepHook"]

logger = logging.getLogger(__name__)


class StopAtStepHook(SessionRunHook):
    """Requests a stop at ``last_step``, or ``num_steps`` steps after the session starts."""

    def __init__(
        self, num_steps: int | None = None, last_step: int | None = None, *, stop_at_start: bool = True
    ) -> None:
        if num_steps is None and last_step is None:
            raise ValueError("One of num_steps or last_step must be specified.")
        if num_steps is not None and last_step is not None:
            raise ValueError("Only one of num_steps or last_step can be specified.")
        for name, value in (("num_steps", num_steps), ("last_step", last_step)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if num_steps is not None and num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        self._num_steps = num_steps
        self._last_step: Any = last_step
        self._stop_at_start = bool(stop_at_start)
        self._global_step: Any = None

    @property
    def last_step(self) -> Any:
        """The global step at which the loop stops (None until the session exists, with ``num_steps``)."""
        return self._last_step

    def after_create_session(self, session: Any, coord: Any) -> None:
        try:
            self._global_step = get_global_step(session.graph)
        except RuntimeError as error:
            raise RuntimeError("Global step should be created to use StopAtStepHook.") from error
        if self._last_step is not None and not self._stop_at_start:
            return  # nothing to read (TF's hook runs nothing here either)
        step = session.run(self._global_step)
        if self._last_step is None:
            self._last_step = step + self._num_steps
        if self._stop_at_start and step >= self._last_step and coord is not None:
            logger.info(
                "The global step is %d, at or past last_step %d: stopping before the first step",
                step, self._last_step,
            )
            coord.request_stop()

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        try:
            if run_context.global_step is not None:
                return None
        except AttributeError:  # TF's own run context has none
            pass
        return SessionRunArgs(self._global_step)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        # The step before the run: predict the one after it, then confirm.
        try:
            before = run_context.global_step
        except AttributeError:  # TF's own run context has none
            before = None
        if before is None:
            before = run_values.results
        if before + 1 >= self._last_step and run_context.session.run(self._global_step) >= self._last_step:
            run_context.request_stop()
