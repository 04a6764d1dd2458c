"""Retention: which checkpoints to keep, the index that records them, and deleting the rest.

As TF's ``Saver`` does, the newest ``max_to_keep`` checkpoints are kept (None
or 0: all), and one more every ``keep_checkpoint_every_n_hours`` of
training. The index is written first, naming the checkpoints about to be
deleted, and only then are they deleted: a crash in between leaves them
named in the index, and the next save finishes the job. A checkpoint is
renamed out of view before its files are deleted, so none is ever seen half
deleted. A checkpoint that failed verification is never deleted: it is set
aside as ``<name>.damaged`` (``set_aside``) for a person to inspect.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from collections.abc import Callable
from typing import Any

from looprt.checkpoint.commit import SaveProgress, move_aside, release_tmp, reserve_tmp
from looprt.checkpoint.faults import boundary
from looprt.checkpoint.files import fsync_dir, remove
from looprt.checkpoint.format import FORMAT_VERSION, Record, json_with_checksum, read_index, read_manifest
from looprt.checkpoint.latest import DAMAGED_SUFFIX, displaced_copy, forget_damaged, known_damaged, scan, warn

logger = logging.getLogger(__name__)


def check_retention(max_to_keep: Any, keep_checkpoint_every_n_hours: Any) -> None:
    """Raise ``ValueError`` unless ``max_to_keep`` is None or an int >= 0 and the hours a number >= 0."""
    if max_to_keep is not None and (
        isinstance(max_to_keep, bool) or not isinstance(max_to_keep, numbers.Integral) or max_to_keep < 0
    ):
        raise ValueError(f"max_to_keep must be None or an int >= 0, got {max_to_keep!r}")
    hours = keep_checkpoint_every_n_hours
    real = isinstance(hours, numbers.Real) and not isinstance(hours, bool)
    if not real or not float(hours) >= 0:  # NaN fails >=
        raise ValueError(f"keep_checkpoint_every_n_hours must be a number >= 0, got {hours!r}")


@dataclasses.dataclass(frozen=True)
class Retained:
    """What the index of a directory records: the checkpoints kept, and those being deleted.

    ``kept``: in rotation, oldest first; ``preserved``: kept for good by the
    N-hour rule; ``next_keep_time``: when the next may be preserved;
    ``deleting``: checkpoints retention decided to delete (and may not have
    yet: a crash in between leaves them to the next save).
    """

    latest: str | None
    kept: list[Record]
    preserved: list[Record]
    next_keep_time: float
    deleting: list[str]


def recover(
    directory: str, basename: str, index_filename: str, next_keep_time: float, clock: Callable[[], float]
) -> Retained:
    """What the index of ``directory`` records, or, if it is missing or damaged, its folders say.

    ``next_keep_time`` is used where the index has none. A damaged index is
    warned about (``CheckpointWarning``); nothing on disk is changed.
    """
    index, problem = read_index(directory, index_filename)
    if problem is not None:
        warn(
            f"checkpoint index {os.path.join(directory, index_filename)} {problem}; "
            f"rebuilding the list of checkpoints from the folders in {directory}"
        )
    if index is None:
        scanned = scan(directory, basename)
        kept = [Record(name, step, _time_of(directory, name, clock)) for step, name in scanned]
        return Retained(kept[-1].name if kept else None, kept, [], next_keep_time, [])

    def exists(name: str) -> bool:
        # A checkpoint moved aside by an interrupted replacement is put back by the next save.
        return os.path.isdir(os.path.join(directory, name)) or displaced_copy(directory, name) is not None

    return Retained(
        index.latest,
        [r for r in index.kept if exists(r.name)],
        [r for r in index.preserved if exists(r.name)],
        next_keep_time if index.next_keep_time is None else index.next_keep_time,
        list(index.deleting),
    )


def _time_of(directory: str, name: str, clock: Callable[[], float]) -> float:
    manifest, _ = read_manifest(os.path.join(directory, name))
    if manifest is not None:
        return float(manifest["time"])
    try:
        return os.path.getmtime(os.path.join(directory, name))
    except OSError:
        return clock()


def rotate(
    retained: Retained, new: Record, *, max_to_keep: int | None, keep_every_seconds: float
) -> Retained:
    """``retained`` with ``new`` added as the latest, and the older checkpoints that go marked to delete.

    The oldest of more than ``max_to_keep`` (None or 0: no limit) is
    preserved instead of deleted if it was written after ``next_keep_time``
    (which then moves on by ``keep_every_seconds``). ``new`` itself is never
    deleted.
    """
    kept = [r for r in retained.kept if r.name != new.name] + [new]
    preserved = [r for r in retained.preserved if r.name != new.name]
    next_keep_time = retained.next_keep_time
    doomed: list[str] = []
    if max_to_keep:
        while len(kept) > max_to_keep:
            oldest = kept.pop(0)
            if oldest.time > next_keep_time:
                next_keep_time += keep_every_seconds
                preserved.append(oldest)
            elif oldest.name != new.name:
                doomed.append(oldest.name)
    return Retained(new.name, kept, preserved, next_keep_time, doomed)


def index_data(retained: Retained) -> dict[str, Any]:
    """The index's content for ``retained``, local or remote alike."""

    def records(items: list[Record]) -> list[dict[str, Any]]:
        return [{"path": r.name, "step": r.step, "time": r.time} for r in items]

    return {
        "format_version": FORMAT_VERSION,
        "latest": retained.latest,
        "checkpoints": records(retained.kept),
        "preserved": records(retained.preserved),
        "next_keep_time": retained.next_keep_time,
        "deleting": retained.deleting,
    }


