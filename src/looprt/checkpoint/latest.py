"""Reading a checkpoint directory: the newest valid checkpoint, and a listing of them all.

Readers trust nothing unverified: ``latest_checkpoint`` checks the manifest and
every file's size and checksum, and skips a bad checkpoint with a
``CheckpointWarning`` naming it and why, falling back to
the previous good one; an unreadable index falls back to scanning the folder.
When a directory holds checkpoints and none of them verifies, the search
raises ``DataLossError`` naming each one and its fault, rather than answer
"none" and let a job start from scratch over them (``start_fresh_if_damaged``
opts out). Every checkpoint that fails verification is remembered (by path,
in this process), so that the writer of the directory sets it aside under
``<name>.damaged`` instead of deleting or replacing it. A checkpoint that an
interrupted replacement moved aside is found under its own name
(``resolve_checkpoint`` gives the folder to read).
"""

from __future__ import annotations

import dataclasses
import logging
import os

from looprt.checkpoint.damage import (
    DAMAGED_SUFFIX,
    CheckpointWarning,
    forget_damaged,
    known_damaged,
    note_damaged,
    warn,
)
from looprt.checkpoint.files import folder_size
from looprt.checkpoint.format import (
    INDEX,
    MANIFEST,
    STEP_NAME,
    TMP_NAME,
    TMP_PREFIX,
    is_plain_name,
    read_index,
    read_manifest,
    verify_checkpoint,
)
from looprt.checkpoint.remote import describe
from looprt.checkpoint.remote import find_latest as find_latest_at_url
from looprt.checkpoint.storage import StorageOptions, is_url
from looprt.errors import DataLossError

__all__ = [
    "DAMAGED_SUFFIX",
    "CheckpointInfo",
    "CheckpointWarning",
    "find_latest",
    "forget_damaged",
    "known_damaged",
    "latest_checkpoint",
    "list_checkpoints",
    "note_damaged",
    "resolve_checkpoint",
    "scan",
    "warn",
]

logger = logging.getLogger(__name__)


def scan(directory: str, basename: str | None) -> list[tuple[int, str]]:
    """(step, name) of every checkpoint folder, by step; any basename when None."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = STEP_NAME.match(name)
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


def displaced_copy(directory: str, name: str) -> str | None:
    """The folder an interrupted replacement of checkpoint ``name`` moved it to, if any."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return None
    for entry in entries:
        match = TMP_NAME.match(entry)
        if match is not None and match["kind"] == "displaced" and match["name"] == name:
            path = os.path.join(directory, entry)
            if os.path.isdir(path):
                return path
    return None


def resolve_checkpoint(path: str) -> str:
    """The folder to read for checkpoint ``path``: itself, or the copy an interrupted save moved aside."""
    path = os.fspath(path)
    if is_url(path):
        return path  # at a URL nothing is moved aside: the manifest written last is the commit
    if not os.path.lexists(path):
        aside = displaced_copy(os.path.dirname(path) or ".", os.path.basename(path))
        if aside is not None:
            return aside
    return path


def find_latest(
    directory: str, basename: str | None, index_name: str, *, start_fresh_if_damaged: bool = False
) -> str | None:
    """The newest checkpoint in ``directory`` that verifies; warns about each one skipped.

    Raises ``DataLossError`` (naming each checkpoint and its fault) when the
    directory holds checkpoints and none verifies, unless
    ``start_fresh_if_damaged``: then None, as for a directory without any.
    """
    directory = os.fspath(directory)
    index, problem = read_index(directory, index_name)
    index_path = os.path.join(directory, index_name)
    scanned = scan(directory, basename)
    if problem is not None:
        warn(f"checkpoint index {index_path} {problem}; scanning {directory} for checkpoints instead")
    elif index is None and scanned:
        warn(f"checkpoint index {index_path} is missing; scanning {directory} for checkpoints instead")
    candidates: list[str] = []
    if index is not None:
        if index.latest is not None:
            candidates.append(index.latest)
        candidates += [r.name for r in reversed(index.kept)]
        candidates += [r.name for r in reversed(index.preserved)]
    candidates += [name for _, name in reversed(scanned)]
    seen: set[str] = set()
    damaged: list[tuple[str, str]] = []
    for name in candidates:
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(directory, name)
        source = resolve_checkpoint(path)
        if not os.path.lexists(source):  # named by the index, but gone: not damaged, nothing to keep
            warn(f"skipping checkpoint {path}: it does not exist; falling back to the previous checkpoint")
            continue
        problem = verify_checkpoint(source)
        if problem is None:
            if source != path:
                logger.info("Using %s from %s, where an interrupted save moved it", path, source)
            return path
        note_damaged(source, problem)
        damaged.append((source, problem))
        warn(f"skipping checkpoint {source}: {problem}; falling back to the previous checkpoint")
    if damaged and not start_fresh_if_damaged:
        faults = "; ".join(f"{path}: {why}" for path, why in damaged)
        raise DataLossError(
            f"none of the {len(damaged)} checkpoint(s) in {directory} verifies, so nothing can be "
            f"restored ({faults}). Refusing to start from scratch over them: move them away, or pass "
            "start_fresh_if_damaged=True (to Saver, latest_checkpoint or "
            "CheckpointManager.latest_checkpoint); the damaged ones are then set aside as "
            f"'<name>{DAMAGED_SUFFIX}', never deleted."
        )
    return None


