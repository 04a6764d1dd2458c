"""``CheckpointManager``: writes, rotates, lists and finds the checkpoints of one directory.

A save writes into a fresh ``.tmp*`` folder, fsyncs every file, the manifest
and the folder, renames the folder into place, and only then atomically
replaces the index ``checkpoint.json``. A crash at any point leaves the
previous checkpoints and index in view; leftover ``.tmp*`` entries are cleaned
up by the next save. A save that fails undoes what it did: a full disk raises
``ResourceExhaustedError``, an unwritable folder ``PermissionDeniedError``.
One manager, in one process, writes a directory at a time (as with TF).

Retention writes the index first, naming the checkpoints it is about to
delete, then deletes them; deletions a crash interrupted are finished by the
next save. Replacing a checkpoint of the same step moves the old folder aside
first; readers use that copy if a crash left it there.

``save_async`` writes in a background thread, at most one save in flight per
manager; a background failure is logged when it happens and raised by the
next save, ``wait_until_finished()`` or ``close()``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import numbers
import operator
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

from looprt.checkpoint.faults import _boundary
from looprt.checkpoint.files import _folder_size, _fsync_dir, _fsync_file, _remove
from looprt.checkpoint.format import (
    _TMP_NAME,
    CHECKSUMS,
    FORMAT_VERSION,
    INDEX,
    MANIFEST,
    TMP_PREFIX,
    WRITE_CHECKSUM,
    _is_plain_name,
    _json_with_checksum,
    _read_index,
    _read_manifest,
    _Record,
    _safe_relative,
    verify_checkpoint,
)
from looprt.checkpoint.latest import _displaced_copy, _find_latest, _scan, _warn
from looprt.errors import (
    FailedPreconditionError,
    OpError,
    PermissionDeniedError,
    ResourceExhaustedError,
)

logger = logging.getLogger("looprt.checkpoint")

Writer = Callable[[Mapping[str, Any], str], Iterable[str]]

_DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint folder as ``CheckpointManager.checkpoints()`` lists it."""

    path: str
    step: int | None
    time: float | None
    size: int
    valid: bool
    problem: str | None


# Temporary paths being written right now by some manager of this process:
# stale-entry cleanup never touches these.
_in_use: set[str] = set()
_in_use_lock = threading.Lock()


def _check_writer(writer: Any, state: Any) -> None:
    if not callable(writer):
        raise TypeError(f"writer must be a function (state, folder) -> file names, got {writer!r}")
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to values, got {type(state).__name__}")