def write_index(directory: str, index_filename: str, retained: Retained, progress: SaveProgress) -> None:
    """Atomically replace the index of ``directory``; sets ``progress.indexed`` once it is replaced."""
    latest = retained.latest or ""
    data = index_data(retained)
    boundary("index.write.before", latest)
    tmp = reserve_tmp(directory, "index", index_filename, folder=False)
    try:
        with open(tmp, "wb") as f:
            f.write(json_with_checksum(data))
            f.flush()
            boundary("index.write.after", latest)
            os.fsync(f.fileno())
        boundary("index.fsync.after", latest)
        os.replace(tmp, os.path.join(directory, index_filename))
        progress.indexed = True
        boundary("index.replace.after", latest)
        fsync_dir(directory)
        boundary("index.dir_fsync.after", latest)
    except BaseException:
        remove(tmp)
        raise
    finally:
        release_tmp(tmp)


def set_aside(directory: str, name: str, problem: str) -> str | None:
    """Rename damaged checkpoint ``name`` to ``<name>.damaged`` (``.damaged.2``, ...); return the new path.

    Out of view of every reader and of retention, kept for inspection; a
    ``CheckpointWarning`` says where. Failures are logged, not raised (None).
    """
    path = os.path.join(directory, name)
    target, n = path + DAMAGED_SUFFIX, 1
    while os.path.lexists(target):
        n += 1
        target = f"{path}{DAMAGED_SUFFIX}.{n}"
    try:
        os.rename(path, target)
        fsync_dir(directory)
    except OSError as e:
        logger.warning("Could not set aside damaged checkpoint %s: %s", path, e)
        return None
    forget_damaged(path)
    warn(f"set aside damaged checkpoint {path} as {target} ({problem}); looprt never deletes it")
    return target


def _quick_problem(directory: str, name: str) -> str | None:
    """Why checkpoint ``name`` is damaged, if this process saw it fail or its manifest or sizes say so.

    Cheap (no checksums): what retention checks before it deletes a checkpoint.
    """
    problem = known_damaged(directory).get(name)
    if problem is not None:
        return problem
    path = os.path.join(directory, name)
    manifest, problem = read_manifest(path)
    if manifest is None:
        return problem
    for file_name, entry in manifest["files"].items():
        try:
            size = os.path.getsize(os.path.join(path, *file_name.split("/")))
        except OSError:
            return f"{file_name} is missing"
        if size != entry["size"]:
            return f"{file_name} has {size} bytes; the manifest says {entry['size']}"
    return None


def delete_checkpoint(directory: str, name: str) -> None:
    """Delete checkpoint ``name`` of ``directory``, if there; failures are logged, not raised.

    A checkpoint seen to be damaged (``_quick_problem``) is set aside instead.
    """
    path = os.path.join(directory, name)
    if not os.path.lexists(path):
        return
    problem = _quick_problem(directory, name) if os.path.isdir(path) else None
    if problem is not None:
        set_aside(directory, name, problem)
        return
    boundary("retention.delete.before", name)
    logger.info("Deleting old checkpoint %s", path)
    # Renamed first, so a crash mid-delete never leaves a half-deleted checkpoint in view.
    try:
        doomed = move_aside(directory, path, "deleting", name)
    except OSError as e:
        logger.warning("Ignoring: could not delete %s: %s", path, e)
        return
    try:
        boundary("retention.move_aside.after", name)
        remove(doomed)
    finally:
        release_tmp(doomed)  # if left behind, the next save removes it
    boundary("retention.delete.after", name)
