"""Periodic triggers for hooks: every N steps or every N seconds, with an injectable clock.

``SecondOrStepTimer`` mirrors TF's: it triggers on the first step it is asked
about, then once ``every_steps`` steps or ``every_secs`` seconds have passed
since the last trigger (never twice for the same step). Pass ``clock`` (a
function returning seconds) to control time in tests.
"""

from __future__ import annotations

import math
import numbers
import operator
import time
from collections.abc import Callable

__all__ = ["NeverTriggerTimer", "SecondOrStepTimer"]


class SecondOrStepTimer:
    """Triggers every ``every_steps`` steps or every ``every_secs`` seconds (exactly one)."""

    def __init__(
        self,
        every_secs: float | None = None,
        every_steps: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if every_secs is None and every_steps is None:
            raise ValueError("Either every_secs or every_steps should be provided.")
        if every_secs is not None and every_steps is not None:
            raise ValueError("Can not provide both every_secs and every_steps.")
        if isinstance(every_steps, numbers.Real) and every_steps < 0:
            raise ValueError(f"every_steps must be >= 0, got {every_steps}")
        self._every_secs = every_secs
        self._every_steps = every_steps
        self._clock = clock
        self._last_triggered_step: int | None = None
        self._last_triggered_time: float | None = None

    def reset(self) -> None:
        """Forget the last trigger: the next step asked about triggers."""
        self._last_triggered_step = None
        self._last_triggered_time = None

    def should_trigger_for_step(self, step: int) -> bool:
        """Whether ``step`` is due."""
        last_step = self._last_triggered_step
        if last_step is None:
            return True
        if last_step == step:
            return False
        if self._every_secs is not None and self._clock() >= self._last_triggered_time + self._every_secs:  # type: ignore[operator]
            return True
        return self._every_steps is not None and step >= last_step + self._every_steps

    def update_last_triggered_step(self, step: int) -> tuple[float | None, int | None]:
        """Record a trigger at ``step``; return (seconds, steps) since the previous one."""
        now = self._clock()
        if self._last_triggered_time is None or self._last_triggered_step is None:
            elapsed: tuple[float | None, int | None] = (None, None)
        else:
            elapsed = (now - self._last_triggered_time, step - self._last_triggered_step)
        self._last_triggered_time = now
        self._last_triggered_step = step
        return elapsed

    def last_triggered_step(self) -> int | None:
        return self._last_triggered_step

    def due(self) -> tuple[float, float | None]:
        """``(step, time)`` before which the timer cannot trigger, for a hook's per-run check.

        ``should_trigger_for_step(s)`` can be True only if ``s >= step``, or
        ``time`` is not None and ``clock() >= time``: a hook that checks this
        first (a comparison or two, a clock read only for a timer in
        seconds) asks the timer only on runs that may trigger. Valid until
        the next ``update_last_triggered_step`` or ``reset``.
        """
        last_step = self._last_triggered_step
        if last_step is None or self._every_steps == 0:
            return -math.inf, None
        if self._every_secs is not None:
            return math.inf, self._last_triggered_time + self._every_secs  # type: ignore[operator]
        step = last_step + self._every_steps  # type: ignore[operator]
        try:
            # A NumPy integer (a fetched global step) as a Python int: the hooks compare it
            # every run, and a NumPy scalar comparison costs microseconds after a training step.
            return operator.index(step), None
        except TypeError:
            return step, None


class NeverTriggerTimer:
    """A timer that never triggers (for hooks that only act at the end)."""

    def reset(self) -> None:
        pass

    def should_trigger_for_step(self, step: int) -> bool:
        return False

    def update_last_triggered_step(self, step: int) -> tuple[float | None, int | None]:
        return (None, None)

    def due(self) -> tuple[float, float | None]:
        return math.inf, None

    def last_triggered_step(self) -> int | None:
        return None