def latest_checkpoint(
    checkpoint_dir: str,
    latest_filename: str | None = None,
    *,
    start_fresh_if_damaged: bool = False,
    storage_options: StorageOptions | None = None,
) -> str | None:
    """The newest valid checkpoint in ``checkpoint_dir``, or None (``tf.train.latest_checkpoint``).

    ``latest_filename`` names the index file (default ``checkpoint.json``).
    A directory that holds checkpoints none of which verifies raises
    ``DataLossError`` naming each and its fault; with
    ``start_fresh_if_damaged=True`` it gives None instead, as an empty one.
    """
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path, got {type(checkpoint_dir).__name__}")
    if latest_filename is not None and not is_plain_name(latest_filename):
        raise ValueError(f"latest_filename must be a plain file name, got {latest_filename!r}")
    directory, index = os.fspath(checkpoint_dir), latest_filename or INDEX
    if is_url(directory):
        return find_latest_at_url(
            directory, None, index,
            start_fresh_if_damaged=start_fresh_if_damaged, storage_options=storage_options,
        )
    return find_latest(directory, None, index, start_fresh_if_damaged=start_fresh_if_damaged)


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint folder as ``CheckpointManager.checkpoints()`` lists it.

    ``path``: where it is read from (an interrupted save's moved-aside copy
    is listed under its own name, as ``latest_checkpoint`` gives it);
    ``step``; ``time``: when it was written (seconds since the epoch, from its
    manifest; None if unreadable); ``size``: bytes in its files; ``valid``:
    whether it verifies, and ``problem`` why not; ``set_aside``: it failed
    verification and was renamed ``<name>.damaged`` (kept for inspection,
    never restored or deleted by looprt).
    """

    path: str
    step: int | None
    time: float | None
    size: int
    valid: bool
    problem: str | None
    set_aside: bool = False


def _set_aside(directory: str, basename: str) -> list[tuple[int, str]]:
    """(step, name) of the checkpoints of ``basename`` set aside as damaged."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        stem, dot, tail = name.partition(DAMAGED_SUFFIX)
        match = STEP_NAME.match(stem)
        numbered = tail == "" or (tail.startswith(".") and tail[1:].isdigit())
        if not dot or not numbered or match is None or match["base"] != basename:
            continue
        if os.path.isdir(os.path.join(directory, name)):
            found.append((int(match["step"]), name))
    return found


def list_checkpoints(
    directory: str, basename: str, *, storage_options: StorageOptions | None = None
) -> list[CheckpointInfo]:
    """Every checkpoint folder of ``basename`` in ``directory`` (set-aside ones too), by step, verified."""
    if is_url(directory):
        return [
            CheckpointInfo(url, step, when, size, problem is None, problem)
            for url, step, when, size, problem in describe(directory, basename, storage_options)
        ]
    entries = [(step, name, False) for step, name in scan(directory, basename)]
    listed = {name for _, name, _ in entries}
    index, _ = read_index(directory, INDEX)
    named = [] if index is None else [r.name for r in (*index.kept, *index.preserved)]
    for name in named:  # moved aside by an interrupted save: listed under its own name
        match = STEP_NAME.match(name)
        ours = match is not None and match["base"] == basename
        if ours and name not in listed and displaced_copy(directory, name) is not None:
            entries.append((int(name.rpartition("-")[2]), name, False))
            listed.add(name)
    entries += [(step, name, True) for step, name in _set_aside(directory, basename)]
    infos = []
    for step, name, aside in sorted(entries):
        path = os.path.join(directory, name)
        source = resolve_checkpoint(path)
        problem = verify_checkpoint(source)
        if aside and problem is None:
            problem = "set aside as damaged earlier; it verifies now"
        manifest, _ = read_manifest(source)
        when = float(manifest["time"]) if manifest is not None else None
        infos.append(
            CheckpointInfo(path, step, when, folder_size(source), problem is None, problem, aside)
        )
    return infos
