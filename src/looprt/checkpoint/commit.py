"""Writing one checkpoint: payload, manifest, and the rename that puts it in place.

``write_checkpoint`` writes into a fresh ``.tmp-save-*`` folder, fsyncs every
payload file, the manifest and the folder, then renames the folder to
``<basename>-<step>``; a checkpoint of that name is moved aside first and
deleted after. Every temporary path is reserved (``reserve_tmp``) while in
use, so that ``clean_stale``, which removes what interrupted saves left,
never touches the entries of a save under way in this process.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

from looprt.checkpoint.faults import boundary
from looprt.checkpoint.files import fsync_dir, fsync_file, remove
from looprt.checkpoint.format import (
    CHECKSUMS,
    FORMAT_VERSION,
    MANIFEST,
    TMP_NAME,
    TMP_PREFIX,
    WRITE_CHECKSUM,
    json_with_checksum,
    safe_relative,
)
from looprt.errors import FailedPreconditionError, PermissionDeniedError, ResourceExhaustedError

logger = logging.getLogger(__name__)

Writer = Callable[[Mapping[str, Any], str], Iterable[str]]

_DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})

# Temporary paths being written right now by some manager of this process.
_in_use: set[str] = set()
_in_use_lock = threading.Lock()


class SaveProgress:
    """How far one save got, for undoing a failed one.

    ``renamed``: the new checkpoint was renamed into place without replacing
    one of its name (a failure before it is indexed deletes it again).
    ``indexed``: the index naming it as the latest replaced the old one;
    from then on the save is committed, whatever fails after.
    """

    __slots__ = ("renamed", "indexed")

    def __init__(self) -> None:
        self.renamed = False
        self.indexed = False


def check_writer(writer: Any, state: Any) -> None:
    """Raise ``TypeError`` unless ``writer`` is a function and ``state`` a mapping."""
    if not callable(writer):
        raise TypeError(f"writer must be a function (state, folder) -> file names, got {writer!r}")
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to values, got {type(state).__name__}")


def raise_storage_error(error: OSError, directory: str, name: str | None) -> NoReturn:
    """Raise ``error``, as TF's error for it when it means the folder is unwritable or full."""
    what = f"checkpoint {name} in {directory!r}" if name else f"checkpoints in {directory!r}"
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


def prepare_directory(directory: str, create: bool) -> None:
    """Make ``directory`` (unless ``create`` is false: then it must exist); raise if it cannot be."""
    if not create and not os.path.isdir(directory):
        raise FailedPreconditionError(f"cannot save checkpoints in {directory!r}: no such folder")
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise FailedPreconditionError(
            f"cannot save checkpoints in {directory!r}: it (or a parent) is a file, not a folder"
        ) from e
    except OSError as e:
        raise_storage_error(e, directory, None)
    if not os.path.isdir(directory):
        raise FailedPreconditionError(f"cannot save checkpoints in {directory!r}: it is not a folder")


def reserve_tmp(directory: str, kind: str, name: str, *, folder: bool) -> str:
    """Create a fresh ``.tmp-<kind>-...-<name>`` folder or file in ``directory``; reserve its path.

    The caller releases it (``release_tmp``) once it is renamed or removed.
    """
    while True:
        path = os.path.join(directory, f"{TMP_PREFIX}-{kind}-{secrets.token_hex(4)}-{name}")
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


def release_tmp(path: str) -> None:
    """End the reservation of ``path`` (from ``reserve_tmp``)."""
    with _in_use_lock:
        _in_use.discard(path)


def move_aside(directory: str, path: str, kind: str, name: str) -> str:
    """Rename ``path`` to a fresh, reserved ``.tmp-<kind>-...`` name; return that name."""
    is_dir = os.path.isdir(path)
    aside = reserve_tmp(directory, kind, name, folder=is_dir)
    try:
        os.replace(path, aside)  # POSIX: a folder replaces an empty folder
    except OSError:
        if is_dir:
            os.rmdir(aside)
        else:
            os.remove(aside)
        os.rename(path, aside)
    return aside


