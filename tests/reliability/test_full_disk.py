"""A full disk or a read-only directory during a save: a clear error, the previous checkpoint intact.

Real filesystems where this process may mount them (a tiny tmpfs, remounted
read-only; needs root), and everywhere an ``ENOSPC`` injected at each
boundary of the save protocol.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.backends.numpy import NumpyBackend
from looprt.checkpoint import BOUNDARIES, CheckpointManager, latest_checkpoint, verify_checkpoint
from looprt.errors import PermissionDeniedError, ResourceExhaustedError

WRITE = NumpyBackend().save_payload


def state(step: int, size: int = 4) -> dict[str, Any]:
    return {"global_step": np.int64(step), "w": np.full(size, float(step))}


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` and its content."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_a_real_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "160k") as disk:
        manager = CheckpointManager(str(disk), max_to_keep=1)
        manager.save(state(1, size=4096), 1, WRITE)  # ~33 KB
        before = snapshot(disk)
        with pytest.raises(ResourceExhaustedError, match=r"model\.ckpt-2.*disk is full") as info:
            manager.save(state(2, size=40000), 2, WRITE)  # ~320 KB: does not fit
        assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
        assert "left as they were" in str(info.value)
        assert snapshot(disk) == before  # nothing half-written left behind, nothing lost
        assert latest_checkpoint(str(disk)) == str(disk / "model.ckpt-1")
        manager.save(state(3, size=4096), 3, WRITE)  # once it fits again, saving works on
        assert latest_checkpoint(str(disk)) == str(disk / "model.ckpt-3")
        assert sorted(os.listdir(disk)) == ["checkpoint.json", "model.ckpt-3"]


def test_a_real_read_only_filesystem(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        prog = looprt.Program(name="ro")
        w = prog.state("w", np.full(3, 5.0))
        saver = looprt.Saver(prog)
        saver.save(None, str(disk / "model.ckpt"), global_step=1)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = snapshot(disk)
        w.value[...] = 7.0
        with pytest.raises(PermissionDeniedError, match=r"not writable \(Read-only file system\)") as info:
            saver.save(None, str(disk / "model.ckpt"), global_step=2)
        assert isinstance(info.value, PermissionError)
        assert snapshot(disk) == before
        # Reading and restoring need no write access.
        assert saver.latest_checkpoint(str(disk)) == str(disk / "model.ckpt-1")
        saver.restore(None, str(disk / "model.ckpt-1"))
        np.testing.assert_array_equal(w.value, np.full(3, 5.0))


def test_a_read_only_directory_for_a_user_without_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through chmod; the read-only filesystem test covers root")
    manager = CheckpointManager(str(tmp_path), max_to_keep=1)
    manager.save(state(1), 1, WRITE)
    before = snapshot(tmp_path)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(PermissionDeniedError, match="not writable"):
            manager.save(state(2), 2, WRITE)
    finally:
        os.chmod(tmp_path, 0o755)
    assert snapshot(tmp_path) == before


# Boundaries a save to an empty-of-leftovers directory passes, in order, with max_to_keep=1
# and one checkpoint already there (so retention deletes it).
SAVE_BOUNDARIES = [b for b in BOUNDARIES if not b.startswith(("stale.", "commit.move_aside", "commit.displaced"))]
SAVE_BOUNDARIES.remove("payload.dir_fsync.after")
COMMITTED_FROM = SAVE_BOUNDARIES.index("index.replace.after")


@pytest.mark.parametrize("boundary", SAVE_BOUNDARIES)
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_at_each_boundary(
    tmp_path: Path, faults: Any, boundary: str, code: int
) -> None:
    manager = CheckpointManager(str(tmp_path), max_to_keep=1)
    manager.save(state(1), 1, WRITE)
    before = snapshot(tmp_path)
    faults.fail_at(boundary, OSError(code, os.strerror(code)))
    committed = SAVE_BOUNDARIES.index(boundary) >= COMMITTED_FROM
    expected = OSError if committed else (ResourceExhaustedError if code == errno.ENOSPC else PermissionDeniedError)
    with pytest.raises(expected) as info:
        manager.save(state(2), 2, WRITE)
    assert boundary in faults.boundaries()
    if committed:
        # The index already names the new checkpoint: the save happened, and the error says so.
        assert "model.ckpt-2 was saved" in str(info.value)
        assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-2")
    else:
        assert "left as they were" in str(info.value)
        assert snapshot(tmp_path) == before  # exactly as before the save
        assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-1")
    assert verify_checkpoint(str(tmp_path / "model.ckpt-1")) is None or committed
    manager.save(state(3), 3, WRITE)  # the next save cleans up and works
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json", "model.ckpt-3"]


def test_every_boundary_of_a_plain_save_is_covered(tmp_path: Path, faults: Any) -> None:
    manager = CheckpointManager(str(tmp_path), max_to_keep=1)
    manager.save(state(1), 1, WRITE)
    faults.passed.clear()
    manager.save(state(2), 2, WRITE)
    assert list(dict.fromkeys(faults.boundaries())) == SAVE_BOUNDARIES


RESAVE_BOUNDARIES = [b for b in BOUNDARIES if b.startswith("commit.")]


@pytest.mark.parametrize("boundary", RESAVE_BOUNDARIES)
def test_a_full_disk_while_replacing_a_checkpoint_of_the_same_step(
    tmp_path: Path, faults: Any, boundary: str
) -> None:
    manager = CheckpointManager(str(tmp_path), max_to_keep=2)
    manager.save(state(1), 1, WRITE)
    manager.save(state(2), 2, WRITE)
    before = snapshot(tmp_path)
    faults.fail_at(boundary, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(ResourceExhaustedError, match=r"model\.ckpt-2"):
        manager.save(state(2, size=5), 2, WRITE)  # a resumed run saves its restored step again
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-2")
    replaced = RESAVE_BOUNDARIES.index(boundary) > RESAVE_BOUNDARIES.index("commit.rename.before")
    size = NumpyBackend().load_payload(str(tmp_path / "model.ckpt-2"))["w"].size
    assert size == (5 if replaced else 4)  # the old one, or its complete replacement
    if not replaced:
        assert snapshot(tmp_path) == before
    manager.save(state(3), 3, WRITE)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json", "model.ckpt-2", "model.ckpt-3"]
