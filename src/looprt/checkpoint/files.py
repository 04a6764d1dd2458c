"""File-system helpers of the save protocol: fsync a file or folder, delete without raising, measure."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil

logger = logging.getLogger(__name__)


def fsync_file(path: str) -> None:
    """Flush file ``path`` to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush folder ``path`` (its entries) to disk, where the OS and filesystem can."""
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


def remove(path: str) -> None:
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


def folder_size(path: str) -> int:
    """Bytes in the files under ``path``; unreadable ones count 0."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total
