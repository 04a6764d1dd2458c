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
Everything a hook would observe is then the same as if it were called,
except that a trigger by time fires on the first run that starts after its
time rather than the first that ends after it.

``wake()`` ends every idle span at once; the preemption signal handler
calls it, so the hooks see the signal after the run in progress.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["idle_capable", "wake"]

# Sessions with an idle span, to wake on a signal.
_sessions: weakref.WeakSet[Any] = weakref.WeakSet()


def idle_capable(hook: Any) -> bool:
    """Whether ``hook``'s ``idle_until`` vouches for its ``before_run`` and ``after_run``."""
    owner = next((c for c in type(hook).__mro__ if "idle_until" in c.__dict__), None)
    if owner is None:
        return False
    if not callable(getattr(hook, "after_idle_runs", None)):
        return False
    from looprt.hooks.dispatch import overrides

    for name in ("before_run", "after_run", "idle_until"):
        method = getattr(hook, name, None)
        if getattr(method, "__self__", None) is not hook:
            return False  # an instance attribute or a static method: nothing vouches for it
        if name != "idle_until" and overrides(hook, name) and not _defined_in(type(hook), owner, name):
            return False
    return True


def _defined_in(cls: type, owner: type, name: str) -> bool:
    """Whether ``cls.<name>`` is the function ``owner`` (or a class it inherits from) defines."""
    return getattr(cls, name) is getattr(owner, name)


def register(session: Any) -> None:
    """Let ``wake()`` reach ``session`` (which has a ``wake()`` method)."""
    _sessions.add(session)


def wake() -> None:
    """End the idle span of every session: their hooks are called from the next run."""
    for session in list(_sessions):
        session.wake()
