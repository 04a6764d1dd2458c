"""``Saver``, TF's API over ``CheckpointManager``, and ``ManagerCache``, its managers by save path.

``Saver.save_async`` (a looprt extension) takes the state's host copy at once
and writes it in the background; ``wait_until_finished()`` or ``close()``
waits for it and raises its error, as does the next save.

A restore reads the checkpoint once for the backend and once for its
checksums, at the same time (in two threads), and sets no state until both
are done. It makes a copy of the live state to roll back to only for a
backend that cannot check every value before it assigns the first (one
without ``check_assign``): that copy is a whole model's worth of memory.
"""

from __future__ import annotations

import logging
import operator
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from looprt.checkpoint.format import take_recent_verification, verify_checkpoint
from looprt.checkpoint.latest import latest_checkpoint, resolve_checkpoint
from looprt.checkpoint.manager import CheckpointManager
from looprt.checkpoint.remote import open_verified
from looprt.checkpoint.retention import check_retention
from looprt.checkpoint.storage import StorageOptions, is_url, normalize, split
from looprt.errors import DataLossError, NotFoundError

logger = logging.getLogger(__name__)


class ManagerCache:
    """One ``CheckpointManager`` per directory and basename of a save path, made on first use."""

    def __init__(
        self,
        max_to_keep: int | None,
        keep_checkpoint_every_n_hours: float,
        clock: Callable[[], float],
        storage_options: StorageOptions | None = None,
    ) -> None:
        self._storage_options = storage_options
        self._max_to_keep = max_to_keep
        self._keep_every = keep_checkpoint_every_n_hours
        self._clock = clock
        self._managers: dict[tuple[str, str], CheckpointManager] = {}
        self._lock = threading.Lock()

    def get(self, save_path: Any) -> CheckpointManager:
        """The manager of ``save_path`` ("<dir>/<basename>")."""
        if not isinstance(save_path, (str, os.PathLike)):
            raise TypeError(
                f"save_path must be a path such as '<dir>/model.ckpt', got {type(save_path).__name__}"
            )
        save_path = os.fspath(save_path)
        directory, basename = split(save_path)
        if not basename:
            raise ValueError(f"save_path must end in a file name such as 'model.ckpt', got {save_path!r}")
        key = (normalize(directory or "."), basename)
        with self._lock:
            manager = self._managers.get(key)
            if manager is None:
                manager = self._managers[key] = CheckpointManager(
                    directory or ".",
                    max_to_keep=self._max_to_keep,
                    keep_checkpoint_every_n_hours=self._keep_every,
                    basename=basename,
                    clock=self._clock,
                    storage_options=self._storage_options,
                )
        return manager

    def values(self) -> list[CheckpointManager]:
        """Every manager made so far."""
        with self._lock:
            return list(self._managers.values())


