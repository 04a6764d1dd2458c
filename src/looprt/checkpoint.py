"""Crash-safe checkpoints: ``CheckpointManager`` owns a directory; ``Saver`` is TF's API over it.

A checkpoint is a folder ``<basename>-<step>`` holding the backend's payload
files and a ``manifest.json`` (format version, step, wall time, backend, and
each file's size and checksum). A save writes into a fresh ``.tmp*`` folder,
fsyncs every file, the manifest and the folder, renames the folder into place,
and only then atomically replaces the index ``checkpoint.json`` (latest
checkpoint, kept checkpoints in order, with times). A crash or an error at any
point leaves the previous checkpoints and index as they were; leftover
``.tmp*`` entries are cleaned up by the next save.

Readers trust nothing unverified: ``latest_checkpoint`` checks the manifest and
every file's size and checksum, and skips a bad checkpoint with a
``CheckpointWarning`` (and a log warning) naming it and why, falling back to
the previous good one; an unreadable index falls back to scanning the folder.
One manager, in one process, writes a directory at a time (as with TF).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import operator
import os
import posixpath
import re
import secrets
import shutil
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

from looprt.errors import DataLossError, FailedPreconditionError, NotFoundError, PermissionDeniedError

__all__ = [
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointWarning",
    "Saver",
    "latest_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger("looprt.checkpoint")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "checkpoint.json"
TMP_PREFIX = ".tmp"

Writer = Callable[[Mapping[str, Any], str], Iterable[str]]

_STEP_NAME = re.compile(r"^(?P<base>.+)-(?P<step>\d+)$")
_TMP_NAME = re.compile(r"^\.tmp-(?P<kind>[a-z]+)-[0-9a-f]{8}-(?P<name>.+)$")
_CHUNK = 1 << 20


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


# Checksums a manifest may record per file, by field name. A future
# "crc32c" (or "sha256") entry is one line here; verification checks every
# algorithm it knows and fails a file with none it knows.
CHECKSUMS: dict[str, Callable[[str], int]] = {"crc32": _crc32}
WRITE_CHECKSUM = "crc32"


class CheckpointWarning(UserWarning):
    """A checkpoint or the index is damaged and was skipped."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint folder as ``CheckpointManager.checkpoints()`` lists it."""

    path: str
    step: int | None
    time: float | None
    size: int
    valid: bool
    problem: str | None


@dataclasses.dataclass(frozen=True)
class _Record:
    name: str
    step: int
    time: float


@dataclasses.dataclass
class _Index:
    latest: str | None
    kept: list[_Record]
    preserved: list[_Record]
    next_keep_time: float | None


