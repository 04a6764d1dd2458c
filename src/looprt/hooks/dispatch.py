"""Which hook methods to call: computed once, so the per-run path stays short.

A hook method that is the base class's no-op has no observable effect, so the
session never calls it. Backends whose frameworks have their own hook base
class (TensorFlow's ``SessionRunHook``) register it here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from looprt.hooks.session_run_hook import SessionRunHook

__all__ = ["HOOK_METHODS", "calls", "overrides", "register_hook_base"]

HOOK_METHODS = ("begin", "after_create_session", "before_run", "after_run", "end")

_noop_methods: set[Any] = set()


def register_hook_base(cls: type) -> None:
    """Treat the hook methods ``cls`` defines as no-ops that need no call."""
    for name in HOOK_METHODS:
        method = cls.__dict__.get(name)
        if method is not None:
            _noop_methods.add(method)


register_hook_base(SessionRunHook)


def overrides(hook: Any, name: str) -> bool:
    """Whether calling ``hook.<name>`` can do anything.

    Never reads ``hook.__dict__``: in CPython that turns the hook's compact
    attribute storage into a real dict for good, which slows every attribute
    access in the hook's later calls.
    """
    method = getattr(hook, name, None)
    if method is None:
        return hasattr(hook, name)
    # A method bound to the hook is the class's function; anything else (an instance
    # attribute, a static method, a callable object) is called as it is.
    if getattr(method, "__self__", None) is hook:
        return getattr(method, "__func__", None) not in _noop_methods
    return True


def calls(hooks: Iterable[Any], name: str) -> list[tuple[Any, Any]]:
    """``(hook, bound method)`` for each hook whose ``name`` method does something."""
    return [(hook, getattr(hook, name)) for hook in hooks if overrides(hook, name)]
