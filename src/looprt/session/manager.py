"""``SessionManager``: create a program's session ready to run.

The chief *prepares* a session: restore the latest checkpoint if there is one,
otherwise run the init op and ``init_fn``; then run the local init op, check
readiness, and tell waiting workers that the state is ready. A worker *waits*
for that signal (up to ``max_wait_secs``) and then runs its local init op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from looprt.program.program import Program

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)


def _not_ready(value: Any) -> str | None:
    """TF's convention: a ready op returns the names of what is not ready yet."""
    if value is None:
        return None
    size = getattr(value, "size", None)
    if size is None:
        size = len(value)
    if size == 0:
        return None
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in value]
    return "Variables not initialized: " + ", ".join(names)


class SessionManager:
    """Prepares (chief) or waits for (worker) a ready session of ``program``."""

    def __init__(
        self,
        program: Program,
        local_init_op: Any = None,
        ready_op: Any = None,
        ready_for_local_init_op: Any = None,
        local_init_feed_dict: Any = None,
    ) -> None:
        if ready_for_local_init_op is not None and local_init_op is None:
            raise ValueError(
                "If you pass a ready_for_local_init_op you must also pass a local_init_op, "
                f"ready_for_local_init_op [{ready_for_local_init_op!r}]"
            )
        self._program = program
        self._local_init_op = local_init_op
        self._ready_op = ready_op
        self._ready_for_local_init_op = ready_for_local_init_op
        self._local_init_feed_dict = local_init_feed_dict

    def _new_session(self, master: str, config: Any) -> Any:
        return self._program.backend.create_session(self._program, target=master, config=config)

    def _restore(
        self, sess: Any, saver: Any, checkpoint_dir: str | None, checkpoint_filename_with_path: str | None
    ) -> bool:
        if checkpoint_dir and checkpoint_filename_with_path:
            raise ValueError("Can not provide both checkpoint_dir and checkpoint_filename_with_path.")
        if saver is None or not (checkpoint_dir or checkpoint_filename_with_path):
            return False
        path = checkpoint_filename_with_path or saver.latest_checkpoint(checkpoint_dir)
        if not path:
            return False
        saver.restore(sess, path)
        logger.info("Restored %s from %s", self._program.name, path)
        return True

    def _run_local_init(self, sess: Any) -> str | None:
        if self._local_init_op is None:
            return None
        if self._ready_for_local_init_op is not None:
            problem = _not_ready(sess.run(self._ready_for_local_init_op))
            if problem is not None:
                return problem
        sess.run(self._local_init_op, feed_dict=self._local_init_feed_dict)
        return None

    def prepare_session(
        self,
        master: str = "",
        init_op: Any = None,
        saver: Any = None,
        checkpoint_dir: str | None = None,
        checkpoint_filename_with_path: str | None = None,
        config: Any = None,
        init_feed_dict: Any = None,
        init_fn: Callable[[Any], None] | None = None,
    ) -> Any:
        """A session with state restored or initialized; marks the program ready."""
        sess = self._new_session(master, config)
        if not self._restore(sess, saver, checkpoint_dir, checkpoint_filename_with_path):
            if init_op is None and not init_fn and self._local_init_op is None:
                raise RuntimeError(
                    "Model is not initialized and no init_op or init_fn or local_init_op was given"
                )
            if init_op is not None:
                sess.run(init_op, feed_dict=init_feed_dict)
            if init_fn:
                init_fn(sess)
        problem = self._run_local_init(sess)
        if problem is not None:
            raise RuntimeError(
                f"Init operations did not make model ready for local_init. Init op: {init_op!r}, "
                f"init fn: {init_fn!r}, error: {problem}"
            )
        if self._ready_op is not None:
            problem = _not_ready(sess.run(self._ready_op))
            if problem is not None:
                raise RuntimeError(
                    f"Init operations did not make model ready. Init op: {init_op!r}, "
                    f"init fn: {init_fn!r}, local_init_op: {self._local_init_op!r}, error: {problem}"
                )
        self._program.backend.mark_ready(self._program)
        return sess

    def wait_for_session(
        self, master: str = "", config: Any = None, max_wait_secs: float | None = None
    ) -> Any:
        """A session once the chief readied the state; ``DeadlineExceededError`` past ``max_wait_secs``."""
        self._program.backend.wait_until_ready(self._program, max_wait_secs)
        sess = self._new_session(master, config)
        problem = self._run_local_init(sess)
        if problem is not None:
            raise RuntimeError(f"Local init failed on a worker: {problem}")
        return sess
