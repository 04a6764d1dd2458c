"""Idle runs: hooks that say when they need no call, so the session skips them.

A looprt extension of TF's hook contract, for the eager backends. The
standard hooks act every N steps or seconds; on the runs in between, their
``before_run`` only asks for the global step and their ``after_run`` only
records it. After a training step has evicted the CPU caches, those calls
(and merging their fetches) cost several times the session's own work. So a
hook may implement two methods:

``idle_until() -> (step, time) | None``
    Asked after each run on which the hook was called. It promises: for a
    run whose global step is ``g`` before it and ``g + 1`` after it, with
    ``g < step``, that starts while ``time.time() < time``, the hook's
    ``before_run`` and ``after_run`` would do nothing but what
    ``after_idle_runs`` records. None: call me on the next run.

``after_idle_runs(global_step)``
    Called before the hook's next call of any other method (``before_run``,
    ``after_create_session``, ``end``) after runs on which it was skipped;
    ``global_step`` is the global step before the last of them.

``HookedSession`` skips the hooks of a run only when every hook it would
call is idle (its ``idle_until`` comes from the class that defines its
``before_run`` and ``after_run``, so a subclass that overrides either is
called every run), the raw session says the run advances the global step by
exactly one (``ProgramSession``'s runs of one train op), the global step
rose since the previous run, and no options or run metadata are given.
A hook listed twice is called on every run. A run that raises is not
counted as skipped. Everything a hook would observe is then the same as if
it were called, with two exceptions, both about when something asynchronous
is noticed: a trigger by time fires on the first run that starts after its
time rather than the first that ends after it, and a preemption signal that
arrives during a skipped run is seen after the next run rather than after
that one (as if it had come a step later).

``wake()`` ends every idle span at once; the preemption signal handler
calls it. A span being planned while a signal arrives is not started.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["generation", "idle_capable", "until_timer_is_due", "vouched", "wake"]

# Sessions with an idle span, to wake on a signal; and how many wakes there were.
_sessions: weakref.WeakSet[Any] = weakref.WeakSet()
_wakes = [0]


def idle_capable(hook: Any) -> bool:
    """Whether ``hook``'s ``idle_until`` vouches for its ``before_run`` and ``after_run``.

    A method that is the base class's no-op is never called, so needs no voucher.
    """
    from looprt.hooks.dispatch import overrides

    called = tuple(name for name in ("before_run", "after_run") if overrides(hook, name))
    return callable(getattr(hook, "after_idle_runs", None)) and vouched(hook, "idle_until", called)


def vouched(obj: Any, by: str, methods: tuple[str, ...]) -> bool:
    """Whether ``obj.<by>`` and each of ``obj.<methods>`` are functions of one class.

    The class that defines ``by`` (or one it inherits from) must also be
    where each method comes from: a subclass that overrides one of them, or
    a method set on the instance, is not vouched for.
    """
    owner = next((c for c in type(obj).__mro__ if by in c.__dict__), None)
    if owner is None:
        return False
    for name in (by, *methods):
        method = getattr(obj, name, None)
        if getattr(method, "__self__", None) is not obj:
            return False  # an instance attribute or a static method
        if getattr(method, "__func__", None) is not getattr(owner, name, None):
            return False
    return True


def until_timer_is_due(timer: Any) -> tuple[float, float] | None:
    """The idle span of a hook that acts when its timer triggers for the step after a run.

    Such a hook asks its timer about ``g + 1`` after a run from ``g``: it is
    idle while ``g + 1`` is below the timer's next trigger step and the time
    is before its next trigger time. None when the timer cannot say (see
    ``SecondOrStepTimer.idle_until``), or when its ``idle_until`` does not come
    from the class that decides when it triggers.
    """
    if not vouched(timer, "idle_until", ("should_trigger_for_step",)):
        return None
    span: tuple[float, float] | None = timer.idle_until()
    return None if span is None else (span[0] - 1, span[1])


def generation() -> int:
    """How many times ``wake()`` has been called (a span planned across a change is void)."""
    return _wakes[0]


def register(session: Any) -> None:
    """Let ``wake()`` reach ``session`` (which has a ``wake()`` method)."""
    _sessions.add(session)


def wake() -> None:
    """End the idle span of every session: their hooks are called from the next run."""
    _wakes[0] += 1
    for session in list(_sessions):
        session.wake()
