"""``SessionManager``: TF's ``tf.compat.v1.train.SessionManager``, finding checkpoints through looprt.

The chief *prepares* a session: a new ``tf.compat.v1.Session`` on ``master``,
the latest checkpoint restored (looprt's index first, a plain TF checkpoint
otherwise), else ``init_op`` and ``init_fn`` run; then ``local_init_op`` once
``ready_for_local_init_op`` reports nothing uninitialized, and a final
``ready_op`` check. A worker *waits*: it opens a session, runs the local init
and asks ``ready_op`` until the chief's variables (on the cluster) are
initialized, every ``recovery_wait_secs``, and raises TF's
``DeadlineExceededError`` after ``max_wait_secs``. Readiness is the ready op
run on the cluster, as in TF, so chief and worker may be other processes.

Differences from TF's: checkpoints are found with the saver's
``latest_checkpoint`` (``GraphSaver``), and ``sleep`` and ``clock`` are
injectable so that tests wait on events, not time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from looprt.backends.tensorflow.errors import require_graph_mode
from looprt.backends.tensorflow.graph_saver import GraphSaver

__all__ = ["SessionManager"]

# The drop-in logs where TF logs, so tf.compat.v1.logging's verbosity governs its lines.
logger = tf.get_logger()

_SAVED_MODEL_INITIALIZERS = "saved_model_initializers"


def _maybe_name(obj: Any) -> str:
    if obj is None:
        return "None"
    return str(getattr(obj, "name", f"<no name for {type(obj)}>"))


def _ready(op: Any, sess: Any, what: str) -> tuple[bool, str | None]:
    """TF's convention: a ready op lists the names of what is not initialized yet."""
    if op is None:
        return True, None
    try:
        value = sess.run(op)
    except tf.errors.FailedPreconditionError as e:
        if "uninitialized" not in str(e):
            logger.warning("%s : error [%s]", what, e)
            raise
        return False, str(e)
    if value is None or value.dtype == np.int32 or value.size == 0:
        return True, None
    names = ", ".join(name.decode("utf-8") for name in value)
    return False, "Variables not initialized: " + names


