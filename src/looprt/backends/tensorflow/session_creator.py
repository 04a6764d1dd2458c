"""Session creators bound to TF graph mode: TF's ``ChiefSessionCreator`` and ``WorkerSessionCreator``.

Each finalizes its scaffold (a drop-in ``Scaffold`` by default; TF's own works
too) and asks a ``SessionManager`` of the default graph, made on first use
and kept, as TF's creators do: the chief prepares (restores or initializes)
the session, a worker waits until the chief has initialized the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from looprt.backends.tensorflow.scaffold import Scaffold
from looprt.backends.tensorflow.session_manager import SessionManager
from looprt.session.creator import SessionCreator

__all__ = ["ChiefSessionCreator", "SessionCreator", "WorkerSessionCreator"]


class _GraphSessionCreator(SessionCreator):
    """Keeps the scaffold and the session manager (made on first use, with the default graph)."""

    def __init__(
        self,
        scaffold: Any,
        master: str,
        config: Any,
        recovery_wait_secs: float = 30,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self._scaffold = scaffold or Scaffold()
        self._master = master
        self._config = config
        self._recovery_wait_secs = recovery_wait_secs
        self._sleep = sleep
        self._session_manager: SessionManager | None = None

    def _get_session_manager(self) -> SessionManager:
        if self._session_manager is None:
            scaffold = self._scaffold
            self._session_manager = SessionManager(
                local_init_op=scaffold.local_init_op,
                local_init_feed_dict=scaffold.local_init_feed_dict,
                ready_op=scaffold.ready_op,
                ready_for_local_init_op=scaffold.ready_for_local_init_op,
                graph=tf.compat.v1.get_default_graph(),
                recovery_wait_secs=self._recovery_wait_secs,
                sleep=self._sleep,
            )
        return self._session_manager


class ChiefSessionCreator(_GraphSessionCreator):
    """Creates a session that restores the latest checkpoint or initializes the model.

    ``checkpoint_dir`` restores the newest valid checkpoint there (a looprt
    one, else a plain TF one); ``checkpoint_filename_with_path`` exactly that
    one (a checkpoint folder or a TF prefix).
    """

    def __init__(
        self,
        scaffold: Any = None,
        master: str = "",
        config: Any = None,
        checkpoint_dir: str | None = None,
        checkpoint_filename_with_path: str | None = None,
    ) -> None:
        super().__init__(scaffold, master, config)
        self._checkpoint_dir = checkpoint_dir
        self._checkpoint_filename_with_path = checkpoint_filename_with_path

    def create_session(self) -> Any:
        self._scaffold.finalize()
        return self._get_session_manager().prepare_session(
            self._master,
            saver=self._scaffold.saver,
            checkpoint_dir=self._checkpoint_dir,
            checkpoint_filename_with_path=self._checkpoint_filename_with_path,
            config=self._config,
            init_op=self._scaffold.init_op,
            init_feed_dict=self._scaffold.init_feed_dict,
            init_fn=self._scaffold.init_fn,
        )


class WorkerSessionCreator(_GraphSessionCreator):
    """Creates a session once the chief has initialized the model.

    Polls every ``recovery_wait_secs`` (TF's 30 s; keyword-only, with
    ``sleep``, looprt extensions) and raises ``tf.errors.DeadlineExceededError``
    after ``max_wait_secs``.
    """

    def __init__(
        self,
        scaffold: Any = None,
        master: str = "",
        config: Any = None,
        max_wait_secs: float = 30 * 60,
        *,
        recovery_wait_secs: float = 30,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        super().__init__(scaffold, master, config, recovery_wait_secs, sleep)
        self._max_wait_secs = max_wait_secs

    def create_session(self) -> Any:
        self._scaffold.finalize()
        return self._get_session_manager().wait_for_session(
            self._master, config=self._config, max_wait_secs=self._max_wait_secs
        )
