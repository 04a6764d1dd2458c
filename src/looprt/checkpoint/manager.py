"""``CheckpointManager``: the facade over one directory's checkpoints.

It keeps what the index says (kept and preserved checkpoints, the N-hour
schedule, deletions under way) and runs each save through the protocol of
the other modules: ``commit`` writes one checkpoint and renames it into
place, ``retention`` rotates and replaces the index, then deletes what it no
longer keeps. A save that fails undoes what it did: a full disk raises
``ResourceExhaustedError``, an unwritable folder ``PermissionDeniedError``.
One manager, in one process, writes a directory at a time (as with TF).

``save_async`` writes in a background thread, at most one save in flight per
manager; a background failure is logged when it happens and raised by the
next save, ``wait_until_finished()`` or ``close()``.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from looprt.checkpoint import remote, remote_commit
from looprt.checkpoint.commit import (
    SaveProgress,
    Writer,
    check_writer,
    clean_stale,
    prepare_directory,
    raise_storage_error,
    write_checkpoint,
)
from looprt.checkpoint.faults import boundary
from looprt.checkpoint.format import INDEX, TMP_PREFIX, Record, is_plain_name, verify_checkpoint
from looprt.checkpoint.latest import CheckpointInfo, find_latest, known_damaged, list_checkpoints
from looprt.checkpoint.retention import (
    check_retention,
    delete_checkpoint,
    recover,
    rotate,
    set_aside,
    write_index,
)
from looprt.checkpoint.storage import Location, StorageOptions, is_url, join
from looprt.errors import OpError, UnavailableError

__all__ = ["CheckpointInfo", "CheckpointManager", "Writer"]

logger = logging.getLogger(__name__)


class CheckpointManager:
    """Writes, rotates, lists and finds the checkpoints of one directory.

    Keeps the newest ``max_to_keep`` checkpoints (None or 0: keep all) and,
    as TF's ``Saver`` does, one more every ``keep_checkpoint_every_n_hours``
    of training: a checkpoint about to be deleted is kept instead if it was
    written more than N hours after the last one kept that way (the first
    after N hours from when the manager was created). The list and the N-hour
    schedule are stored in the index, so a restarted job carries on rotating
    the checkpoints of its predecessor. ``clock`` gives the times (seconds).
    The directory is created by the first save (``create=False``: it must
    exist); merely opening, listing or searching it changes nothing.

    ``directory`` may be a URL (``s3://bucket/run``, ``gs://...``,
    ``memory://...``): it is then written through fsspec without rename, the
    manifest last (``remote_commit``); ``storage_options`` are passed to the
    fsspec filesystem (credentials, endpoint). See ``storage``.
    """

    def __init__(
        self,
        directory: str,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        basename: str = "model.ckpt",
        clock: Callable[[], float] = time.time,
        *,
        index_filename: str = INDEX,
        create: bool = True,
        storage_options: StorageOptions | None = None,
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path, got {type(directory).__name__} {directory!r}")
        if not is_plain_name(basename) or basename.startswith(TMP_PREFIX):
            raise ValueError(f"basename must be a plain file name not starting with '.tmp', got {basename!r}")
        if not is_plain_name(index_filename):
            raise ValueError(f"index_filename must be a plain file name, got {index_filename!r}")
        check_retention(max_to_keep, keep_checkpoint_every_n_hours)
        self.directory = os.fspath(directory)
        self.basename = basename
        self.max_to_keep = None if max_to_keep is None else int(max_to_keep)
        self.keep_checkpoint_every_n_hours = float(keep_checkpoint_every_n_hours)
        self.index_filename = index_filename
        self.create = create
        self._clock = clock
        self._lock = threading.Lock()
        self.storage_options = dict(storage_options or {})
        self._location = Location(self.directory, storage_options) if is_url(self.directory) else None
        first_keep_time = float(clock()) + self.keep_checkpoint_every_n_hours * 3600
        if self._location is not None:
            self._retained = remote_commit.recover(
                self._location, basename, index_filename, first_keep_time, clock
            )
        else:
            self._retained = recover(self.directory, basename, index_filename, first_keep_time, clock)
        self._async_lock = threading.Lock()
        self._in_flight: threading.Thread | None = None
        self._async_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<CheckpointManager {join(self.directory, self.basename)!r}>"

    # -- reading -----------------------------------------------------------------------

    @property
    def last_checkpoints(self) -> list[str]:
        """Paths of the checkpoints kept in rotation, oldest first (TF's ``Saver.last_checkpoints``)."""
        return [join(self.directory, r.name) for r in self._retained.kept]

    def latest_checkpoint(self, *, start_fresh_if_damaged: bool = False) -> str | None:
        """The newest checkpoint that verifies, or None; each one skipped is warned about.

        Raises ``DataLossError`` naming each checkpoint and its fault when the
        directory holds checkpoints and none verifies, unless
        ``start_fresh_if_damaged`` (then None). Either way the damaged ones
        are set aside as ``<name>.damaged`` by this process's next save.
        """
        if self._location is not None:
            return remote.find_latest(
                self.directory, self.basename, self.index_filename,
                start_fresh_if_damaged=start_fresh_if_damaged, storage_options=self.storage_options,
            )
        return find_latest(
            self.directory, self.basename, self.index_filename, start_fresh_if_damaged=start_fresh_if_damaged
        )

    def verify(self, path: str) -> str | None:
        """None if checkpoint ``path`` is intact, else the problem."""
        if is_url(path):
            directory, _, name = path.rstrip("/").rpartition("/")
            return remote.verify(Location(directory, self.storage_options), name)
        return verify_checkpoint(path)

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint folder of this basename, by step, verified (for listings).

        Each ``CheckpointInfo`` holds its path, step, time written, size in
        bytes, whether it verifies and, if not, why; checkpoints set aside as
        damaged (``<name>.damaged``) are listed with ``set_aside=True``. With
        ``create=False`` a missing directory lists nothing (no error).
        """
        return list_checkpoints(self.directory, self.basename, storage_options=self.storage_options)

    # -- writing -----------------------------------------------------------------------

    def save(
        self,
        state: Mapping[str, Any],
        step: int,
        writer: Writer,
        *,
        backend: str = "",
        update_index: bool = True,
        on_commit: Callable[[], None] | None = None,
    ) -> str:
        """Write ``state`` as checkpoint ``<basename>-<step>``; return its path.

        ``writer(state, folder)`` writes the payload files into ``folder`` and
        returns their names (``backend.save_payload``). With ``update_index``
        false the checkpoint is written but neither indexed nor rotated. Waits
        for a save in flight first, and raises its error if it failed. A full
        disk raises ``ResourceExhaustedError``, an unwritable folder
        ``PermissionDeniedError``; either way the directory is left as it was.
        ``on_commit()`` is called once the checkpoint is committed (indexed,
        or with ``update_index`` false renamed into place), before retention
        deletes older ones; a failure after that still raises.
        """
        name = self._name(step)
        check_writer(writer, state)
        self.wait_until_finished()
        self._save(state, name, writer, backend, update_index, on_commit)
        return join(self.directory, name)

    def save_async(
        self,
        state: Mapping[str, Any],
        step: int,
        writer: Writer,
        *,
        backend: str = "",
        update_index: bool = True,
        on_commit: Callable[[], None] | None = None,
    ) -> str:
        """Like ``save``, but the files are written by a background thread; returns the path at once.

        ``state`` must not change until the save is done: pass a copy
        (``backend.state_dict`` makes one). At most one save is in flight:
        this first waits for the previous one and raises its error, if any.
        Until the new checkpoint is committed, readers and retention see the
        previous ones. A failure is logged at once and raised by the next
        ``save``, ``save_async``, ``wait_until_finished`` or ``close``.
        ``on_commit`` is called as in ``save``, in the background thread.
        """
        name = self._name(step)
        check_writer(writer, state)
        with self._async_lock:
            self.wait_until_finished()
            thread = threading.Thread(
                target=self._save_in_background,
                args=(state, name, writer, backend, update_index, on_commit),
                name=f"looprt-save-{name}",
                daemon=False,  # the interpreter waits for a save in flight before exiting
            )
            self._in_flight = thread
            thread.start()
        return join(self.directory, name)

    def wait_until_finished(self) -> None:
        """Block until no save is in flight; raise the error of a background save that failed."""
        self.join()
        error, self._async_error = self._async_error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish a save in flight (raising its error); the manager stays usable."""
        self.wait_until_finished()

    def join(self) -> None:
        """Wait for the save in flight, if any, without raising its error.

        The error of a failed background save stays pending: the next
        ``save``, ``save_async``, ``wait_until_finished`` or ``close`` raises
        it. For readers that want the newest checkpoint on disk but must not
        take over a writer's error (``Saver.latest_checkpoint``).
        """
        thread = self._in_flight
        if thread is not None:
            thread.join()
            self._in_flight = None

    _join = join  # the name this had before it was public; kept for older callers

    def _save_in_background(
        self,
        state: Mapping[str, Any],
        name: str,
        writer: Writer,
        backend: str,
        update_index: bool,
        on_commit: Callable[[], None] | None,
    ) -> None:
        try:
            self._save(state, name, writer, backend, update_index, on_commit)
        except BaseException as e:  # noqa: BLE001 - kept and raised in the caller's thread by the next call
            path = join(self.directory, name)
            logger.error(
                "Background save of checkpoint %s failed: %s: %s (raised again by the next save or close)",
                path, type(e).__name__, e,
            )
            if hasattr(e, "add_note"):
                e.add_note(f"raised by the background save of checkpoint {path}")
            self._async_error = e

    def _name(self, step: int) -> str:
        if isinstance(step, bool):
            raise TypeError(f"a checkpoint step must be an int, got {step!r}")
        step = operator.index(step)
        if step < 0:
            raise ValueError(f"a checkpoint step must be >= 0, got {step}")
        return f"{self.basename}-{step}"

    def _save(
        self,
        state: Mapping[str, Any],
        name: str,
        writer: Writer,
        backend: str,
        update_index: bool,
        on_commit: Callable[[], None] | None,
    ) -> None:
        step = int(name.rpartition("-")[2])
        directory = self.directory
        progress = SaveProgress()
        if self._location is not None:
            self._save_remote(self._location, state, name, writer, backend, update_index, on_commit)
            return
        with self._lock:
            try:
                boundary("save.begin", name)
                prepare_directory(directory, self.create)
                clean_stale(directory)
                self._set_aside_damaged()
                self._finish_deletions(name)
                doomed: list[str] = []
                try:
                    when = write_checkpoint(
                        directory, state, step, name, writer,
                        backend=backend, now=self._clock, progress=progress,
                    )
                    if update_index:
                        doomed = self._index(Record(name, step, when), progress)
                except BaseException:
                    # A new checkpoint in place but not indexed goes; one that replaced a
                    # checkpoint of its step stays: it is as good.
                    if progress.renamed and not progress.indexed:
                        delete_checkpoint(directory, name)
                    raise
                if on_commit is not None:
                    on_commit()
                for doomed_name in doomed:
                    delete_checkpoint(directory, doomed_name)
                boundary("save.end", name)
            except OpError:
                raise
            except OSError as e:
                if progress.indexed:  # committed: only the steps after it failed
                    saved = f"checkpoint {name} was saved in {directory!r}"
                    raise OSError(e.errno, f"{saved}, but then: {e.strerror or e}") from e
                raise_storage_error(e, directory, name)

    def _save_remote(
        self,
        loc: Location,
        state: Mapping[str, Any],
        name: str,
        writer: Writer,
        backend: str,
        update_index: bool,
        on_commit: Callable[[], None] | None,
    ) -> None:
        """``_save`` at a URL: upload, manifest last, index, then retention (``remote_commit``)."""
        step = int(name.rpartition("-")[2])
        progress = SaveProgress()
        with self._lock:
            try:
                boundary("save.begin", name)
                remote_commit.clean_stale(loc, name)
                self._finish_deletions(name)
                when = remote_commit.write_checkpoint(
                    loc, state, step, name, writer, backend=backend, now=self._clock
                )
                doomed = self._index(Record(name, step, when), progress) if update_index else []
            except (OpError, ValueError, TypeError):
                raise
            except Exception as e:
                raise UnavailableError(
                    f"cannot save checkpoint {name} to {loc.url}: {type(e).__name__}: {e}. The "
                    "checkpoints committed before are intact; this one is complete or absent. "
                    "Check the store is reachable and the credentials (storage_options); "
                    "then save again."
                ) from e
            if on_commit is not None:
                on_commit()
            remote_commit.remove_replaced_attempts(loc, name)  # a save of a step saved before
            for doomed_name in doomed:
                remote_commit.delete_checkpoint(loc, doomed_name)
            boundary("save.end", name)

    def _index(self, new: Record, progress: SaveProgress) -> list[str]:
        """Make ``new`` the latest in the index, rotating; return the checkpoints to delete."""
        retained = rotate(
            self._retained,
            new,
            max_to_keep=self.max_to_keep,
            keep_every_seconds=self.keep_checkpoint_every_n_hours * 3600,
        )
        try:
            if self._location is not None:
                remote_commit.write_index(self._location, self.index_filename, retained, progress)
            else:
                write_index(self.directory, self.index_filename, retained, progress)
        finally:
            if progress.indexed:  # the index was replaced, even if a later step failed
                self._retained = retained  # what a failure leaves undeleted, the next save deletes
        return retained.deleting

    def _set_aside_damaged(self) -> None:
        """Rename the checkpoints that failed verification here to ``<name>.damaged``, out of rotation."""
        damaged = known_damaged(self.directory)
        if not damaged:
            return
        moved = {name for name, problem in damaged.items() if set_aside(self.directory, name, problem)}
        retained = self._retained
        self._retained = dataclasses.replace(
            retained,
            latest=None if retained.latest in moved else retained.latest,
            kept=[r for r in retained.kept if r.name not in moved],
            preserved=[r for r in retained.preserved if r.name not in moved],
            deleting=[n for n in retained.deleting if n not in moved],
        )

    def _finish_deletions(self, saving: str) -> None:
        """Delete what an interrupted rotation was deleting (named in the index), if still unused."""
        retained = self._retained
        keep = {r.name for r in (*retained.kept, *retained.preserved)} | {retained.latest, saving}
        for name in retained.deleting:
            if name not in keep and self._location is not None:
                remote_commit.delete_checkpoint(self._location, name)
            elif name not in keep:
                delete_checkpoint(self.directory, name)
        self._retained = dataclasses.replace(retained, deleting=[])