class SessionManager:
    """Creates ``tf.compat.v1.Session``s of ``graph`` that are restored or initialized and ready."""

    def __init__(
        self,
        local_init_op: Any = None,
        ready_op: Any = None,
        ready_for_local_init_op: Any = None,
        graph: Any = None,
        recovery_wait_secs: float = 30,
        local_init_run_options: Any = None,
        local_init_feed_dict: Any = None,
        *,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ready_for_local_init_op is not None and local_init_op is None:
            raise ValueError(
                "If you pass a ready_for_local_init_op you must also pass a local_init_op , "
                f"ready_for_local_init_op [{ready_for_local_init_op}]"
            )
        self._local_init_op = local_init_op
        self._ready_op = ready_op
        self._ready_for_local_init_op = ready_for_local_init_op
        self._graph = graph if graph is not None else tf.compat.v1.get_default_graph()
        self._recovery_wait_secs = recovery_wait_secs
        self._local_init_run_options = local_init_run_options
        self._local_init_feed_dict = local_init_feed_dict
        self._sleep = sleep
        self._clock = clock

    def _new_session(self, master: str, config: Any) -> Any:
        require_graph_mode("SessionManager")
        return tf.compat.v1.Session(master, graph=self._graph, config=config)

    def _latest(self, saver: Any, checkpoint_dir: str) -> str | None:
        find = getattr(saver, "latest_checkpoint", None)
        if callable(find):
            return find(checkpoint_dir)  # type: ignore[no-any-return]
        path: str | None = tf.train.latest_checkpoint(checkpoint_dir)
        return path

    def _restore(self, sess: Any, saver: Any, path: str) -> None:
        initializers = self._graph.get_collection(_SAVED_MODEL_INITIALIZERS)
        if initializers:
            sess.run(initializers)
        saver.restore(sess, path)
        logger.info("Restored model from %s", path)

    def _restore_checkpoint(
        self,
        master: str,
        saver: Any,
        checkpoint_dir: str | None,
        checkpoint_filename_with_path: str | None,
        wait_for_checkpoint: bool,
        max_wait_secs: float,
        config: Any,
    ) -> tuple[Any, bool]:
        sess = self._new_session(master, config)
        if checkpoint_dir and checkpoint_filename_with_path:
            raise ValueError("Can not provide both checkpoint_dir and checkpoint_filename_with_path.")
        saver = GraphSaver.wrap(saver)
        if not saver or not (checkpoint_dir or checkpoint_filename_with_path):
            return sess, False
        if checkpoint_filename_with_path:
            self._restore(sess, saver, checkpoint_filename_with_path)
            return sess, True
        assert checkpoint_dir is not None
        waited = 0.0
        path = self._latest(saver, checkpoint_dir)
        while not path:
            if not (wait_for_checkpoint and waited < max_wait_secs):
                return sess, False
            logger.info("Waiting for checkpoint to be available.")
            self._sleep(self._recovery_wait_secs)
            waited += self._recovery_wait_secs
            path = self._latest(saver, checkpoint_dir)
        self._restore(sess, saver, path)
        return sess, True

    def _try_run_local_init_op(self, sess: Any) -> tuple[bool, str | None]:
        if self._local_init_op is None:
            return True, None
        ready, message = _ready(self._ready_for_local_init_op, sess, "Model not ready for local init")
        if not ready:
            return False, message
        logger.info("Running local_init_op.")
        sess.run(
            self._local_init_op, feed_dict=self._local_init_feed_dict, options=self._local_init_run_options
        )
        logger.info("Done running local_init_op.")
        return True, None

    def prepare_session(
        self,
        master: str,
        init_op: Any = None,
        saver: Any = None,
        checkpoint_dir: str | None = None,
        checkpoint_filename_with_path: str | None = None,
        wait_for_checkpoint: bool = False,
        max_wait_secs: float = 7200,
        config: Any = None,
        init_feed_dict: Any = None,
        init_fn: Callable[[Any], Any] | None = None,
    ) -> Any:
        """A session with the model restored or initialized, local init run, and ready.

        Raises ``RuntimeError`` when nothing can initialize the model or the
        ops leave it not ready (naming the uninitialized variables).
        """
        sess, restored = self._restore_checkpoint(
            master,
            saver,
            checkpoint_dir,
            checkpoint_filename_with_path,
            wait_for_checkpoint,
            max_wait_secs,
            config,
        )
        if not restored:
            if init_op is None and not init_fn and self._local_init_op is None:
                raise RuntimeError(
                    "Model is not initialized and no init_op or init_fn or local_init_op was given"
                )
            if init_op is not None:
                sess.run(init_op, feed_dict=init_feed_dict)
            if init_fn:
                init_fn(sess)
        ok, message = self._try_run_local_init_op(sess)
        if not ok:
            raise RuntimeError(
                "Init operations did not make model ready for local_init.  Init op: "
                f"{_maybe_name(init_op)}, init fn: {init_fn}, error: {message}"
            )
        ready, message = _ready(self._ready_op, sess, "Model not ready")
        if not ready:
            raise RuntimeError(
                f"Init operations did not make model ready.  Init op: {_maybe_name(init_op)}, init fn: "
                f"{init_fn}, local_init_op: {self._local_init_op}, error: {message}"
            )
        return sess

    def wait_for_session(
        self, master: str, config: Any = None, max_wait_secs: float | None = float("inf")
    ) -> Any:
        """A session once the model is ready; ``tf.errors.DeadlineExceededError`` after ``max_wait_secs``."""
        if max_wait_secs is None:
            max_wait_secs = float("inf")
        deadline = self._clock() + max_wait_secs
        while True:
            sess = self._new_session(master, config)
            ok, not_ready_local = self._try_run_local_init_op(sess)
            not_ready = None
            if ok:
                ready, not_ready = _ready(self._ready_op, sess, "Model not ready")
                if ready:
                    return sess
            try:
                sess.close()
            except Exception:
                logger.debug("Ignoring an error while closing a session that was not ready", exc_info=True)
            if deadline - self._clock() - self._recovery_wait_secs < 0:
                raise tf.errors.DeadlineExceededError(
                    None, None, f"Session was not ready after waiting {int(max_wait_secs)} secs."
                )
            logger.info(
                "Waiting for model to be ready.  Ready_for_local_init_op:  %s, ready: %s",
                not_ready_local,
                not_ready,
            )
            self._sleep(self._recovery_wait_secs)
