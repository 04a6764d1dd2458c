"""``CoordinatedSession``: ties a session to the ``Coordinator`` of its threads.

A background thread's exception, reported to the coordinator, stops the loop
and surfaces from ``should_stop()`` (and from ``close()``); closing stops the
threads and joins them within the grace period.
"""

from __future__ import annotations

import contextlib
from typing import Any

from looprt.coordinator import Coordinator
from looprt.session.wrapped import WrappedSession

__all__ = ["CoordinatedSession"]


class CoordinatedSession(WrappedSession):
    """A session whose threads are managed by ``coord``.

    ``recoverable_errors`` are passed through untouched from a failing run, so
    the recovery layer above sees them; any other error from a run is raised
    as it is, unless the coordinator holds a recoverable error, which is raised
    instead so that the session is re-created.
    """

    def __init__(
        self,
        sess: Any,
        coord: Coordinator,
        stop_grace_period_secs: float = 120,
        recoverable_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        super().__init__(sess)
        self._coord = coord
        self._stop_grace_period_secs = stop_grace_period_secs
        self._recoverable_errors = recoverable_errors
        self.close_errors = recoverable_errors

    def check_stop(self) -> bool:
        self._coord.raise_requested_exception()
        return self._coord.should_stop()

    def close(self) -> None:
        self._coord.request_stop()
        try:
            self._coord.join(
                stop_grace_period_secs=self._stop_grace_period_secs, ignore_live_threads=True
            )
        finally:
            # The join's error, if any, is the one to report.
            with contextlib.suppress(Exception):
                super().close()

    def run(
        self,
        fetches: Any,
        feed_dict: Any = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        try:
            return self._sess.run(fetches, feed_dict, options, run_metadata)
        except self._recoverable_errors:
            raise
        except Exception as original:
            try:
                self._coord.raise_requested_exception()
            except self._recoverable_errors:
                raise
            except Exception:  # noqa: BLE001 - the run's own error wins
                raise original from None
            raise
