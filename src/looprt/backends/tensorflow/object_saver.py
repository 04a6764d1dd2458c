"""``ObjectSaver``: a looprt program's live TF objects, checkpointed with ``tf.train.Checkpoint``.

See ``checkpoints.py`` for how TF's files get into looprt's crash-safe
checkpoint folders, and what TF's readers see.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from looprt.backends.tensorflow.checkpoints import ManagedSaver, step_of
from looprt.checkpoint import MANIFEST

__all__ = ["ObjectSaver", "is_trackable"]

logger = logging.getLogger(__name__)


PINNED_PREFIX = ".pinned-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def _remove_stale_pins(directory: str) -> None:
    """Pinned copies left by processes that are gone (a crash skips their cleanup)."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            if not entry.startswith(PINNED_PREFIX):
                continue
            pid = entry[len(PINNED_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)


def _pin(folder: str) -> str:
    """A private copy of checkpoint folder ``folder`` (hard links where possible); its TF prefix.

    ``tf.train.Checkpoint`` reads the values of objects created after the
    restore (a Keras optimizer's slots, made at its first step) from the
    files only then; meanwhile ``CheckpointSaverHook`` re-saves the same step
    when the session is created, replacing the folder with one that lacks
    them. The pinned copy keeps what was restored from. Its name is one the
    checkpoint manager neither lists nor cleans up.
    """
    folder = os.path.normpath(folder)
    parent, name = os.path.split(folder)
    _remove_stale_pins(parent)
    pinned = tempfile.mkdtemp(prefix=f"{PINNED_PREFIX}{os.getpid()}-", suffix=".d", dir=parent)
    for entry in os.listdir(folder):
        if entry == MANIFEST:
            continue
        src, dst = os.path.join(folder, entry), os.path.join(pinned, entry)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return os.path.join(pinned, name)


def is_trackable(value: Any) -> bool:
    """Whether ``tf.train.Checkpoint`` can hold ``value`` (variables, Keras objects, modules)."""
    return isinstance(value, tf.__internal__.tracking.Trackable)


class ObjectSaver(ManagedSaver):
    """Checkpoints a looprt program's state with ``tf.train.Checkpoint`` (the eager backend's saver).

    Trackable state (``tf.Variable``, Keras models and optimizers,
    ``tf.Module``) goes into one ``tf.train.Checkpoint(**{name: obj})``, so a
    plain TF program restores it with the same names; other state (NumPy
    arrays, numbers) goes into the NumPy backend's files beside it. Restoring
    is all or nothing: on any error the state is put back as it was. Values of
    objects not built yet (a Keras optimizer before its first step) are
    restored when TF creates them, as ``tf.train.Checkpoint`` does.
    """

    def __init__(
        self,
        program: Any,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(max_to_keep, keep_checkpoint_every_n_hours, clock)
        self._program = getattr(program, "program", program)
        self._pinned: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<ObjectSaver of {self._program!r}>"

    def _pin_for_reading(self, save_path: str) -> str:
        """Read a looprt folder through a pinned copy (see ``_pin``), kept until the next restore.

        A checkpoint at a URL is read from its verified download, a private copy already.
        """
        prefix, download = self.readable_prefix(save_path)
        if self._pinned is not None:
            self._pinned()
            self._pinned = None
        if download is not None:
            self._pinned = weakref.finalize(self, shutil.rmtree, download, True)
            return prefix
        if not os.path.isdir(save_path):
            return prefix
        pinned = _pin(save_path)
        self._pinned = weakref.finalize(self, shutil.rmtree, os.path.dirname(pinned), True)
        return pinned

    @property
    def program(self) -> Any:
        return self._program

    def _split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        trackable: dict[str, Any] = {}
        other: dict[str, Any] = {}
        for name, state in self._program.states.items():
            (trackable if is_trackable(state.value) else other)[name] = state
        return trackable, other

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
    ) -> str:
        """Write checkpoint ``<save_path>-<step>`` (step: ``global_step`` or the program's); return it.

        The meta-graph and debug-info arguments of TF's ``Saver.save`` are
        accepted and ignored (an eager program has no graph).
        """
        from looprt.backends.numpy import NumpyBackend

        program = self._program
        step = step_of(sess, program.global_step.value.numpy() if global_step is None else global_step)
        trackable, other = self._split()
        backend = program.backend
        extra = {name: backend.snapshot(state.value) for name, state in other.items()}

        def write(prefix: str) -> str:
            written: str = tf.train.Checkpoint(**{name: s.value for name, s in trackable.items()}).write(
                prefix
            )
            if extra:
                NumpyBackend().save_payload(extra, os.path.dirname(prefix))
            return written

        path = self.save_with(save_path, step, write, write_state)
        assert path is not None  # a program always has its global step to write
        return path

    def restore(self, sess: Any, save_path: str | None) -> None:
        """Set the program's state from ``save_path`` (a checkpoint folder or TF prefix), all or nothing."""
        from looprt.backends.numpy import NumpyBackend

        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        prefix = self._pin_for_reading(os.fspath(save_path))
        program = self._program
        backend = program.backend
        trackable, other = self._split()
        before = backend.state_dict(program)
        try:
            status = tf.train.Checkpoint(**{name: s.value for name, s in trackable.items()}).read(prefix)
            status.assert_existing_objects_matched()
            status.expect_partial()  # values of objects built later are restored on creation
            if other:
                values = NumpyBackend().load_payload(os.path.dirname(prefix))
                for name, state in other.items():
                    backend.assign(state, values[name])
        except BaseException as e:
            backend.load_state_dict(program, before)
            if hasattr(e, "add_note"):
                e.add_note(f"while restoring checkpoint {save_path!r}; the state was left unchanged")
            raise
        logger.info("Restored %s from %s", program.name, save_path)
