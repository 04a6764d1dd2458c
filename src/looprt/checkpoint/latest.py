"""Reading a checkpoint directory: the newest valid checkpoint, and a listing of them all.

Readers trust nothing unverified: ``latest_checkpoint`` checks the manifest and
every file's size and checksum, and skips a bad checkpoint with a
``CheckpointWarning`` (and a log warning) naming it and why, falling back to
the previous good one; an unreadable index falls back to scanning the folder.
A checkpoint that an interrupted replacement moved aside is used in its place.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings

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

logger = logging.getLogger(__name__)


class CheckpointWarning(UserWarning):
    """A checkpoint or the index is damaged and was skipped."""


def warn(message: str) -> None:
    """Log ``message`` and issue it as a ``CheckpointWarning`` (for a damaged checkpoint or index)."""
    logger.warning("%s", message)
    warnings.warn(message, CheckpointWarning, stacklevel=3)


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


def find_latest(directory: str, basename: str | None, index_name: str) -> str | None:
    """The newest checkpoint in ``directory`` that verifies; warns about each one skipped."""
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
    for name in candidates:
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            aside = displaced_copy(directory, name)
            if aside is not None and verify_checkpoint(aside) is None:
                logger.info("Using %s: %s was moved aside by an interrupted save", aside, path)
                return aside
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        warn(f"skipping checkpoint {path}: {problem}; falling back to the previous checkpoint")
    return None


def latest_checkpoint(checkpoint_dir: str, latest_filename: str | None = None) -> str | None:
    """The newest valid checkpoint in ``checkpoint_dir``, or None (``tf.train.latest_checkpoint``).

    ``latest_filename`` names the index file (default ``checkpoint.json``).
    """
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path, got {type(checkpoint_dir).__name__}")
    if latest_filename is not None and not is_plain_name(latest_filename):
        raise ValueError(f"latest_filename must be a plain file name, got {latest_filename!r}")
    return find_latest(os.fspath(checkpoint_dir), None, latest_filename or INDEX)


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint folder as ``CheckpointManager.checkpoints()`` lists it."""

    path: str
    step: int | None
    time: float | None
    size: int
    valid: bool
    problem: str | None


def list_checkpoints(directory: str, basename: str) -> list[CheckpointInfo]:
    """Every checkpoint folder of ``basename`` in ``directory``, by step, each verified."""
    infos = []
    for step, name in scan(directory, basename):
        path = os.path.join(directory, name)
        problem = verify_checkpoint(path)
        manifest, _ = read_manifest(path)
        when = float(manifest["time"]) if manifest is not None else None
        infos.append(CheckpointInfo(path, step, when, folder_size(path), problem is None, problem))
    return infos
