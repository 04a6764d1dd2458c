"""Damaged checkpoints: the warning that names one, and the checkpoints this process saw fail.

Every checkpoint that fails verification is remembered (by absolute path or
URL, in this process), so that the writer of its directory sets it aside
instead of deleting or replacing it.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

from looprt.checkpoint.storage import is_url


class CheckpointWarning(UserWarning):
    """A checkpoint or the index is damaged and was skipped."""


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside looprt, so a warning names the caller's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def warn(message: str) -> None:
    """Issue ``message`` as a ``CheckpointWarning`` (a damaged checkpoint or index), and only that.

    One channel: the ``warnings`` module (filter it, or turn it into an
    error, by category), pointing at the first line outside looprt that led
    here. ``looprt``'s command line shows it as one log line.
    """
    warnings.warn(message, CheckpointWarning, stacklevel=_caller_stacklevel())


# Checkpoints that failed verification in this process: absolute path -> the problem.
_failed: dict[str, str] = {}
_failed_lock = threading.Lock()
DAMAGED_SUFFIX = ".damaged"


def note_damaged(path: str, problem: str) -> None:
    """Remember that checkpoint ``path`` failed verification (its writer sets it aside)."""
    with _failed_lock:
        _failed[_key(path)] = problem


def known_damaged(directory: str) -> dict[str, str]:
    """Name -> problem of the checkpoints of ``directory`` that failed verification in this process."""
    directory = _key(directory).rstrip("/") or "/"
    with _failed_lock:
        return {p.rpartition("/")[2]: why for p, why in _failed.items() if p.rpartition("/")[0] == directory}


def forget_damaged(path: str) -> None:
    """``path`` was set aside or replaced: it is no longer a damaged checkpoint in view."""
    with _failed_lock:
        _failed.pop(_key(path), None)


def _key(path: str) -> str:
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path).replace(os.sep, "/")
