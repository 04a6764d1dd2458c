"""The MonitoredSession family bound to TF graph mode: looprt's sessions with TF's errors and protos.

looprt's ``MonitoredSession`` and ``SingularMonitoredSession`` run a raw
``tf.compat.v1.Session`` here, so fetches and feeds are whatever TF's
``Session.run`` takes (and bad ones fail with TF's own errors). What the
drop-in adds, through the extension points of looprt's sessions:

* ``tf.errors.AbortedError`` / ``UnavailableError`` re-create the session
  (``MonitoredSession``), and ``tf.errors.OutOfRangeError`` (a ``tf.data``
  iterator running dry) ends a ``with`` block cleanly, besides looprt's own;
* every run gets fresh TF ``RunOptions`` / ``RunMetadata`` protos, passed to
  the raw session as TF does, so TF's ``ProfilerHook`` finds its trace;
* TF's queue runners are started when the default graph has any;
* the session creator defaults to the drop-in ``ChiefSessionCreator``, and
  closing the session un-finalizes the default graph if it was not
  finalized before, as TF does, so a script can build more ops afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tensorflow as tf

import looprt.coordinator
import looprt.errors
import looprt.session.monitored
from looprt.backends.tensorflow.errors import CLEAN_END_ERRORS, RECOVERABLE_ERRORS
from looprt.backends.tensorflow.session_creator import ChiefSessionCreator

__all__ = ["Coordinator", "MonitoredSession", "SingularMonitoredSession"]


class Coordinator(looprt.coordinator.Coordinator):
    """looprt's ``Coordinator``; by default TF's ``OutOfRangeError`` (and looprt's) stop threads cleanly."""

    def __init__(self, clean_stop_exception_types: Iterable[type[BaseException]] | None = None) -> None:
        if clean_stop_exception_types is None:
            clean_stop_exception_types = (tf.errors.OutOfRangeError, looprt.errors.OutOfRangeError)
        super().__init__(clean_stop_exception_types)


class _GraphMode:
    """The TF graph-mode settings of the drop-in sessions (a mixin, first in the bases)."""

    recoverable_errors = RECOVERABLE_ERRORS
    clean_end_errors = CLEAN_END_ERRORS
    hooked_session_options: dict[str, Any] = {  # noqa: RUF012 - read-only; typed as the base's
        "new_options": tf.compat.v1.RunOptions,
        "new_metadata": tf.compat.v1.RunMetadata,
        "share_defaults": False,
    }

    def _remember_graph(self) -> None:
        # TF reads this before calling any hook's begin().
        self._tf_graph = tf.compat.v1.get_default_graph()
        self._graph_was_finalized = self._tf_graph.finalized

    def start_threads(self, raw_session: Any, coord: Any) -> None:
        """Start the default graph's queue runners, as TF does."""
        if tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.QUEUE_RUNNERS):
            tf.compat.v1.train.start_queue_runners(sess=raw_session, coord=coord)

    def close_session(self, exception_type: type[BaseException] | None = None) -> None:
        try:
            super().close_session(exception_type)  # type: ignore[misc]
        finally:
            if not self._graph_was_finalized:
                # TF's own step back: the graph was finalized by this session's scaffold.
                self._tf_graph._unsafe_unfinalize()


class MonitoredSession(_GraphMode, looprt.session.monitored.MonitoredSession):
    """``tf.compat.v1.train.MonitoredSession`` on looprt: hooks, recovery, TF graph mode.

    ``session_creator`` defaults to ``ChiefSessionCreator()`` (the drop-in's).
    ``max_recoveries`` and ``recovery_backoff_secs`` are looprt extensions
    (see ``looprt.MonitoredSession``).
    """

    def __init__(
        self,
        session_creator: Any = None,
        hooks: Iterable[Any] | None = None,
        stop_grace_period_secs: float = 120,
        *,
        max_recoveries: int | None = None,
        recovery_backoff_secs: float = 0.0,
    ) -> None:
        self._remember_graph()
        super().__init__(
            session_creator or ChiefSessionCreator(),
            hooks,
            stop_grace_period_secs,
            max_recoveries=max_recoveries,
            recovery_backoff_secs=recovery_backoff_secs,
        )


class SingularMonitoredSession(_GraphMode, looprt.session.monitored.SingularMonitoredSession):
    """``tf.compat.v1.train.SingularMonitoredSession`` on looprt: a chief session without recovery.

    ``raw_session()`` is the ``tf.compat.v1.Session``.
    """

    def __init__(
        self,
        hooks: Iterable[Any] | None = None,
        scaffold: Any = None,
        master: str = "",
        config: Any = None,
        checkpoint_dir: str | None = None,
        stop_grace_period_secs: float = 120,
        checkpoint_filename_with_path: str | None = None,
    ) -> None:
        self._remember_graph()
        creator = ChiefSessionCreator(
            scaffold=scaffold,
            master=master,
            config=config,
            checkpoint_dir=checkpoint_dir,
            checkpoint_filename_with_path=checkpoint_filename_with_path,
        )
        # Past looprt's SingularMonitoredSession.__init__, which would make looprt's creator.
        super(looprt.session.monitored.SingularMonitoredSession, self).__init__(
            creator, hooks, should_recover=False, stop_grace_period_secs=stop_grace_period_secs
        )
