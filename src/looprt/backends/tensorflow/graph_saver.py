"""``GraphSaver``: a ``tf.compat.v1.train.Saver`` whose checkpoints go through looprt's manager.

See ``checkpoints.py`` for how TF's files get into looprt's crash-safe
checkpoint folders, and what TF's readers see.
"""

from __future__ import annotations

import shutil
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import tensorflow as tf

from looprt.backends.tensorflow.checkpoints import ManagedSaver, step_of

__all__ = ["GraphSaver"]

# The drop-in logs where TF logs, so tf.compat.v1.logging's verbosity governs its lines.
logger = tf.get_logger()


class GraphSaver(ManagedSaver):
    """A ``tf.compat.v1.train.Saver`` whose checkpoints go through looprt's manager.

    Same ``save`` / ``restore`` calls as TF's Saver; ``save`` returns the
    checkpoint folder, which ``restore`` (and TF's readers) accept, as well
    as plain TF prefixes. Retention follows the TF saver's ``max_to_keep`` and
    ``keep_checkpoint_every_n_hours``. Every other attribute (``saver_def``,
    ``build``, ``export_meta_graph``, ...) is the TF saver's. Use ``wrap``:
    one ``GraphSaver`` per TF saver, so one manager keeps each directory.
    """

    _wrappers: ClassVar[weakref.WeakKeyDictionary[Any, GraphSaver]] = weakref.WeakKeyDictionary()
    _wrappers_lock = threading.Lock()

    def __init__(self, saver: Any, *, clock: Callable[[], float] = time.time) -> None:
        self._saver = saver
        saver_def = saver.saver_def  # None only for a saver of no variables (TF's allow_empty)
        if saver_def is None:
            super().__init__(5, 10000.0, clock)
        else:
            super().__init__(saver_def.max_to_keep, saver_def.keep_checkpoint_every_n_hours, clock)

    @classmethod
    def wrap(cls, saver: Any) -> Any:
        """The ``GraphSaver`` of a TF ``Saver`` (made once); anything else is returned as it is."""
        if not isinstance(saver, tf.compat.v1.train.Saver):
            return saver
        with cls._wrappers_lock:
            wrapper = cls._wrappers.get(saver)
            if wrapper is None:
                if saver.saver_def is None:
                    saver.build()  # TF's Scaffold builds deferred savers; so must a bare one
                wrapper = cls._wrappers[saver] = cls(saver)
            return wrapper

    @property
    def tf_saver(self) -> Any:
        """The wrapped ``tf.compat.v1.train.Saver``."""
        return self._saver

    def __getattr__(self, name: str) -> Any:
        # Only what the class lacks gets here; never its own private state (while unpickling).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._saver, name)

    def __repr__(self) -> str:
        return f"<GraphSaver of {self._saver!r}>"

    def save(
        self,
        sess: Any,
        save_path: str,
        global_step: Any = None,
        latest_filename: str | None = None,
        meta_graph_suffix: str = "meta",
        write_meta_graph: bool = True,
        write_state: bool = True,
        strip_default_attrs: bool = False,
        save_debug_info: bool = False,
    ) -> str | None:
        """Save as TF's ``Saver.save``; returns the checkpoint folder (None for an empty saver).

        Without ``global_step`` the graph's global step names the checkpoint;
        a graph without one gets TF's own save at ``save_path``, untouched.
        """
        if global_step is None:
            global_step = tf.compat.v1.train.get_global_step(sess.graph)
            if global_step is None:
                logger.warning(
                    "Saving %s with TF's own Saver: the graph has no global step to name a "
                    "looprt checkpoint by.",
                    save_path,
                )
                path: str | None = self._saver.save(
                    sess,
                    save_path,
                    None,
                    latest_filename,
                    meta_graph_suffix,
                    write_meta_graph,
                    write_state,
                    strip_default_attrs,
                    save_debug_info,
                )
                return path
        step = step_of(sess, global_step)

        def write(prefix: str) -> str | None:
            return self._saver.save(  # type: ignore[no-any-return]
                sess,
                prefix,
                meta_graph_suffix=meta_graph_suffix,
                write_meta_graph=write_meta_graph,
                write_state=False,  # TF's state file and rotation are the manager's job here
                strip_default_attrs=strip_default_attrs,
                save_debug_info=save_debug_info,
            )

        return self.save_with(save_path, step, write, write_state)

    def restore(self, sess: Any, save_path: str | None) -> None:
        """Restore a checkpoint folder (verified first) or a plain TF prefix, as TF's ``Saver.restore``.

        A checkpoint at a URL is downloaded and verified first; TF reads the download.
        """
        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        prefix, download = self.readable_prefix(save_path)
        try:
            self._saver.restore(sess, prefix)
        finally:
            if download is not None:  # a checkpoint at a URL, read from its verified download
                shutil.rmtree(download, ignore_errors=True)

    def recover_last_checkpoints(self, checkpoint_paths: Any) -> None:
        """Nothing to do: the manager reads its checkpoints back from the index."""

    def set_last_checkpoints(self, last_checkpoints: Any) -> None:
        """Nothing to do: the manager keeps the list (in the index)."""

    def set_last_checkpoints_with_time(self, last_checkpoints_with_time: Any) -> None:
        """Nothing to do: the manager keeps the list (in the index)."""