# Temporary paths being written right now by some manager of this process:
# stale-entry cleanup never touches these.
_in_use: set[str] = set()
_in_use_lock = threading.Lock()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    if os.name != "posix":  # directories cannot be opened (or fsynced) elsewhere
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems do not fsync directories
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    """Delete a file or folder tree; errors are logged, not raised."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning("Ignoring: could not delete %s: %s", path, e)


def _is_plain_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and os.sep not in name
        and (os.altsep is None or os.altsep not in name)
    )


def _safe_relative(name: Any) -> str | None:
    """``name`` as a normalized relative '/'-path inside a folder, or None if it escapes."""
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or os.path.isabs(name):
        return None
    norm = posixpath.normpath(name.replace(os.sep, "/"))
    if norm in (".", "..") or norm.startswith("../") or norm == MANIFEST:
        return None
    return norm


def _warn(message: str) -> None:
    logger.warning("%s", message)
    warnings.warn(message, CheckpointWarning, stacklevel=3)


def _too_new(version: Any) -> bool:
    return not isinstance(version, int) or version > FORMAT_VERSION


def _read_manifest(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed, schema-checked manifest of checkpoint folder ``path``, or the problem."""
    manifest_path = os.path.join(path, MANIFEST)
    try:
        with open(manifest_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None, f"{MANIFEST} is missing (an incomplete save?)"
    except OSError as e:
        return None, f"{MANIFEST} cannot be read ({e})"
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        return None, f"{MANIFEST} is garbled ({e})"
    if not isinstance(manifest, dict):
        return None, f"{MANIFEST} is garbled (not a JSON object)"
    if _too_new(manifest.get("format_version")):
        return None, (
            f"{MANIFEST} has format_version {manifest.get('format_version')!r}; "
            f"this looprt reads up to {FORMAT_VERSION}"
        )
    step, files = manifest.get("step"), manifest.get("files")
    if not isinstance(step, int) or not isinstance(manifest.get("time"), (int, float)):
        return None, f"{MANIFEST} is garbled (bad or missing step or time)"
    if not isinstance(files, dict) or not files:
        return None, f"{MANIFEST} is garbled (no files listed)"
    for name, entry in files.items():
        if (
            _safe_relative(name) != name
            or not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
        ):
            return None, f"{MANIFEST} is garbled (bad file entry {name!r})"
    match = _STEP_NAME.match(os.path.basename(os.path.normpath(path)))
    if match is not None and int(match["step"]) != step:
        return None, f"{MANIFEST} says step {step}, but the folder is named for step {match['step']}"
    return manifest, None


def verify_checkpoint(path: str) -> str | None:
    """None if checkpoint folder ``path`` is complete and intact, else what is wrong with it."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return "it does not exist"
    if not os.path.isdir(path):
        return "it is not a checkpoint folder"
    manifest, problem = _read_manifest(path)
    if manifest is None:
        return problem
    for name, entry in manifest["files"].items():
        file_path = os.path.join(path, *name.split("/"))
        try:
            size = os.path.getsize(file_path)
        except OSError:
            return f"{name} is missing"
        if size != entry["size"]:
            return f"{name} has {size} bytes; the manifest says {entry['size']} (truncated or overwritten?)"
        algorithms = [a for a in CHECKSUMS if a in entry]
        if not algorithms:
            return f"{name} has no checksum this looprt can check (fields: {', '.join(sorted(entry))})"
        for algorithm in algorithms:
            try:
                actual = CHECKSUMS[algorithm](file_path)
            except OSError as e:
                return f"{name} cannot be read ({e})"
            if actual != entry[algorithm]:
                return (
                    f"{name} fails its {algorithm} check (0x{actual:08x}; the manifest says "
                    f"{entry[algorithm]!r}): the data is corrupt"
                )
    return None


def _parse_records(value: Any) -> list[_Record]:
    if not isinstance(value, list):
        raise ValueError("a checkpoint list is not a list")
    records = []
    for item in value:
        name, step, when = item["path"], item["step"], item["time"]
        if not _is_plain_name(name) or not isinstance(step, int) or not isinstance(when, (int, float)):
            raise ValueError(f"bad entry {item!r}")
        records.append(_Record(name, step, float(when)))
    return records


def _read_index(directory: str, index_name: str) -> tuple[_Index | None, str | None]:
    """The index of ``directory`` (None if there is none), and what is wrong with it."""
    try:
        with open(os.path.join(directory, index_name), "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as e:
        return None, f"cannot be read ({e})"
    try:
        data = json.loads(raw)
        if _too_new(data["format_version"]):
            raise ValueError(f"format_version {data['format_version']!r} is not one this looprt reads")
        latest = data["latest"]
        if latest is not None and not _is_plain_name(latest):
            raise ValueError(f"bad latest {latest!r}")
        next_keep = data.get("next_keep_time")
        if next_keep is not None and not isinstance(next_keep, (int, float)):
            raise ValueError(f"bad next_keep_time {next_keep!r}")
        index = _Index(
            latest, _parse_records(data["checkpoints"]), _parse_records(data.get("preserved", [])), next_keep
        )
    except (ValueError, KeyError, TypeError) as e:
        return None, f"is garbled ({type(e).__name__}: {e})"
    return index, None


def _scan(directory: str, basename: str | None) -> list[tuple[int, str]]:
    """(step, name) of every checkpoint folder, by step; any basename when None."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = _STEP_NAME.match(name)
        if name.startswith(TMP_PREFIX) or match is None:
            continue
        if basename is not None and match["base"] != basename:
            continue
        path = os.path.join(directory, name)
        if not os.path.isdir(path):
            continue
        if basename is None and not os.path.lexists(os.path.join(path, MANIFEST)):
            continue
        found.append((int(match["step"]), name))
    return sorted(found)


def _find_latest(directory: str, basename: str | None, index_name: str) -> str | None:
    """The newest checkpoint in ``directory`` that verifies; warns about each one skipped."""
    directory = os.fspath(directory)
    index, problem = _read_index(directory, index_name)
    index_path = os.path.join(directory, index_name)
    scanned = _scan(directory, basename)
    if problem is not None:
        _warn(f"checkpoint index {index_path} {problem}; scanning {directory} for checkpoints instead")
    elif index is None and scanned:
        _warn(f"checkpoint index {index_path} is missing; scanning {directory} for checkpoints instead")
    candidates: list[str] = []
    if index is not None:
        if index.latest is not None:
            candidates.append(index.latest)
        candidates += [r.name for r in reversed(index.kept)]
        candidates += [r.name for r in reversed(index.preserved)]
    candidates += [name for _, name in reversed(scanned)]
    seen: set[str] = set()
    for name in candidates:
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(directory, name)
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        _warn(f"skipping checkpoint {path}: {problem}; falling back to the previous checkpoint")
    return None


def latest_checkpoint(checkpoint_dir: str, latest_filename: str | None = None) -> str | None:
    """The newest valid checkpoint in ``checkpoint_dir``, or None (``tf.train.latest_checkpoint``).

    ``latest_filename`` names the index file (default ``checkpoint.json``).
    """
    return _find_latest(os.fspath(checkpoint_dir), None, latest_filename or INDEX)


def _folder_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


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
        if not _is_plain_name(basename) or basename.startswith(TMP_PREFIX):
            raise ValueError(f"basename must be a plain file name not starting with '.tmp', got {basename!r}")
        if not _is_plain_name(index_filename):
            raise ValueError(f"index_filename must be a plain file name, got {index_filename!r}")
        self.directory = os.fspath(directory)
        self.basename = basename
        self.max_to_keep = max_to_keep
        self.keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self.index_filename = index_filename
        self.create = create
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: str | None = None
        self._kept: list[_Record] = []
        self._preserved: list[_Record] = []
        self._next_keep_time = clock() + keep_checkpoint_every_n_hours * 3600
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
        if index.next_keep_time is not None:
            self._next_keep_time = index.next_keep_time

    def _exists(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self.directory, name))

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
        false the checkpoint is written but neither indexed nor rotated.
        """
        step = operator.index(step)
        if step < 0:
            raise ValueError(f"a checkpoint step must be >= 0, got {step}")
        name = f"{self.basename}-{step}"
        with self._lock:
            self._prepare_directory()
            self._clean_stale()
            now = self._write_checkpoint(state, step, name, writer, backend)
            if update_index:
                self._record(name, step, now)
        return os.path.join(self.directory, name)

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
            self._raise_denied(e)
        if not os.path.isdir(directory):
            raise FailedPreconditionError(f"cannot save checkpoints in {directory!r}: it is not a folder")

    def _raise_denied(self, error: OSError) -> NoReturn:
        """Raise ``error``, as ``PermissionDeniedError`` when it means the folder is not writable."""
        if isinstance(error, PermissionError) or error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionDeniedError(
                f"cannot save checkpoints in {self.directory!r}: it is not writable "
                f"({error.strerror or error}); nothing was changed there"
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
            except OSError as e:
                self._raise_denied(e)
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
        tmp = self._new_tmp("save", name, folder=True)
        try:
            files = self._write_payload(state, tmp, writer)
            now = float(self._clock())
            manifest = {
                "format_version": FORMAT_VERSION,
                "step": step,
                "time": now,
                "backend": backend,
                "files": files,
            }
            with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            self._commit(tmp, name)
        except BaseException:
            _remove(tmp)
            raise
        finally:
            self._release(tmp)
        return now

    def _write_payload(self, state: Mapping[str, Any], tmp: str, writer: Writer) -> dict[str, Any]:
        names = list(writer(state, tmp))
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
            _fsync_file(path)
            files[rel] = {"size": os.path.getsize(path), WRITE_CHECKSUM: CHECKSUMS[WRITE_CHECKSUM](path)}
            folders.add(posixpath.dirname(rel))
        for folder in sorted(folders - {""}, reverse=True):
            _fsync_dir(os.path.join(tmp, *folder.split("/")))
        return files

    def _commit(self, tmp: str, name: str) -> None:
        """Rename ``tmp`` to ``name``; an existing ``name`` is moved aside first, deleted after."""
        target = os.path.join(self.directory, name)
        displaced = self._move_aside(target, "displaced", name) if os.path.lexists(target) else None
        try:
            os.rename(tmp, target)
        except BaseException:
            if displaced is not None:
                os.rename(displaced, target)
                self._release(displaced)
            raise
        _fsync_dir(self.directory)
        if displaced is not None:
            _remove(displaced)
            self._release(displaced)

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
        doomed: list[_Record] = []
        if self.max_to_keep:
            while len(kept) > self.max_to_keep:
                oldest = kept.pop(0)
                if oldest.time > next_keep_time:
                    next_keep_time += self.keep_checkpoint_every_n_hours * 3600
                    preserved.append(oldest)
                else:
                    doomed.append(oldest)
        self._write_index(name, kept, preserved, next_keep_time)
        self._latest, self._kept, self._preserved = name, kept, preserved
        self._next_keep_time = next_keep_time
        for record in doomed:
            if record.name != name:  # never the checkpoint just written
                self._delete(record.name)

    def _write_index(
        self, latest: str, kept: list[_Record], preserved: list[_Record], next_keep_time: float
    ) -> None:
        def records(items: list[_Record]) -> list[dict[str, Any]]:
            return [{"path": r.name, "step": r.step, "time": r.time} for r in items]

        data = {
            "format_version": FORMAT_VERSION,
            "latest": latest,
            "checkpoints": records(kept),
            "preserved": records(preserved),
            "next_keep_time": next_keep_time,
        }
        tmp = self._new_tmp("index", self.index_filename, folder=False)
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.directory, self.index_filename))
            _fsync_dir(self.directory)
        except BaseException:
            _remove(tmp)
            raise
        finally:
            self._release(tmp)

    def _delete(self, name: str) -> None:
        path = os.path.join(self.directory, name)
        if not os.path.lexists(path):
            return
        logger.info("Deleting old checkpoint %s", path)
        # Renamed first, so a crash mid-delete never leaves a half-deleted checkpoint in view.
        try:
            doomed = self._move_aside(path, "deleting", name)
        except OSError as e:
            logger.warning("Ignoring: could not delete %s: %s", path, e)
            return
        _remove(doomed)
        self._release(doomed)

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


class Saver:
    """Saves and restores a program's state; ``tf.compat.v1.train.Saver``'s methods.

    ``save(sess, "<dir>/model.ckpt", global_step=N)`` writes checkpoint folder
    ``<dir>/model.ckpt-N`` through a ``CheckpointManager`` (one per directory
    and basename, kept by this saver) and returns its path. ``restore``
    verifies the checkpoint, reads all of it, and only then sets the state: a
    missing checkpoint raises ``NotFoundError``, a damaged one
    ``DataLossError``, and neither changes any state.
    """

    def __init__(
        self,
        program: Any,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._program = getattr(program, "program", program)
        self._max_to_keep = max_to_keep
        self._keep_every = keep_checkpoint_every_n_hours
        self._clock = clock
        self._managers: dict[tuple[str, str], CheckpointManager] = {}
        self._last_manager: CheckpointManager | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Saver of {self._program!r}>"

    @property
    def program(self) -> Any:
        return self._program

    def manager(self, save_path: str) -> CheckpointManager:
        """The manager of the directory and basename of ``save_path`` ("<dir>/<basename>")."""
        save_path = os.fspath(save_path)
        directory, basename = os.path.split(save_path)
        if not basename:
            raise ValueError(f"save_path must end in a file name such as 'model.ckpt', got {save_path!r}")
        key = (os.path.abspath(directory or "."), basename)
        with self._lock:
            manager = self._managers.get(key)
            if manager is None:
                manager = self._managers[key] = CheckpointManager(
                    directory or ".",
                    max_to_keep=self._max_to_keep,
                    keep_checkpoint_every_n_hours=self._keep_every,
                    basename=basename,
                    clock=self._clock,
                )
        return manager

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
        """
        if save_path is None:
            raise ValueError("save_path must be a path such as '<dir>/model.ckpt', not None")
        program = self._program
        backend = program.backend
        state = backend.state_dict(program)
        if global_step is None:
            global_step = state["global_step"]
        try:
            step = operator.index(global_step)
        except TypeError:
            step = operator.index(sess.run(global_step))
        manager = self.manager(save_path)
        path = manager.save(state, step, backend.save_payload, backend=backend.name, update_index=write_state)
        self._last_manager = manager
        return path

    def restore(self, sess: Any, save_path: str | None) -> None:
        """Set the program's state from checkpoint ``save_path``, all or nothing."""
        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        save_path = os.fspath(save_path)
        problem = verify_checkpoint(save_path)
        if problem is not None:
            if not os.path.lexists(save_path):
                raise NotFoundError(f"checkpoint {save_path!r} not found: {problem}")
            raise DataLossError(f"checkpoint {save_path!r} cannot be restored: {problem}")
        program = self._program
        backend = program.backend
        logger.info("Restoring parameters from %s", save_path)
        try:
            values = backend.load_payload(save_path)
        except Exception as e:
            raise DataLossError(
                f"checkpoint {save_path!r} is intact, but backend {backend.name!r} cannot read it: {e}"
            ) from e
        before = backend.state_dict(program)
        try:
            backend.load_state_dict(program, values)
        except BaseException as e:
            backend.load_state_dict(program, before)  # all or nothing
            if hasattr(e, "add_note"):
                e.add_note(f"while restoring checkpoint {save_path!r}; the state was left unchanged")
            raise

    def latest_checkpoint(self, checkpoint_dir: str, latest_filename: str | None = None) -> str | None:
        """The newest valid checkpoint in ``checkpoint_dir``, or None."""
        return latest_checkpoint(checkpoint_dir, latest_filename)

    @property
    def last_checkpoints(self) -> list[str]:
        """Checkpoints kept in rotation by the last save, oldest first."""
        return [] if self._last_manager is None else self._last_manager.last_checkpoints
