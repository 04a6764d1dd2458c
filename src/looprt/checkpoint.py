"""Crash-safe checkpoints: ``CheckpointManager`` owns a directory; ``Saver`` is TF's API over it.

A checkpoint is a folder ``<basename>-<step>`` holding the backend's payload
files and a ``manifest.json`` (format version, step, wall time, backend, each
file's size and checksum, and a checksum of the manifest itself). A save
writes into a fresh ``.tmp*`` folder, fsyncs every file, the manifest and the
folder, renames the folder into place, and only then atomically replaces the
index ``checkpoint.json`` (latest checkpoint, kept checkpoints in order, with
times, and its own checksum). A crash at any point leaves the previous
checkpoints and index in view; leftover ``.tmp*`` entries are cleaned up by
the next save. A save that fails undoes what it did: a full disk raises
``ResourceExhaustedError``, an unwritable folder ``PermissionDeniedError``.

Readers trust nothing unverified: ``latest_checkpoint`` checks the manifest and
every file's size and checksum, and skips a bad checkpoint with a
``CheckpointWarning`` (and a log warning) naming it and why, falling back to
the previous good one; an unreadable index falls back to scanning the folder.
One manager, in one process, writes a directory at a time (as with TF).

Retention writes the index first, naming the checkpoints it is about to
delete, then deletes them; deletions a crash interrupted are finished by the
next save. Replacing a checkpoint of the same step moves the old folder aside
first; readers use that copy if a crash left it there.

``save_async`` (and ``Saver.save_async``) write in a background thread, at
most one save in flight per manager; a background failure is logged when it
happens and raised by the next save, ``wait_until_finished()`` or ``close()``.

Every step of the protocol is a named boundary (``BOUNDARIES``).
``set_fault_hook`` installs a function called at each one, so that tests can
kill or fail a save at any of them; without a hook a boundary costs one
global lookup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import numbers
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

from looprt.errors import (
    DataLossError,
    FailedPreconditionError,
    NotFoundError,
    OpError,
    PermissionDeniedError,
    ResourceExhaustedError,
)

__all__ = [
    "BOUNDARIES",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointWarning",
    "ManagerCache",
    "Saver",
    "latest_checkpoint",
    "set_fault_hook",
    "verify_checkpoint",
]

logger = logging.getLogger("looprt.checkpoint")

# 2: the manifest and the index carry a checksum of their own content; the
# index names the checkpoints retention is deleting. Version 1 is still read.
FORMAT_VERSION = 2
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

# The save protocol, in order. Each name is a point between two steps of it
# where a crash, a full disk or an error may strike; ``[file]`` boundaries are
# passed each payload file, ``retention.*`` ones each checkpoint deleted.
BOUNDARIES: tuple[str, ...] = (
    "save.begin",  # the lock is held, nothing written yet
    "stale.remove",  # before removing what an interrupted save left
    "tmp.created",  # the temporary folder exists, empty
    "payload.write.before",
    "payload.write.after",  # the backend wrote its files; nothing fsynced
    "payload.fsync.before",  # [file]
    "payload.fsync.after",  # [file]
    "payload.dir_fsync.after",  # subfolders of the payload fsynced
    "manifest.write.before",
    "manifest.write.after",  # written and flushed, not fsynced
    "manifest.fsync.after",
    "tmp.dir_fsync.after",  # the temporary folder is complete and durable
    "commit.move_aside.after",  # a checkpoint of the same step moved aside
    "commit.rename.before",
    "commit.rename.after",  # the checkpoint is in place, not yet indexed
    "commit.dir_fsync.after",
    "commit.displaced_delete.after",
    "index.write.before",
    "index.write.after",  # the new index written to a temporary file
    "index.fsync.after",
    "index.replace.after",  # the new index is in place: the save is committed
    "index.dir_fsync.after",
    "retention.delete.before",  # [checkpoint]
    "retention.move_aside.after",  # [checkpoint] renamed out of view
    "retention.delete.after",  # [checkpoint]
    "save.end",
)

FaultHook = Callable[[str, str], None]
_fault_hook: FaultHook | None = None


def set_fault_hook(hook: FaultHook | None) -> FaultHook | None:
    """Call ``hook(boundary, subject)`` at every boundary of a save; return the previous hook.

    For fault-injection tests: ``boundary`` is one of ``BOUNDARIES`` and
    ``subject`` the checkpoint, payload file or index concerned. The hook runs
    in the saving thread with the manager's lock held; what it raises fails
    the save at that point, and ``os.kill(os.getpid(), SIGKILL)`` there is a
    crash at that point. None removes it. Process-wide; not for production.
    """
    global _fault_hook
    previous, _fault_hook = _fault_hook, hook
    return previous


def _boundary(name: str, subject: str) -> None:
    hook = _fault_hook
    if hook is not None:
        hook(name, subject)


_DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})


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
    deleting: list[str]  # retention was deleting these when the index was written


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
    return isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION


# Manifests and indexes end with their own checksum: the CRC32 of every byte
# before it (with the object closed there), so any damage to the text is seen.
_CHECKSUM_TAIL = re.compile(rb',\n "checksum": (\d+)\n\}\n?\Z')


def _json_with_checksum(data: Mapping[str, Any]) -> bytes:
    """``data`` as indented JSON whose last field is the checksum of the text before it."""
    body = json.dumps(data, indent=1, sort_keys=True).encode()
    return body[:-2] + b',\n "checksum": %d\n}\n' % zlib.crc32(body)


def _content_problem(raw: bytes, data: Mapping[str, Any]) -> str | None:
    """What is wrong with the checksum of a manifest or index ``raw`` (parsed: ``data``), if anything."""
    if data["format_version"] < 2:
        return None  # written before manifests and indexes carried one
    tail = _CHECKSUM_TAIL.search(raw)
    if tail is None:
        return "has no checksum"
    if zlib.crc32(raw[: tail.start()] + b"\n}") != int(tail[1]):
        return "fails its checksum: its content was changed or damaged"
    return None


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
            f"this looprt reads 1 to {FORMAT_VERSION}"
        )
    content_problem = _content_problem(raw, manifest)
    if content_problem is not None:
        return None, f"{MANIFEST} is garbled ({content_problem})"
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
        content_problem = _content_problem(raw, data)
        if content_problem is not None:
            raise ValueError(f"it {content_problem}")
        latest = data["latest"]
        if latest is not None and not _is_plain_name(latest):
            raise ValueError(f"bad latest {latest!r}")
        next_keep = data.get("next_keep_time")
        if next_keep is not None and not isinstance(next_keep, (int, float)):
            raise ValueError(f"bad next_keep_time {next_keep!r}")
        deleting = data.get("deleting", [])
        if not isinstance(deleting, list) or not all(_is_plain_name(n) for n in deleting):
            raise ValueError(f"bad deleting {deleting!r}")
        index = _Index(
            latest,
            _parse_records(data["checkpoints"]),
            _parse_records(data.get("preserved", [])),
            next_keep,
            deleting,
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


def _displaced_copy(directory: str, name: str) -> str | None:
    """The folder an interrupted replacement of checkpoint ``name`` moved it to, if any."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return None
    for entry in entries:
        match = _TMP_NAME.match(entry)
        if match is not None and match["kind"] == "displaced" and match["name"] == name:
            path = os.path.join(directory, entry)
            if os.path.isdir(path):
                return path
    return None


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
        if not os.path.lexists(path):
            aside = _displaced_copy(directory, name)
            if aside is not None and verify_checkpoint(aside) is None:
                logger.info("Using %s: %s was moved aside by an interrupted save", aside, path)
                return aside
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        _warn(f"skipping checkpoint {path}: {problem}; falling back to the previous checkpoint")
    return None


