"""The base of the session layers: each wraps the session below it.

A layer answers ``should_stop()`` from its own ``check_stop()`` and, when the
layer below is also a layer, from that one's ``should_stop()``; a raw backend
session is never asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from looprt.session.step_context import StepContext

__all__ = ["WrappedSession"]

logger = logging.getLogger(__name__)


class WrappedSession:
    """A session layer around ``sess`` (another layer or a raw session)."""

    # Errors a close may raise when a peer is gone; logged, never raised.
    close_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, sess: Any) -> None:
        self._sess: Any = sess
        self._wrapped_is_layer = isinstance(sess, WrappedSession)

    @property
    def graph(self) -> Any:
        return self._sess.graph

    def check_stop(self) -> bool:
        """This layer's own reason to stop; the base layer has none."""
        return False

    def should_stop(self) -> bool:
        if self.check_stop():
            return True
        if self._sess is not None:
            return self._wrapped_is_layer and bool(self._sess.should_stop())
        return True

    def close(self) -> None:
        if self._sess is not None:
            try:
                self._sess.close()
            except self.close_errors as e:
                logger.error(
                    "An error occurred while closing the session; a peer may have "
                    "been preempted. Error: %s", e
                )
            finally:
                self._sess = None

    def run(
        self,
        fetches: Any,
        feed_dict: Any = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        return self._sess.run(
            fetches=fetches, feed_dict=feed_dict, options=options, run_metadata=run_metadata
        )

    def run_step_fn(
        self,
        step_fn: Callable[[StepContext], Any],
        raw_session: Any,
        run_with_hooks: Callable[..., Any] | None,
    ) -> Any:
        return step_fn(StepContext(raw_session, run_with_hooks or self.run))
