"""Asynchronous saves: staged state, one save in flight, errors never swallowed, retention safe.

Saves are held at a named boundary by the ``faults`` fixture, so every
ordering below is forced with events, never with sleeps.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.backends.numpy import NumpyBackend
from looprt.checkpoint import CheckpointManager, Saver, latest_checkpoint
from looprt.errors import ResourceExhaustedError

WRITE = NumpyBackend().save_payload


def state(step: int) -> dict[str, Any]:
    return {"global_step": np.int64(step), "w": np.full(3, float(step))}


def program() -> tuple[looprt.Program, looprt.Step, looprt.State]:
    prog = looprt.Program(name="async")
    w = prog.state("w", np.zeros(3))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w.sum())}

    return prog, train, w


def test_the_state_is_staged_when_the_save_starts(tmp_path: Path, faults: Any) -> None:
    prog, train, w = program()
    sess = looprt.ProgramSession(prog)
    sess.run(prog.initializer)
    sess.run(train)
    saver = Saver(prog)
    held = faults.block_at("payload.write.before")
    path = saver.save_async(sess, str(tmp_path / "model.ckpt"))
    assert path == str(tmp_path / "model.ckpt-1")
    assert held.wait(timeout=60)
    for _ in range(5):  # training goes on while the save is being written
        sess.run(train)
    assert latest_checkpoint(str(tmp_path)) is None  # nothing committed yet
    faults.release()
    saver.wait_until_finished()
    assert latest_checkpoint(str(tmp_path)) == path
    np.testing.assert_array_equal(NumpyBackend().load_payload(path)["w"], np.full(3, 1.0))
    np.testing.assert_array_equal(w.value, np.full(3, 6.0))


def test_at_most_one_save_is_in_flight(tmp_path: Path, faults: Any) -> None:
    manager = CheckpointManager(str(tmp_path))
    held = faults.block_at("manifest.write.before")
    manager.save_async(state(1), 1, WRITE)
    assert held.wait(timeout=60)
    second_returned = threading.Event()

    def second() -> None:
        manager.save_async(state(2), 2, WRITE)
        second_returned.set()

    caller = threading.Thread(target=second)
    caller.start()
    faults.release()
    caller.join(timeout=60)
    assert second_returned.is_set()
    manager.wait_until_finished()
    # The second save began only after the first had ended.
    sequence = [(b, s) for b, s, _ in faults.passed if b in ("save.begin", "save.end")]
    assert sequence == [
        ("save.begin", "model.ckpt-1"), ("save.end", "model.ckpt-1"),
        ("save.begin", "model.ckpt-2"), ("save.end", "model.ckpt-2"),
    ]
    assert {t for _, _, t in faults.passed} == {"looprt-save-model.ckpt-1", "looprt-save-model.ckpt-2"}
    assert manager.latest_checkpoint() == str(tmp_path / "model.ckpt-2")


@pytest.mark.parametrize("raised_by", ["save_async", "save", "wait_until_finished", "close"])
def test_a_background_failure_is_raised_by_the_next_call(
    tmp_path: Path, faults: Any, caplog: pytest.LogCaptureFixture, raised_by: str
) -> None:
    manager = CheckpointManager(str(tmp_path))
    manager.save(state(1), 1, WRITE)
    faults.fail_at("payload.fsync.after", OSError(errno.ENOSPC, "No space left on device"))
    with caplog.at_level(logging.ERROR, logger="looprt"):
        manager.save_async(state(2), 2, WRITE)  # returns at once; the failure comes later
        manager._join()
    assert any("model.ckpt-2 failed" in r.getMessage() for r in caplog.records)  # logged when it happened
    call = {
        "save_async": lambda: manager.save_async(state(3), 3, WRITE),
        "save": lambda: manager.save(state(3), 3, WRITE),
        "wait_until_finished": manager.wait_until_finished,
        "close": manager.close,
    }[raised_by]
    with pytest.raises(ResourceExhaustedError, match=r"model\.ckpt-2.*disk is full") as info:
        call()
    assert "raised by the background save of checkpoint" in "".join(getattr(info.value, "__notes__", []))
    manager.close()  # raised once, not again
    assert manager.latest_checkpoint() == str(tmp_path / "model.ckpt-1")  # the failed save changed nothing
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".tmp")]
    manager.save(state(3), 3, WRITE)  # and the manager works on
    assert manager.latest_checkpoint() == str(tmp_path / "model.ckpt-3")


def test_retention_keeps_the_newest_committed_checkpoint_while_a_save_is_in_flight(
    tmp_path: Path, faults: Any
) -> None:
    manager = CheckpointManager(str(tmp_path), max_to_keep=1)
    manager.save(state(1), 1, WRITE)
    held = faults.block_at("commit.rename.before")  # the new checkpoint is complete, not yet in place
    manager.save_async(state(2), 2, WRITE)
    assert held.wait(timeout=60)
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-1")
    assert (tmp_path / "model.ckpt-1").is_dir()
    faults.release()
    manager.wait_until_finished()
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("model")) == ["model.ckpt-2"]
    boundaries = faults.boundaries()
    # The old checkpoint went only after the new one was committed.
    assert boundaries.index("retention.delete.before") > boundaries.index("index.replace.after")


def test_saver_latest_checkpoint_waits_for_its_save_in_flight(tmp_path: Path, faults: Any) -> None:
    prog, _, _ = program()
    saver = Saver(prog)
    saver.save(None, str(tmp_path / "model.ckpt"), global_step=1)
    held = faults.block_at("index.write.before")
    saver.save_async(None, str(tmp_path / "model.ckpt"), global_step=2)
    assert held.wait(timeout=60)
    found: list[str | None] = []
    reader = threading.Thread(target=lambda: found.append(saver.latest_checkpoint(str(tmp_path))))
    reader.start()
    faults.release()
    reader.join(timeout=60)
    assert found == [str(tmp_path / "model.ckpt-2")]  # a recovering session restores the newest


def test_checkpoint_saver_hook_with_async_saves(tmp_path: Path, faults: Any) -> None:
    prog, train, _ = program()
    hook = looprt.CheckpointSaverHook(str(tmp_path), save_steps=2, async_save=True)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
        for _ in range(5):
            sess.run(train)
    # end() saved step 5 and waited for it: nothing is in flight, everything committed.
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-5")
    saved = [s for b, s, _ in faults.passed if b == "index.replace.after"]
    assert saved == ["model.ckpt-0", "model.ckpt-2", "model.ckpt-4", "model.ckpt-5"]
    assert all(t.startswith("looprt-save-") for b, _, t in faults.passed if b == "payload.write.before")
    np.testing.assert_array_equal(NumpyBackend().load_payload(str(tmp_path / "model.ckpt-4"))["w"], np.full(3, 4.0))


def test_checkpoint_saver_hook_raises_a_background_failure(tmp_path: Path, faults: Any) -> None:
    prog, train, _ = program()
    hook = looprt.CheckpointSaverHook(str(tmp_path), save_steps=2, async_save=True)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    faults.fail_at("manifest.write.before", OSError(errno.ENOSPC, "No space left on device"), "model.ckpt-2")
    with (
        pytest.raises(ResourceExhaustedError, match=r"model\.ckpt-2"),
        looprt.MonitoredSession(creator, hooks=[hook]) as sess,
    ):
        for _ in range(5):
            sess.run(train)  # the save of step 2 fails; the save of step 4 raises it
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-0")


def test_async_save_needs_a_saver_that_can(tmp_path: Path) -> None:
    prog, train, _ = program()

    class SyncOnly:
        def save(self, *args: Any, **kwargs: Any) -> str:
            return ""

    hook = looprt.CheckpointSaverHook(str(tmp_path), save_steps=1, saver=SyncOnly(), async_save=True)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with pytest.raises(TypeError, match="async_save=True needs a saver with save_async"):
        looprt.MonitoredSession(creator, hooks=[hook])
