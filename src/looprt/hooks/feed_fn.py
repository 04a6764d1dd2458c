"""``FeedFnHook``: feed the values ``feed_fn()`` returns into every run.

Mirrors ``tf.compat.v1.train.FeedFnHook``: ``feed_fn`` is called with no
arguments before each run and must return a feed dict (inputs or their names
to values). Feeding a key the caller or another hook also feeds raises
``looprt.FeedConflictError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from looprt.hooks.session_run_hook import SessionRunArgs, SessionRunContext, SessionRunHook

__all__ = ["FeedFnHook"]


class FeedFnHook(SessionRunHook):
    """Adds ``feed_fn()`` to the feeds of every run."""

    def __init__(self, feed_fn: Callable[[], Any]) -> None:
        if not callable(feed_fn):
            raise TypeError(f"feed_fn must be callable, got {type(feed_fn).__name__}")
        self.feed_fn = feed_fn

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs:
        return SessionRunArgs(fetches=None, feed_dict=self.feed_fn())