def latest_checkpoint(checkpoint_dir: str, latest_filename: str | None = None) -> str | None:
    """The newest valid checkpoint in ``checkpoint_dir``, or None (``tf.train.latest_checkpoint``).

    ``latest_filename`` names the index file (default ``checkpoint.json``).
    """
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path, got {type(checkpoint_dir).__name__}")
    if latest_filename is not None and not _is_plain_name(latest_filename):
        raise ValueError(f"latest_filename must be a plain file name, got {latest_filename!r}")
    return _find_latest(os.fspath(checkpoint_dir), None, latest_filename or INDEX)


def _folder_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


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


class ManagerCache:
    """One ``CheckpointManager`` per directory and basename of a save path, made on first use."""

    def __init__(
        self, max_to_keep: int | None, keep_checkpoint_every_n_hours: float, clock: Callable[[], float]
    ) -> None:
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

    def values(self) -> list[CheckpointManager]:
        """Every manager made so far."""
        with self._lock:
            return list(self._managers.values())


class Saver:
    """Saves and restores a program's state; ``tf.compat.v1.train.Saver``'s methods.

    ``save(sess, "<dir>/model.ckpt", global_step=N)`` writes checkpoint folder
    ``<dir>/model.ckpt-N`` through a ``CheckpointManager`` (one per directory
    and basename, kept by this saver) and returns its path. ``restore``
    verifies the checkpoint, reads all of it, and only then sets the state: a
    missing checkpoint raises ``NotFoundError``, a damaged one
    ``DataLossError``, and neither changes any state.

    ``save_async`` (a looprt extension) takes the state's host copy at once
    and writes it in the background; ``wait_until_finished()`` or ``close()``
    waits for it and raises its error, as does the next save.
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
        if not hasattr(self._program, "backend") or not hasattr(self._program, "states"):
            raise TypeError(f"Saver needs a looprt Program (or a Step of one), got {program!r}")
        self._managers = ManagerCache(max_to_keep, keep_checkpoint_every_n_hours, clock)
        self._last_manager: CheckpointManager | None = None
        _check_retention(max_to_keep, keep_checkpoint_every_n_hours)  # now, not at the first save

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
        """
        self.wait_until_finished()
        manager, state, step, backend = self._stage(sess, save_path, global_step)
        path = manager.save(state, step, backend.save_payload, backend=backend.name, update_index=write_state)
        self._last_manager = manager
        return path

    def save_async(self, sess: Any, save_path: str, global_step: Any = None, write_state: bool = True) -> str:
        """Take a host copy of the state now, write it in a background thread; return its path.

        At most one save of this saver is in flight: this first waits for the
        previous one and raises its error, if any. The checkpoint becomes
        visible to readers once committed.
        """
        self.wait_until_finished()
        manager, state, step, backend = self._stage(sess, save_path, global_step)
        path = manager.save_async(
            state, step, backend.save_payload, backend=backend.name, update_index=write_state
        )
        self._last_manager = manager
        return path

    def _stage(self, sess: Any, save_path: str, global_step: Any) -> tuple[CheckpointManager, Any, int, Any]:
        if save_path is None:
            raise ValueError("save_path must be a path such as '<dir>/model.ckpt', not None")
        manager = self.manager(save_path)
        program = self._program
        backend = program.backend
        state = backend.state_dict(program)  # a host copy: training may go on while it is written
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
        """Set the program's state from checkpoint ``save_path``, all or nothing."""
        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        if not isinstance(save_path, (str, os.PathLike)):
            raise TypeError(f"save_path must be a checkpoint path, got {type(save_path).__name__}")
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
        """The newest valid checkpoint in ``checkpoint_dir``, or None.

        A save of this saver in flight is waited for first (its error, if
        any, is kept for the next save), so a session that recovers restores
        the newest state.
        """
        for manager in self._managers.values():
            manager._join()
        return latest_checkpoint(checkpoint_dir, latest_filename)

    @property
    def last_checkpoints(self) -> list[str]:
        """Checkpoints kept in rotation by the last save, oldest first."""
        return [] if self._last_manager is None else self._last_manager.last_checkpoints