class Saver:
    """Saves and restores a program's state; ``tf.compat.v1.train.Saver``'s methods.

    ``save(sess, "<dir>/model.ckpt", global_step=N)`` writes checkpoint folder
    ``<dir>/model.ckpt-N`` through a ``CheckpointManager`` (one per directory
    and basename, kept by this saver) and returns its path. ``restore``
    verifies the checkpoint while reading all of it, and only then sets the
    state: a missing checkpoint raises ``NotFoundError``, a damaged one
    ``DataLossError``, and neither changes any state.

    ``latest_checkpoint`` (what a session restores) raises ``DataLossError``
    naming each checkpoint and its fault when a directory holds checkpoints
    and none verifies; ``start_fresh_if_damaged=True`` starts from scratch
    instead. Either way the damaged ones are set aside as ``<name>.damaged``
    by the next save, never deleted.

    The program is told of every checkpoint (``Program.note_checkpoint``):
    once a save commits, and once a restore has set the state, so that it
    can drop its copy of the initial values.

    ``save_async`` (a looprt extension) takes the state's host copy at once
    and writes it in the background; ``wait_until_finished()`` or ``close()``
    waits for it and raises its error, as does the next save.

    Save paths may be URLs (``s3://bucket/run/model.ckpt``): checkpoints are
    then uploaded without rename, the manifest last, and restored from a
    verified download; ``storage_options`` go to the fsspec filesystem.
    """

    def __init__(
        self,
        program: Any,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        *,
        start_fresh_if_damaged: bool = False,
        clock: Callable[[], float] = time.time,
        storage_options: StorageOptions | None = None,
    ) -> None:
        self._storage_options = storage_options
        self._start_fresh_if_damaged = bool(start_fresh_if_damaged)
        self._program = getattr(program, "program", program)
        if not hasattr(self._program, "backend") or not hasattr(self._program, "states"):
            raise TypeError(f"Saver needs a looprt Program (or a Step of one), got {program!r}")
        self._managers = ManagerCache(max_to_keep, keep_checkpoint_every_n_hours, clock, storage_options)
        self._last_manager: CheckpointManager | None = None
        check_retention(max_to_keep, keep_checkpoint_every_n_hours)  # now, not at the first save

    def __repr__(self) -> str:
        return f"<Saver of {self._program!r}>"

    @property
    def program(self) -> Any:
        return self._program

    def manager(self, save_path: str) -> CheckpointManager:
        """The manager of the directory and basename of ``save_path`` ("<dir>/<basename>")."""
        return self._managers.get(save_path)

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
        """Write a checkpoint of the program's state; return its path.

        ``global_step`` is an int, or something ``sess.run`` evaluates (the
        global step handle); without it the program's own global step names
        the checkpoint (TF would write ``save_path`` itself). With
        ``write_state`` false the index is not updated and nothing is rotated.
        The meta graph and debug-info arguments are accepted and ignored.
        ``Program.note_checkpoint()`` is called once the checkpoint commits,
        before this returns.
        """
        self.wait_until_finished()
        manager, state, step, backend = self._stage(sess, save_path, global_step, shared=True)
        path = manager.save(
            state,
            step,
            backend.save_payload,
            backend=backend.name,
            update_index=write_state,
            on_commit=self._program.note_checkpoint,
        )
        self._last_manager = manager
        return path

    def save_async(self, sess: Any, save_path: str, global_step: Any = None, write_state: bool = True) -> str:
        """Take a host copy of the state now, write it in a background thread; return its path.

        At most one save of this saver is in flight: this first waits for the
        previous one and raises its error, if any. The checkpoint becomes
        visible to readers once committed; ``Program.note_checkpoint()`` is
        called then, in the background thread, and not at all if the save
        fails (the program keeps its initial values until a save commits).
        """
        self.wait_until_finished()
        manager, state, step, backend = self._stage(sess, save_path, global_step)
        path = manager.save_async(
            state,
            step,
            backend.save_payload,
            backend=backend.name,
            update_index=write_state,
            on_commit=self._program.note_checkpoint,
        )
        self._last_manager = manager
        return path

    def _stage(
        self, sess: Any, save_path: str, global_step: Any, *, shared: bool = False
    ) -> tuple[CheckpointManager, Any, int, Any]:
        """The manager, state, step and backend of a save; ``shared``: the state may share live memory.

        A synchronous save writes before training goes on, so it takes the
        backend's ``state_view`` (no copy) where the backend has one; an
        async save takes ``state_dict``, a host copy.
        """
        if save_path is None:
            raise ValueError("save_path must be a path such as '<dir>/model.ckpt', not None")
        manager = self.manager(save_path)
        program = self._program
        backend = program.backend
        view = getattr(backend, "state_view", None) if shared else None
        state = backend.state_dict(program) if view is None else view(program)
        if global_step is None:
            global_step = state["global_step"]
        if isinstance(global_step, bool):
            raise TypeError(f"global_step must be an int or the global step handle, got {global_step!r}")
        try:
            step = operator.index(global_step)
        except TypeError:
            if sess is None or not hasattr(sess, "run"):
                raise TypeError(
                    "global_step must be an int or, with a session, the global step handle; "
                    f"got {global_step!r}"
                ) from None
            step = operator.index(sess.run(global_step))
        return manager, state, step, backend

    def wait_until_finished(self) -> None:
        """Block until no save of this saver is in flight; raise the error of one that failed."""
        errors = []
        for manager in self._managers.values():
            try:
                manager.wait_until_finished()
            except BaseException as e:  # noqa: BLE001 - wait for every manager, then raise the first
                errors.append(e)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Finish any save in flight, raising its error (``wait_until_finished``)."""
        self.wait_until_finished()

    def restore(self, sess: Any, save_path: str | None) -> None:
        """Set the program's state from checkpoint ``save_path``, all or nothing.

        The checksums are verified once, while the backend reads the files;
        a missing checkpoint raises ``NotFoundError``, a damaged one or one
        the backend cannot read ``DataLossError``, before any state changes.
        A backend with ``check_assign`` rejects values that do not fit (a
        missing key, a wrong shape) before it assigns any; for one without,
        the live state is copied first and put back if loading fails.
        Then ``Program.note_checkpoint(restored=True)`` is called.
        """
        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        if not isinstance(save_path, (str, os.PathLike)):
            raise TypeError(f"save_path must be a checkpoint path, got {type(save_path).__name__}")
        save_path = os.fspath(save_path)
        program = self._program
        backend = program.backend
        logger.info("Restoring parameters from %s", save_path)
        values = _read_verified(backend, resolve_checkpoint(save_path), self._storage_options)
        if getattr(backend, "check_assign", None) is not None:
            backend.load_state_dict(program, values)  # checks every value before it assigns one
        else:
            before = backend.state_dict(program)
            try:
                backend.load_state_dict(program, values)
            except BaseException as e:
                backend.load_state_dict(program, before)  # all or nothing
                if hasattr(e, "add_note"):
                    e.add_note(f"while restoring checkpoint {save_path!r}; the state was left unchanged")
                raise
        program.note_checkpoint(restored=True)

    def latest_checkpoint(self, checkpoint_dir: str, latest_filename: str | None = None) -> str | None:
        """The newest valid checkpoint in ``checkpoint_dir``, or None.

        A save of this saver in flight is waited for first (its error, if
        any, is kept for the next save), so a session that recovers restores
        the newest state. Checkpoints there, none valid: ``DataLossError``,
        or None with ``start_fresh_if_damaged``.
        """
        for manager in self._managers.values():
            manager.join()
        return latest_checkpoint(
            checkpoint_dir,
            latest_filename,
            start_fresh_if_damaged=self._start_fresh_if_damaged,
            storage_options=self._storage_options,
        )

    @property
    def last_checkpoints(self) -> list[str]:
        """Checkpoints kept in rotation by the last save, oldest first."""
        return [] if self._last_manager is None else self._last_manager.last_checkpoints


def _read_verified(backend: Any, path: str, storage_options: StorageOptions | None = None) -> Any:
    """``backend.load_payload(path)``, with the checkpoint verified (``verify_checkpoint``) meanwhile.

    The checksums are computed in a second thread while the backend reads,
    so that a restore reads the files at about the speed of the backend
    alone; what the backend read is returned only if they match. A folder
    that ``latest_checkpoint`` verified a moment ago, unchanged since
    (``take_recent_verification``), is not verified again. A URL is
    downloaded and verified first (or reuses the download that verified it).
    """
    if is_url(path):
        return _read_remote(backend, path, storage_options)
    if take_recent_verification(path):  # latest_checkpoint just verified it, and nothing changed since
        try:
            return backend.load_payload(path)
        except Exception as e:
            if not os.path.lexists(path):  # deleted meanwhile (another job's retention?)
                raise NotFoundError(f"checkpoint {path!r} not found: it was deleted while read") from e
            raise DataLossError(
                f"checkpoint {path!r} is intact, but backend {backend.name!r} cannot read it: {e}"
            ) from e
    problems: list[str | None] = []
    verifier = threading.Thread(
        target=lambda: problems.append(verify_checkpoint(path, remember=False)),
        name="looprt-verify",
        daemon=True,
    )
    verifier.start()
    error: Exception | None = None
    values: Any = None
    try:
        if os.path.isdir(path):  # else there is nothing to read: the verifier says why
            values = backend.load_payload(path)
    except Exception as e:  # noqa: BLE001 - reported below, after the verifier's verdict
        error = e
    finally:
        verifier.join()
    problem = problems[0] if problems else "its checksums could not be computed"
    if problem is not None:
        if not os.path.lexists(path):
            raise NotFoundError(f"checkpoint {path!r} not found: {problem}") from error
        raise DataLossError(f"checkpoint {path!r} cannot be restored: {problem}") from error
    if error is not None:
        raise DataLossError(
            f"checkpoint {path!r} is intact, but backend {backend.name!r} cannot read it: {error}"
        ) from error
    return values


def _read_remote(backend: Any, url: str, storage_options: StorageOptions | None) -> Any:
    """``backend.load_payload`` of checkpoint ``url``, from a verified local download."""
    try:
        folder, tmp, problem = open_verified(url, storage_options)
    except OSError as e:
        raise DataLossError(f"checkpoint {url!r} cannot be downloaded: {e}") from e
    try:
        if problem is not None:
            if "manifest.json is missing" in problem:
                raise NotFoundError(f"checkpoint {url!r} not found: {problem}")
            raise DataLossError(f"checkpoint {url!r} cannot be restored: {problem}")
        try:
            return backend.load_payload(folder)
        except Exception as e:
            raise DataLossError(
                f"checkpoint {url!r} is intact, but backend {backend.name!r} cannot read it: {e}"
            ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