def _check_retention(max_to_keep: Any, keep_checkpoint_every_n_hours: Any) -> None:
    if max_to_keep is not None and (
        isinstance(max_to_keep, bool) or not isinstance(max_to_keep, numbers.Integral) or max_to_keep < 0
    ):
        raise ValueError(f"max_to_keep must be None or an int >= 0, got {max_to_keep!r}")
    hours = keep_checkpoint_every_n_hours
    real = isinstance(hours, numbers.Real) and not isinstance(hours, bool)
    if not real or not float(hours) >= 0:  # NaN fails >=
        raise ValueError(f"keep_checkpoint_every_n_hours must be a number >= 0, got {hours!r}")


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
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path, got {type(directory).__name__} {directory!r}")
        if not _is_plain_name(basename) or basename.startswith(TMP_PREFIX):
            raise ValueError(f"basename must be a plain file name not starting with '.tmp', got {basename!r}")
        if not _is_plain_name(index_filename):
            raise ValueError(f"index_filename must be a plain file name, got {index_filename!r}")
        _check_retention(max_to_keep, keep_checkpoint_every_n_hours)
        self.directory = os.fspath(directory)
        self.basename = basename
        self.max_to_keep = None if max_to_keep is None else int(max_to_keep)
        self.keep_checkpoint_every_n_hours = float(keep_checkpoint_every_n_hours)
        self.index_filename = index_filename
        self.create = create
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: str | None = None
        self._kept: list[_Record] = []
        self._preserved: list[_Record] = []
        self._deleting: list[str] = []
        self._next_keep_time = float(clock()) + self.keep_checkpoint_every_n_hours * 3600
        self._async_lock = threading.Lock()
        # In the save under way: the checkpoint renamed into place without replacing one,
        # and the checkpoint the index was replaced for.
        self._renamed: str | None = None
        self._indexed: str | None = None
        self._in_flight: threading.Thread | None = None
        self._async_error: BaseException | None = None
        self._recover()

    def __repr__(self) -> str:
        return f"<CheckpointManager {os.path.join(self.directory, self.basename)!r}>"

    # -- state carried over from an earlier run ---------------------------------------

    def _recover(self) -> None:
        index, problem = _read_index(self.directory, self.index_filename)
        if problem is not None:
            _warn(
                f"checkpoint index {os.path.join(self.directory, self.index_filename)} {problem}; "
                f"rebuilding the list of checkpoints from the folders in {self.directory}"
            )
        if index is None:
            scanned = _scan(self.directory, self.basename)
            self._kept = [_Record(name, step, self._time_of(name)) for step, name in scanned]
            self._latest = self._kept[-1].name if self._kept else None
            return
        exists = self._exists
        self._kept = [r for r in index.kept if exists(r.name)]
        self._preserved = [r for r in index.preserved if exists(r.name)]
        self._latest = index.latest
        self._deleting = list(index.deleting)
        if index.next_keep_time is not None:
            self._next_keep_time = index.next_keep_time

    def _exists(self, name: str) -> bool:
        # A checkpoint moved aside by an interrupted replacement is put back by the next save.
        return os.path.isdir(os.path.join(self.directory, name)) or (
            _displaced_copy(self.directory, name) is not None
        )

    def _time_of(self, name: str) -> float:
        manifest, _ = _read_manifest(os.path.join(self.directory, name))
        if manifest is not None:
            return float(manifest["time"])
        try:
            return os.path.getmtime(os.path.join(self.directory, name))
        except OSError:
            return self._clock()

    # -- reading -----------------------------------------------------------------------

    @property
    def last_checkpoints(self) -> list[str]:
        """Paths of the checkpoints kept in rotation, oldest first (TF's ``Saver.last_checkpoints``)."""
        return [os.path.join(self.directory, r.name) for r in self._kept]

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint that verifies, or None; each one skipped is warned about."""
        return _find_latest(self.directory, self.basename, self.index_filename)

    def verify(self, path: str) -> str | None:
        """None if checkpoint ``path`` is intact, else the problem."""
        return verify_checkpoint(path)

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint folder of this basename, by step, verified (for listings)."""
        infos = []
        for step, name in _scan(self.directory, self.basename):
            path = os.path.join(self.directory, name)
            problem = verify_checkpoint(path)
            manifest, _ = _read_manifest(path)
            when = float(manifest["time"]) if manifest is not None else None
            infos.append(CheckpointInfo(path, step, when, _folder_size(path), problem is None, problem))
        return infos

    # -- writing -----------------------------------------------------------------------

    def save(
        self,
        state: Mapping[str, Any],
        step: int,
        writer: Writer,
        *,
        backend: str = "",
        update_index: bool = True,
    ) -> str:
        """Write ``state`` as checkpoint ``<basename>-<step>``; return its path.

        ``writer(state, folder)`` writes the payload files into ``folder`` and
        returns their names (``backend.save_payload``). With ``update_index``
        false the checkpoint is written but neither indexed nor rotated. Waits
        for a save in flight first, and raises its error if it failed. A full
        disk raises ``ResourceExhaustedError``, an unwritable folder
        ``PermissionDeniedError``; either way the directory is left as it was.
        """
        name = self._name(step)
        _check_writer(writer, state)
        self.wait_until_finished()
        self._save(state, name, writer, backend, update_index)
        return os.path.join(self.directory, name)

    def save_async(
        self,
        state: Mapping[str, Any],
        step: int,
        writer: Writer,
        *,
        backend: str = "",
        update_index: bool = True,
    ) -> str:
        """Like ``save``, but the files are written by a background thread; returns the path at once.

        ``state`` must not change until the save is done: pass a copy
        (``backend.state_dict`` makes one). At most one save is in flight:
        this first waits for the previous one and raises its error, if any.
        Until the new checkpoint is committed, readers and retention see the
        previous ones. A failure is logged at once and raised by the next
        ``save``, ``save_async``, ``wait_until_finished`` or ``close``.
        """
        name = self._name(step)
        _check_writer(writer, state)
        with self._async_lock:
            self.wait_until_finished()
            thread = threading.Thread(
                target=self._save_in_background,
                args=(state, name, writer, backend, update_index),
                name=f"looprt-save-{name}",
                daemon=False,  # the interpreter waits for a save in flight before exiting
            )
            self._in_flight = thread
            thread.start()
        return os.path.join(self.directory, name)

    def wait_until_finished(self) -> None:
        """Block until no save is in flight; raise the error of a background save that failed."""
        self._join()
        error, self._async_error = self._async_error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish a save in flight (raising its error); the manager stays usable."""
        self.wait_until_finished()

    def _join(self) -> None:
        """Wait for the save in flight, if any; its error stays pending."""
        thread = self._in_flight
        if thread is not None:
            thread.join()
            self._in_flight = None

    def _save_in_background(
        self, state: Mapping[str, Any], name: str, writer: Writer, backend: str, update_index: bool
    ) -> None:
        try:
            self._save(state, name, writer, backend, update_index)
        except BaseException as e:  # noqa: BLE001 - kept and raised in the caller's thread by the next call
            path = os.path.join(self.directory, name)
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
        self, state: Mapping[str, Any], name: str, writer: Writer, backend: str, update_index: bool
    ) -> None:
        step = int(name.rpartition("-")[2])
        with self._lock:
            self._indexed = self._renamed = None
            try:
                _boundary("save.begin", name)
                self._prepare_directory()
                self._clean_stale()
                self._finish_deletions(name)
                try:
                    now = self._write_checkpoint(state, step, name, writer, backend)
                    if update_index:
                        self._record(name, step, now)
                except BaseException:
                    self._roll_back(name)
                    raise
                _boundary("save.end", name)
            except OpError:
                raise
            except OSError as e:
                if self._indexed == name:  # committed: only the steps after it failed
                    saved = f"checkpoint {name} was saved in {self.directory!r}"
                    raise OSError(e.errno, f"{saved}, but then: {e.strerror or e}") from e
                self._raise_storage_error(e, name)

    def _roll_back(self, name: str) -> None:
        """After a failed save, remove its new checkpoint if renamed into place but not indexed.

        A checkpoint that replaced one of the same step stays: it is as good.
        """
        if self._renamed == name and self._indexed != name:
            self._delete(name)

    def _prepare_directory(self) -> None:
        directory = self.directory
        if not self.create and not os.path.isdir(directory):
            raise FailedPreconditionError(f"cannot save checkpoints in {directory!r}: no such folder")
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise FailedPreconditionError(
                f"cannot save checkpoints in {directory!r}: it (or a parent) is a file, not a folder"
            ) from e
        except OSError as e:
            self._raise_storage_error(e, None)
        if not os.path.isdir(directory):
            raise FailedPreconditionError(f"cannot save checkpoints in {directory!r}: it is not a folder")

    def _raise_storage_error(self, error: OSError, name: str | None) -> NoReturn:
        """Raise ``error``, as TF's error for it when it means the folder is unwritable or full."""
        what = f"checkpoint {name} in {self.directory!r}" if name else f"checkpoints in {self.directory!r}"
        if isinstance(error, PermissionError) or error.errno in _DENIED:
            raise PermissionDeniedError(
                f"cannot save {what}: it is not writable ({error.strerror or error}); "
                "the checkpoints there were left as they were"
            ) from error
        if error.errno in _FULL:
            raise ResourceExhaustedError(
                f"cannot save {what}: the disk is full ({error.strerror or error}); the checkpoints "
                "there were left as they were. Free space, or keep fewer (max_to_keep)."
            ) from error
        raise error

    def _new_tmp(self, kind: str, name: str, folder: bool) -> str:
        while True:
            path = os.path.join(self.directory, f"{TMP_PREFIX}-{kind}-{secrets.token_hex(4)}-{name}")
            try:
                if folder:
                    os.mkdir(path)
                else:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue
            with _in_use_lock:
                _in_use.add(path)
            return path

    @staticmethod
    def _release(path: str) -> None:
        with _in_use_lock:
            _in_use.discard(path)

    def _write_checkpoint(
        self, state: Mapping[str, Any], step: int, name: str, writer: Writer, backend: str
    ) -> float:
        """Write and commit checkpoint ``name``; return its time."""
        tmp = self._new_tmp("save", name, folder=True)
        try:
            _boundary("tmp.created", name)
            files = self._write_payload(state, tmp, writer, name)
            now = float(self._clock())
            manifest = {
                "format_version": FORMAT_VERSION,
                "step": step,
                "time": now,
                "backend": backend,
                "files": files,
            }
            _boundary("manifest.write.before", name)
            with open(os.path.join(tmp, MANIFEST), "wb") as f:
                f.write(_json_with_checksum(manifest))
                f.flush()
                _boundary("manifest.write.after", name)
                os.fsync(f.fileno())
            _boundary("manifest.fsync.after", name)
            _fsync_dir(tmp)
            _boundary("tmp.dir_fsync.after", name)
            self._commit(tmp, name)
        except BaseException:
            _remove(tmp)
            raise
        finally:
            self._release(tmp)
        return now

    def _write_payload(
        self, state: Mapping[str, Any], tmp: str, writer: Writer, name: str
    ) -> dict[str, Any]:
        _boundary("payload.write.before", name)
        names = list(writer(state, tmp))
        _boundary("payload.write.after", name)
        if not names:
            raise ValueError(f"the checkpoint writer {writer!r} reported no files")
        files: dict[str, Any] = {}
        folders = set()
        for reported in names:
            rel = _safe_relative(reported)
            if rel is None:
                raise ValueError(
                    f"the checkpoint writer reported {reported!r}, which is not a file name inside its folder"
                )
            path = os.path.join(tmp, *rel.split("/"))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"the checkpoint writer reported {reported!r} but did not write it")
            _boundary("payload.fsync.before", rel)
            _fsync_file(path)
            _boundary("payload.fsync.after", rel)
            files[rel] = {"size": os.path.getsize(path), WRITE_CHECKSUM: CHECKSUMS[WRITE_CHECKSUM](path)}
            folders.add(posixpath.dirname(rel))
        for folder in sorted(folders - {""}, reverse=True):
            _fsync_dir(os.path.join(tmp, *folder.split("/")))
            _boundary("payload.dir_fsync.after", folder)
        return files

    def _commit(self, tmp: str, name: str) -> None:
        """Rename ``tmp`` to ``name``; one of that name is moved aside first, deleted after."""
        target = os.path.join(self.directory, name)
        displaced = self._move_aside(target, "displaced", name) if os.path.lexists(target) else None
        try:
            try:
                if displaced is not None:
                    _boundary("commit.move_aside.after", name)
                _boundary("commit.rename.before", name)
                os.rename(tmp, target)
            except BaseException:
                if displaced is not None:  # put it back: the save failed, the old one stands
                    os.rename(displaced, target)
                    self._release(displaced)
                    displaced = None
                raise
            if displaced is None:
                self._renamed = name
            _boundary("commit.rename.after", name)
            _fsync_dir(self.directory)
            _boundary("commit.dir_fsync.after", name)
            if displaced is not None:
                _remove(displaced)
                _boundary("commit.displaced_delete.after", name)
        finally:
            if displaced is not None:
                self._release(displaced)  # if left behind, the next save removes it

    def _move_aside(self, path: str, kind: str, name: str) -> str:
        """Rename ``path`` to a fresh ``.tmp-<kind>-...`` name (reserved, so no one else takes it)."""
        is_dir = os.path.isdir(path)
        aside = self._new_tmp(kind, name, folder=is_dir)
        try:
            os.replace(path, aside)  # POSIX: a folder replaces an empty folder
        except OSError:
            if is_dir:
                os.rmdir(aside)
            else:
                os.remove(aside)
            os.rename(path, aside)
        return aside

    def _record(self, name: str, step: int, now: float) -> None:
        """Add ``name`` to the index as the latest, rotate, write the index, then delete."""
        kept = [r for r in self._kept if r.name != name] + [_Record(name, step, now)]
        preserved = [r for r in self._preserved if r.name != name]
        next_keep_time = self._next_keep_time
        doomed: list[str] = []
        if self.max_to_keep:
            while len(kept) > self.max_to_keep:
                oldest = kept.pop(0)
                if oldest.time > next_keep_time:
                    next_keep_time += self.keep_checkpoint_every_n_hours * 3600
                    preserved.append(oldest)
                elif oldest.name != name:  # never the checkpoint just written
                    doomed.append(oldest.name)
        try:
            self._write_index(name, kept, preserved, next_keep_time, doomed)
        finally:
            if self._indexed == name:  # the index was replaced, even if a later step failed
                self._latest, self._kept, self._preserved = name, kept, preserved
                self._next_keep_time = next_keep_time
                self._deleting = doomed  # what a failure leaves undeleted, the next save deletes
        for doomed_name in doomed:
            self._delete(doomed_name)

    def _write_index(
        self,
        latest: str,
        kept: list[_Record],
        preserved: list[_Record],
        next_keep_time: float,
        deleting: list[str],
    ) -> None:
        def records(items: list[_Record]) -> list[dict[str, Any]]:
            return [{"path": r.name, "step": r.step, "time": r.time} for r in items]

        data = {
            "format_version": FORMAT_VERSION,
            "latest": latest,
            "checkpoints": records(kept),
            "preserved": records(preserved),
            "next_keep_time": next_keep_time,
            "deleting": deleting,
        }
        _boundary("index.write.before", latest)
        tmp = self._new_tmp("index", self.index_filename, folder=False)
        try:
            with open(tmp, "wb") as f:
                f.write(_json_with_checksum(data))
                f.flush()
                _boundary("index.write.after", latest)
                os.fsync(f.fileno())
            _boundary("index.fsync.after", latest)
            os.replace(tmp, os.path.join(self.directory, self.index_filename))
            self._indexed = latest
            _boundary("index.replace.after", latest)
            _fsync_dir(self.directory)
            _boundary("index.dir_fsync.after", latest)
        except BaseException:
            _remove(tmp)
            raise
        finally:
            self._release(tmp)

    def _finish_deletions(self, saving: str) -> None:
        """Delete what an interrupted rotation was deleting (named in the index), if still unused."""
        keep = {r.name for r in self._kept} | {r.name for r in self._preserved} | {self._latest, saving}
        for name in self._deleting:
            if name not in keep:
                self._delete(name)
        self._deleting = []

    def _delete(self, name: str) -> None:
        path = os.path.join(self.directory, name)
        if not os.path.lexists(path):
            return
        _boundary("retention.delete.before", name)
        logger.info("Deleting old checkpoint %s", path)
        # Renamed first, so a crash mid-delete never leaves a half-deleted checkpoint in view.
        try:
            doomed = self._move_aside(path, "deleting", name)
        except OSError as e:
            logger.warning("Ignoring: could not delete %s: %s", path, e)
            return
        try:
            _boundary("retention.move_aside.after", name)
            _remove(doomed)
        finally:
            self._release(doomed)  # if left behind, the next save removes it
        _boundary("retention.delete.after", name)

    def _clean_stale(self) -> None:
        """Remove what interrupted saves left behind; put back a checkpoint moved aside."""
        for entry in self._tmp_entries():
            path = os.path.join(self.directory, entry)
            match = _TMP_NAME.match(entry)
            if match is not None and match["kind"] == "displaced":
                original = os.path.join(self.directory, match["name"])
                if not os.path.lexists(original) and os.path.isdir(path):
                    try:
                        os.rename(path, original)
                        logger.warning("Restored checkpoint %s, moved aside by an interrupted save", original)
                        continue
                    except OSError as e:
                        logger.warning("Could not restore %s to %s: %s", path, original, e)
            _boundary("stale.remove", entry)
            logger.info("Removing %s, left by an interrupted save", path)
            _remove(path)

    def _tmp_entries(self) -> Iterator[str]:
        try:
            entries = sorted(os.listdir(self.directory))
        except OSError:
            return
        with _in_use_lock:
            busy = set(_in_use)
        for entry in entries:
            if entry.startswith(TMP_PREFIX) and os.path.join(self.directory, entry) not in busy:
                yield entry
