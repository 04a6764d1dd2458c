"""``SecondOrStepTimer.due``: the per-run check hooks make before asking the timer.

The standard hooks compare the global step (and, for a timer in seconds, the
clock) with ``due()`` and ask ``should_trigger_for_step`` only when it may be
true. That is only correct if ``due()`` never says "not yet" for a step the
timer would trigger on; for a timer in steps it is exact.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

import looprt
from looprt.timer import NeverTriggerTimer

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["ask", "ask", "ask", "update", "reset"]),
        st.integers(min_value=-5, max_value=60),  # steps may go back (a restore)
        st.floats(min_value=0, max_value=10, allow_nan=False),  # seconds that pass before
    ),
    max_size=40,
)


@given(every_steps=st.integers(min_value=0, max_value=7), ops=_OPS)
def test_due_is_exact_for_a_timer_in_steps(every_steps: int, ops: list[tuple[str, int, float]]) -> None:
    timer = looprt.SecondOrStepTimer(every_steps=every_steps, clock=lambda: 0.0)
    for op, step, _ in ops:
        due_step, due_time = timer.due()
        assert due_time is None
        if op == "ask":
            triggers = timer.should_trigger_for_step(step)
            if every_steps >= 1:
                assert triggers == (step >= due_step)
            else:
                assert not triggers or step >= due_step
        elif op == "update":
            timer.update_last_triggered_step(step)
        else:
            timer.reset()


@given(every_secs=st.floats(min_value=0.5, max_value=5), ops=_OPS)
def test_due_never_misses_a_trigger_of_a_timer_in_seconds(
    every_secs: float, ops: list[tuple[str, int, float]]
) -> None:
    now = [1000.0]
    timer = looprt.SecondOrStepTimer(every_secs=every_secs, clock=lambda: now[0])
    for op, step, elapsed in ops:
        now[0] += elapsed
        due_step, due_time = timer.due()
        if op == "ask":
            may = step >= due_step or (due_time is not None and now[0] >= due_time)
            assert timer.should_trigger_for_step(step) <= may
        elif op == "update":
            timer.update_last_triggered_step(step)
        else:
            timer.reset()


def test_a_fresh_timer_is_due_at_once_and_a_never_timer_never() -> None:
    assert looprt.SecondOrStepTimer(every_steps=10).due() == (-math.inf, None)
    assert looprt.SecondOrStepTimer(every_secs=10).due() == (-math.inf, None)
    timer = looprt.SecondOrStepTimer(every_secs=10, clock=lambda: 5.0)
    timer.update_last_triggered_step(3)
    assert timer.due() == (math.inf, 15.0)
    assert NeverTriggerTimer().due() == (math.inf, None)


def test_due_gives_a_python_int_for_a_numpy_step() -> None:
    """A fetched global step is a NumPy integer; ``due`` gives a plain int to compare every run."""
    import numpy as np

    timer = looprt.SecondOrStepTimer(every_steps=100)
    timer.update_last_triggered_step(np.int64(200))
    due_step, due_time = timer.due()
    assert (due_step, due_time) == (300, None) and type(due_step) is int