def write_checkpoint(
    directory: str,
    state: Mapping[str, Any],
    step: int,
    name: str,
    writer: Writer,
    *,
    backend: str,
    now: Callable[[], float],
    progress: SaveProgress,
) -> float:
    """Write checkpoint ``name`` of ``directory`` and rename it into place; return its time.

    On failure everything this wrote is removed and a checkpoint it was
    replacing put back, except once ``progress.renamed`` is set: then the
    caller decides (the new checkpoint is in place, as good as any).
    """
    tmp = reserve_tmp(directory, "save", name, folder=True)
    try:
        boundary("tmp.created", name)
        files = _write_payload(state, tmp, writer, name)
        when = float(now())
        manifest = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "time": when,
            "backend": backend,
            "files": files,
        }
        boundary("manifest.write.before", name)
        with open(os.path.join(tmp, MANIFEST), "wb") as f:
            f.write(json_with_checksum(manifest))
            f.flush()
            boundary("manifest.write.after", name)
            os.fsync(f.fileno())
        boundary("manifest.fsync.after", name)
        fsync_dir(tmp)
        boundary("tmp.dir_fsync.after", name)
        _rename_into_place(directory, tmp, name, progress)
    except BaseException:
        remove(tmp)
        raise
    finally:
        release_tmp(tmp)
    return when


def reported_file(tmp: str, reported: str) -> tuple[str, str]:
    """``(relative name, path)`` of a file a writer reported in ``tmp``; errors name a bad report."""
    rel = safe_relative(reported)
    if rel is None:
        raise ValueError(
            f"the checkpoint writer reported {reported!r}, which is not a file name inside its folder"
        )
    path = os.path.join(tmp, *rel.split("/"))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the checkpoint writer reported {reported!r} but did not write it")
    return rel, path


def file_record(path: str) -> dict[str, Any]:
    """A payload file's manifest entry: its size and checksum."""
    return {"size": os.path.getsize(path), WRITE_CHECKSUM: CHECKSUMS[WRITE_CHECKSUM](path)}


def _write_payload(state: Mapping[str, Any], tmp: str, writer: Writer, name: str) -> dict[str, Any]:
    boundary("payload.write.before", name)
    names = list(writer(state, tmp))
    boundary("payload.write.after", name)
    if not names:
        raise ValueError(f"the checkpoint writer {writer!r} reported no files")
    files: dict[str, Any] = {}
    folders = set()
    for reported in names:
        rel, path = reported_file(tmp, reported)
        boundary("payload.fsync.before", rel)
        fsync_file(path)
        boundary("payload.fsync.after", rel)
        files[rel] = file_record(path)
        folders.add(posixpath.dirname(rel))
    for folder in sorted(folders - {""}, reverse=True):
        fsync_dir(os.path.join(tmp, *folder.split("/")))
        boundary("payload.dir_fsync.after", folder)
    return files


def _rename_into_place(directory: str, tmp: str, name: str, progress: SaveProgress) -> None:
    """Rename ``tmp`` to ``name``; one of that name is moved aside first, deleted after."""
    target = os.path.join(directory, name)
    displaced = move_aside(directory, target, "displaced", name) if os.path.lexists(target) else None
    try:
        try:
            if displaced is not None:
                boundary("commit.move_aside.after", name)
            boundary("commit.rename.before", name)
            os.rename(tmp, target)
        except BaseException:
            if displaced is not None:  # put it back: the save failed, the old one stands
                os.rename(displaced, target)
                release_tmp(displaced)
                displaced = None
            raise
        if displaced is None:
            progress.renamed = True
        boundary("commit.rename.after", name)
        fsync_dir(directory)
        boundary("commit.dir_fsync.after", name)
        if displaced is not None:
            remove(displaced)
            boundary("commit.displaced_delete.after", name)
    finally:
        if displaced is not None:
            release_tmp(displaced)  # if left behind, the next save removes it


def clean_stale(directory: str) -> None:
    """Remove what interrupted saves left in ``directory``; put back a checkpoint moved aside."""
    for entry in _stale_entries(directory):
        path = os.path.join(directory, entry)
        match = TMP_NAME.match(entry)
        if match is not None and match["kind"] == "displaced":
            original = os.path.join(directory, match["name"])
            if not os.path.lexists(original) and os.path.isdir(path):
                try:
                    os.rename(path, original)
                    logger.warning("Restored checkpoint %s, moved aside by an interrupted save", original)
                    continue
                except OSError as e:
                    logger.warning("Could not restore %s to %s: %s", path, original, e)
        boundary("stale.remove", entry)
        logger.info("Removing %s, left by an interrupted save", path)
        remove(path)


def _stale_entries(directory: str) -> Iterator[str]:
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return
    with _in_use_lock:
        busy = set(_in_use)
    for entry in entries:
        if entry.startswith(TMP_PREFIX) and os.path.join(directory, entry) not in busy:
            yield entry
