"""Session creators: how ``MonitoredSession`` gets (and re-gets) its raw session.

``ChiefSessionCreator`` initializes or restores the state; ``WorkerSessionCreator``
waits for a chief to have done so. Any object with a ``create_session()`` that
returns a session-like object (``run``, ``close``, ``graph``) works as well.
"""

from __future__ import annotations

import abc
import numbers
from typing import Any

from looprt.session.scaffold import Scaffold

__all__ = ["ChiefSessionCreator", "SessionCreator", "WorkerSessionCreator"]


class SessionCreator(abc.ABC):
    """Makes a raw session; called again on every recovery."""

    @abc.abstractmethod
    def create_session(self) -> Any:
        """A new raw session, ready to run."""


class ChiefSessionCreator(SessionCreator):
    """Creates a session that restores the latest checkpoint or initializes the state.

    ``checkpoint_dir`` restores the newest valid checkpoint there;
    ``checkpoint_filename_with_path`` restores exactly that one (give at most
    one). ``master`` and ``config`` are passed to the backend.
    """

    def __init__(
        self,
        scaffold: Scaffold | None = None,
        master: str = "",
        config: Any = None,
        checkpoint_dir: str | None = None,
        checkpoint_filename_with_path: str | None = None,
    ) -> None:
        if scaffold is not None and not isinstance(scaffold, Scaffold):
            raise TypeError(f"ChiefSessionCreator scaffold must be a Scaffold, got {type(scaffold).__name__}")
        self._scaffold = scaffold or Scaffold()
        self._master = master
        self._config = config
        self._checkpoint_dir = checkpoint_dir
        self._checkpoint_filename_with_path = checkpoint_filename_with_path

    def create_session(self) -> Any:
        scaffold = self._scaffold.finalize()
        return scaffold.program.backend.session_manager(scaffold).prepare_session(
            self._master,
            init_op=scaffold.init_op,
            saver=scaffold.saver,
            checkpoint_dir=self._checkpoint_dir,
            checkpoint_filename_with_path=self._checkpoint_filename_with_path,
            config=self._config,
            init_feed_dict=scaffold.init_feed_dict,
            init_fn=scaffold.init_fn,
        )


class WorkerSessionCreator(SessionCreator):
    """Creates a session once the chief has initialized the state.

    Waits up to ``max_wait_secs`` (default 30 minutes), then raises
    ``DeadlineExceededError``.
    """

    def __init__(
        self,
        scaffold: Scaffold | None = None,
        master: str = "",
        config: Any = None,
        max_wait_secs: float = 30 * 60,
    ) -> None:
        if scaffold is not None and not isinstance(scaffold, Scaffold):
            raise TypeError(
                f"WorkerSessionCreator scaffold must be a Scaffold, "
                f"got {type(scaffold).__name__}"
            )
        if isinstance(max_wait_secs, numbers.Real) and not max_wait_secs >= 0:
            raise ValueError(f"max_wait_secs must be >= 0, got {max_wait_secs}")
        self._scaffold = scaffold or Scaffold()
        self._master = master
        self._config = config
        self._max_wait_secs = max_wait_secs

    def create_session(self) -> Any:
        scaffold = self._scaffold.finalize()
        return scaffold.program.backend.session_manager(scaffold).wait_for_session(
            self._master, config=self._config, max_wait_secs=self._max_wait_secs
        )
