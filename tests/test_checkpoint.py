"""Crash-safe checkpoints: round trips, resuming, retention, corruption, crashes, permissions."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.backends.numpy import NumpyBackend
from looprt.checkpoint import (
    CheckpointManager,
    CheckpointWarning,
    Saver,
    latest_checkpoint,
    verify_checkpoint,
)
from looprt.errors import DataLossError, FailedPreconditionError, NotFoundError, PermissionDeniedError

WRITE = NumpyBackend().save_payload


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_program(name: str = "p", size: int = 3) -> tuple[looprt.Program, looprt.Step]:
    prog = looprt.Program(backend="numpy", name=name)
    prog.state("w", np.zeros(size))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w.sum())}

    return prog, train


def trained_session(steps: int, prog_and_train: Any = None) -> tuple[looprt.Program, looprt.ProgramSession]:
    prog, train = prog_and_train or make_program()
    sess = looprt.ProgramSession(prog)
    sess.run(prog.initializer)
    for _ in range(steps):
        sess.run(train)
    return prog, sess


def state(step: int) -> dict[str, Any]:
    return {"global_step": np.int64(step), "w": np.full(3, float(step))}


def steps_on_disk(directory: Path, basename: str = "model.ckpt") -> list[int]:
    return sorted(int(p.name.rsplit("-", 1)[1]) for p in directory.glob(f"{basename}-*"))


def index_of(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "checkpoint.json").read_text())


def saved_manager(directory: Path, steps: range | list[int], **kwargs: Any) -> CheckpointManager:
    manager = CheckpointManager(str(directory), **kwargs)
    for step in steps:
        manager.save(state(step), step, WRITE, backend="numpy")
    return manager


# -- save and restore ------------------------------------------------------------------


def test_save_restore_round_trip(tmp_path: Path) -> None:
    prog, sess = trained_session(3)
    saver = Saver(prog)
    path = saver.save(sess, str(tmp_path / "model.ckpt"), global_step=prog.global_step)
    assert path == str(tmp_path / "model.ckpt-3")
    assert saver.last_checkpoints == [path]
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    assert manifest["step"] == 3 and manifest["backend"] == "numpy" and manifest["format_version"] == 2
    entry = manifest["files"]["state.npz"]
    assert entry["size"] == (Path(path) / "state.npz").stat().st_size > 0
    assert isinstance(entry["crc32c"], int)
    assert index_of(tmp_path)["latest"] == "model.ckpt-3"

    train = prog.steps["train"]
    sess.run(train)
    sess.run(train)
    assert sess.run(prog.global_step) == 5
    saver.restore(sess, path)
    assert sess.run(prog.global_step) == 3
    np.testing.assert_array_equal(sess.run("w"), np.full(3, 3.0))


def test_restore_into_a_fresh_program(tmp_path: Path) -> None:
    prog, sess = trained_session(4)
    path = Saver(prog).save(sess, str(tmp_path / "model.ckpt"), global_step=4)
    fresh, fresh_sess = trained_session(0)
    Saver(fresh).restore(fresh_sess, path)
    assert fresh_sess.run(fresh.global_step) == 4
    np.testing.assert_array_equal(fresh_sess.run("w"), np.full(3, 4.0))


def test_save_without_global_step_names_the_checkpoint_by_the_program_step(tmp_path: Path) -> None:
    prog, sess = trained_session(2)
    assert Saver(prog).save(sess, str(tmp_path / "m")) == str(tmp_path / "m-2")


def test_scaffold_default_saver_is_a_checkpoint_saver() -> None:
    prog, _ = make_program()
    saver = looprt.Scaffold(program=prog).finalize().saver
    assert isinstance(saver, Saver) and saver.program is prog


def test_monitored_session_resumes_from_latest_checkpoint(tmp_path: Path) -> None:
    ckpt = str(tmp_path)
    prog, train = make_program()
    scaffold = looprt.Scaffold(program=prog)
    with looprt.MonitoredSession(looprt.ChiefSessionCreator(scaffold, checkpoint_dir=ckpt)) as sess:
        for step in range(1, 6):
            sess.run(train)
            if step in (2, 5):
                scaffold.saver.save(sess, os.path.join(ckpt, "model.ckpt"), global_step=step)

    prog2, train2 = make_program()  # a new process: same program, fresh state
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog2), checkpoint_dir=ckpt)
    with looprt.MonitoredSession(creator) as sess:
        assert sess.run(prog2.global_step) == 5
        sess.run(train2)
        assert sess.run([prog2.global_step, "w"])[0] == 6
        np.testing.assert_array_equal(sess.run("w"), np.full(3, 6.0))


def test_checkpoint_filename_with_path_restores_exactly_that_one(tmp_path: Path) -> None:
    saved_manager(tmp_path, [1, 2, 3])
    prog, _ = make_program()
    creator = looprt.ChiefSessionCreator(
        looprt.Scaffold(program=prog), checkpoint_filename_with_path=str(tmp_path / "model.ckpt-2")
    )
    with looprt.MonitoredSession(creator) as sess:
        assert sess.run(prog.global_step) == 2
        np.testing.assert_array_equal(sess.run("w"), np.full(3, 2.0))


def test_nonexistent_checkpoint_path_is_a_clear_error(tmp_path: Path) -> None:
    saved_manager(tmp_path, [1])
    missing = str(tmp_path / "model.ckpt-7")
    prog, _ = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_filename_with_path=missing)
    with pytest.raises(NotFoundError, match="model.ckpt-7"):
        creator.create_session()


def test_restoring_a_corrupt_checkpoint_raises_and_changes_no_state(tmp_path: Path) -> None:
    prog, sess = trained_session(2)
    saver = Saver(prog)
    path = saver.save(sess, str(tmp_path / "model.ckpt"), global_step=2)
    flip_bit(Path(path) / "state.npz")
    sess.run(prog.steps["train"])
    with pytest.raises(DataLossError, match=r"model\.ckpt-2.*crc32"):
        saver.restore(sess, path)
    assert sess.run(prog.global_step) == 3
    np.testing.assert_array_equal(sess.run("w"), np.full(3, 3.0))
    with pytest.raises(ValueError, match="None"):
        saver.restore(sess, None)


def test_restore_is_all_or_nothing(tmp_path: Path) -> None:
    """A checkpoint whose second piece of state does not fit leaves the first one untouched."""
    source = looprt.Program(name="src")
    source.state("a", np.full(2, 7.0))
    source.state("b", np.zeros(3))
    path = Saver(source).save(None, str(tmp_path / "model.ckpt"), global_step=9)

    target = looprt.Program(name="dst")
    a = target.state("a", np.zeros(2))
    target.state("b", np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        Saver(target).restore(None, path)
    np.testing.assert_array_equal(a.value, np.zeros(2))
    assert target.global_step.value == 0


# -- retention -------------------------------------------------------------------------


def test_max_to_keep_deletes_the_oldest(tmp_path: Path) -> None:
    clock = FakeClock()
    manager = CheckpointManager(str(tmp_path), max_to_keep=3, clock=clock)
    for step in range(1, 8):
        clock.advance(60)
        manager.save(state(step), step, WRITE)
    assert steps_on_disk(tmp_path) == [5, 6, 7]
    index = index_of(tmp_path)
    assert index["latest"] == "model.ckpt-7"
    assert [(c["path"], c["time"]) for c in index["checkpoints"]] == [
        (f"model.ckpt-{s}", 1_000_000.0 + 60 * s) for s in (5, 6, 7)
    ]
    assert manager.last_checkpoints == [str(tmp_path / f"model.ckpt-{s}") for s in (5, 6, 7)]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


@pytest.mark.parametrize("max_to_keep", [None, 0])
def test_max_to_keep_none_or_zero_keeps_everything(tmp_path: Path, max_to_keep: int | None) -> None:
    saved_manager(tmp_path, range(1, 8), max_to_keep=max_to_keep)
    assert steps_on_disk(tmp_path) == list(range(1, 8))


def test_keep_checkpoint_every_n_hours(tmp_path: Path) -> None:
    # TF's rule: a checkpoint leaving the rotation is kept when written after the next
    # keep time (creation + N h), which then moves on by N h. Saves every 20 minutes,
    # max_to_keep=2, N=1: steps 4 (80 min) and 7 (140 min) are kept for good.
    clock = FakeClock(0.0)
    manager = CheckpointManager(str(tmp_path), max_to_keep=2, keep_checkpoint_every_n_hours=1.0, clock=clock)
    for step in range(1, 11):
        clock.advance(1200)
        manager.save(state(step), step, WRITE)
    assert steps_on_disk(tmp_path) == [4, 7, 9, 10]
    assert [c["path"] for c in index_of(tmp_path)["preserved"]] == ["model.ckpt-4", "model.ckpt-7"]
    assert manager.last_checkpoints == [str(tmp_path / "model.ckpt-9"), str(tmp_path / "model.ckpt-10")]


def test_rotation_carries_on_after_a_restart(tmp_path: Path) -> None:
    saved_manager(tmp_path, [1, 2, 3], max_to_keep=3)
    saved_manager(tmp_path, [4], max_to_keep=3)  # a new process, a new manager
    assert steps_on_disk(tmp_path) == [2, 3, 4]


def test_saving_a_step_again_replaces_it(tmp_path: Path) -> None:
    manager = saved_manager(tmp_path, [1, 2])
    manager.save({"global_step": np.int64(2), "w": np.full(3, 42.0)}, 2, WRITE)
    assert steps_on_disk(tmp_path) == [1, 2]
    assert [c["path"] for c in index_of(tmp_path)["checkpoints"]] == ["model.ckpt-1", "model.ckpt-2"]
    assert NumpyBackend().load_payload(str(tmp_path / "model.ckpt-2"))["w"][0] == 42.0
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_retention_matches_tf_saver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.training import saver as tf_saver_module

    clock = FakeClock(5000.0)
    monkeypatch.setattr(tf_saver_module, "time", types.SimpleNamespace(time=clock))
    gaps = [1500, 1500, 1500, 1500, 200, 3000, 3700, 10, 10, 4000, 100, 100, 7300, 5, 5, 5]
    steps = [1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15]  # step 7 saved twice
    tf_dir, our_dir = tmp_path / "tf", tmp_path / "ours"
    tf_dir.mkdir()
    with tf.Graph().as_default():
        v = tf.compat.v1.Variable(1.0)
        tf_saver = tf.compat.v1.train.Saver(max_to_keep=3, keep_checkpoint_every_n_hours=1.0)
        ours = CheckpointManager(str(our_dir), max_to_keep=3, keep_checkpoint_every_n_hours=1.0, clock=clock)
        with tf.compat.v1.Session() as sess:
            sess.run(v.initializer)
            for gap, step in zip(gaps, steps):
                clock.advance(gap)
                tf_saver.save(sess, str(tf_dir / "model.ckpt"), global_step=step)
                ours.save(state(step), step, WRITE)
        tf_last = [int(p.rsplit("-", 1)[1]) for p in tf_saver.last_checkpoints]
    tf_on_disk = sorted(int(p.name.split("-")[1].split(".")[0]) for p in tf_dir.glob("model.ckpt-*.index"))
    assert steps_on_disk(our_dir) == tf_on_disk
    assert [int(p.rsplit("-", 1)[1]) for p in ours.last_checkpoints] == tf_last
    assert len(tf_on_disk) > len(tf_last)  # the test exercises keep_checkpoint_every_n_hours


# -- corruption --------------------------------------------------------------------------


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])


CORRUPTIONS = {
    "truncated payload": (lambda ck: truncate(ck / "state.npz"), "state.npz has"),
    "zero-length payload": (lambda ck: truncate(ck / "state.npz", 0), "state.npz has 0 bytes"),
    "flipped bit": (lambda ck: flip_bit(ck / "state.npz"), "crc32c"),
    "missing payload": (lambda ck: (ck / "state.npz").unlink(), "state.npz is missing"),
    "garbled manifest": (lambda ck: (ck / "manifest.json").write_text('{"step": 3, "fil'), "garbled"),
    "missing manifest": (lambda ck: (ck / "manifest.json").unlink(), "manifest.json is missing"),
    "wrong-step manifest": (  # an intact manifest of another step (a folder copied over)
        lambda ck: (ck / "manifest.json").write_bytes((ck.parent / "model.ckpt-2" / "manifest.json").read_bytes()),
        "step 2",
    ),
    "edited manifest": (
        lambda ck: (ck / "manifest.json").write_text(
            (ck / "manifest.json").read_text().replace('"backend": "numpy"', '"backend": "nump"')
        ),
        "fails its checksum",
    ),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    manager = saved_manager(tmp_path, [1, 2, 3])
    damage, problem = CORRUPTIONS[kind]
    bad = tmp_path / "model.ckpt-3"
    damage(bad)
    assert problem in (verify_checkpoint(str(bad)) or "")
    assert manager.verify(str(tmp_path / "model.ckpt-2")) is None
    for find in (manager.latest_checkpoint, lambda: latest_checkpoint(str(tmp_path))):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="looprt"), pytest.warns(CheckpointWarning) as record:
            assert find() == str(tmp_path / "model.ckpt-2")
        assert len(record) == 1
        assert str(bad) in str(record[0].message) and problem in str(record[0].message)
        # One channel: the warning (pointing at the caller's line, not looprt's), no second log line.
        assert record[0].filename == __file__
        assert not [r for r in caplog.records if str(bad) in r.getMessage()]


def test_a_crc_mismatch_is_reported_in_hex_on_both_sides(tmp_path: Path) -> None:
    saved_manager(tmp_path, [1])
    flip_bit(tmp_path / "model.ckpt-1" / "state.npz")
    problem = verify_checkpoint(str(tmp_path / "model.ckpt-1")) or ""
    assert re.search(r"computed 0x[0-9a-f]{8}; the manifest says 0x[0-9a-f]{8}\)", problem), problem


def test_resuming_falls_back_past_a_damaged_checkpoint(tmp_path: Path) -> None:
    saved_manager(tmp_path, [1, 2, 3])
    flip_bit(tmp_path / "model.ckpt-3" / "state.npz")
    prog, _ = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_dir=str(tmp_path))
    with pytest.warns(CheckpointWarning, match=r"model\.ckpt-3"), looprt.MonitoredSession(creator) as sess:
        assert sess.run(prog.global_step) == 2


def test_every_checkpoint_damaged_is_a_data_loss_error_naming_each(tmp_path: Path) -> None:
    manager = saved_manager(tmp_path, [1, 2])
    for step in (1, 2):
        truncate(tmp_path / f"model.ckpt-{step}" / "state.npz", 0)
    before = sorted(os.listdir(tmp_path))
    for find in (manager.latest_checkpoint, lambda: latest_checkpoint(str(tmp_path))):
        with pytest.warns(CheckpointWarning), pytest.raises(DataLossError) as error:
            find()
        message = str(error.value)
        for step in (1, 2):
            assert f"model.ckpt-{step}: state.npz has 0 bytes" in message
        assert "start_fresh_if_damaged=True" in message
    assert sorted(os.listdir(tmp_path)) == before  # a reader changes nothing
    with pytest.warns(CheckpointWarning):
        assert manager.latest_checkpoint(start_fresh_if_damaged=True) is None
        assert latest_checkpoint(str(tmp_path), start_fresh_if_damaged=True) is None


def test_a_session_refuses_to_start_from_scratch_over_damaged_checkpoints(tmp_path: Path) -> None:
    prog, train = make_program()
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog), save_checkpoint_steps=2,
        hooks=[looprt.StopAtStepHook(last_step=4)], save_summaries_steps=None, log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            sess.run(train)
    saved = steps_on_disk(tmp_path)
    assert saved == [0, 2, 4]
    for step in saved:
        flip_bit(tmp_path / f"model.ckpt-{step}" / "state.npz")

    def relaunch(saver: Saver | None) -> looprt.Program:
        prog, train = make_program()
        with looprt.MonitoredTrainingSession(
            checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog, saver=saver),
            save_checkpoint_steps=1, hooks=[looprt.StopAtStepHook(num_steps=8)],
            save_summaries_steps=None, log_step_count_steps=None,
        ) as sess:
            while not sess.should_stop():
                sess.run(train)
        return prog

    with pytest.warns(CheckpointWarning), pytest.raises(DataLossError, match=r"model\.ckpt-4: .*crc32"):
        relaunch(None)
    assert steps_on_disk(tmp_path) == saved  # nothing trained, nothing deleted

    # Opting in: training starts from scratch; the damaged checkpoints are set aside, never
    # deleted, though 9 saves with max_to_keep=5 rotate everything else out.
    with pytest.warns(CheckpointWarning) as record:
        prog = relaunch(Saver(make_program()[0], start_fresh_if_damaged=True))
    assert sum("set aside damaged checkpoint" in str(w.message) for w in record) == 3
    assert int(prog.global_step.value) == 8
    names = sorted(os.listdir(tmp_path))
    for step in saved:
        assert f"model.ckpt-{step}.damaged" in names
    infos = CheckpointManager(str(tmp_path), create=False).checkpoints()
    aside = [(i.step, i.valid, i.set_aside) for i in infos if i.set_aside]
    assert aside == [(0, False, True), (2, False, True), (4, False, True)]
    assert all("crc32c" in (i.problem or "") for i in infos if i.set_aside)
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-8")


def test_retention_sets_a_damaged_checkpoint_aside_instead_of_deleting_it(tmp_path: Path) -> None:
    manager = saved_manager(tmp_path, [1, 2], max_to_keep=2)
    truncate(tmp_path / "model.ckpt-1" / "state.npz", 10)  # never verified by this process
    with pytest.warns(CheckpointWarning, match=r"set aside damaged checkpoint .*model\.ckpt-1"):
        manager.save(state(3), 3, WRITE)
    names = sorted(os.listdir(tmp_path))
    assert "model.ckpt-1.damaged" in names and "model.ckpt-2" in names and "model.ckpt-3" in names
    manager.save(state(4), 4, WRITE)  # an intact one is deleted as before
    assert "model.ckpt-2" not in os.listdir(tmp_path)


@pytest.mark.parametrize(
    "garbage",
    [b"", b'{"latest": ', b"[1, 2]", b'{"format_version": 1, "latest": "../../etc", "checkpoints": []}'],
    ids=["empty", "truncated", "not-an-object", "escaping-path"],
)
def test_a_garbled_index_falls_back_to_scanning(tmp_path: Path, garbage: bytes) -> None:
    saved_manager(tmp_path, [1, 2, 3])
    (tmp_path / "checkpoint.json").write_bytes(garbage)
    with pytest.warns(CheckpointWarning, match=r"checkpoint\.json.*garbled"):
        assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-3")
    flip_bit(tmp_path / "model.ckpt-3" / "state.npz")
    with pytest.warns(CheckpointWarning) as record:
        assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-2")
    assert "model.ckpt-3" in str(record[-1].message)


def test_a_garbled_index_is_rebuilt_by_the_next_save(tmp_path: Path) -> None:
    saved_manager(tmp_path, [1, 2, 3], max_to_keep=3)
    (tmp_path / "checkpoint.json").write_text("garbage")
    with pytest.warns(CheckpointWarning, match="rebuilding"):
        manager = CheckpointManager(str(tmp_path), max_to_keep=3)
    manager.save(state(4), 4, WRITE)
    assert steps_on_disk(tmp_path) == [2, 3, 4]
    assert index_of(tmp_path)["latest"] == "model.ckpt-4"


def test_a_missing_index_falls_back_to_scanning(tmp_path: Path) -> None:
    saved_manager(tmp_path, [1, 12, 3])
    (tmp_path / "checkpoint.json").unlink()
    with pytest.warns(CheckpointWarning, match="missing"):
        assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-12")


def test_an_empty_or_absent_directory_has_no_checkpoint(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(str(tmp_path)) is None
        assert latest_checkpoint(str(tmp_path / "nowhere")) is None
        assert CheckpointManager(str(tmp_path / "nowhere")).checkpoints() == []
    assert not (tmp_path / "nowhere").exists()


def test_checkpoints_lists_every_folder_with_its_state(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    manager = CheckpointManager(str(tmp_path), clock=clock)
    for step in (5, 10, 15):
        clock.advance(1)
        manager.save(state(step), step, WRITE)
    truncate(tmp_path / "model.ckpt-10" / "state.npz")
    (tmp_path / "model.ckpt-15" / "manifest.json").write_text("nope")
    infos = manager.checkpoints()
    assert [(i.step, i.valid) for i in infos] == [(5, True), (10, False), (15, False)]
    assert infos[0].path == str(tmp_path / "model.ckpt-5") and infos[0].time == 101.0
    assert infos[0].problem is None and infos[0].size > 0
    assert "state.npz has" in (infos[1].problem or "") and infos[1].time == 102.0
    assert "garbled" in (infos[2].problem or "") and infos[2].time is None


# -- crashes and failures during a save -------------------------------------------------


def test_a_writer_failing_midway_leaves_everything_as_it_was(tmp_path: Path) -> None:
    manager = saved_manager(tmp_path, [1, 2])
    index_before = (tmp_path / "checkpoint.json").read_bytes()

    def broken_writer(values: Any, folder: str) -> list[str]:
        Path(folder, "state.npz").write_bytes(b"half a payl")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(looprt.errors.ResourceExhaustedError, match=r"model\.ckpt-3.*disk is full") as info:
        manager.save(state(3), 3, broken_writer)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert (tmp_path / "checkpoint.json").read_bytes() == index_before
    assert steps_on_disk(tmp_path) == [1, 2]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json", "model.ckpt-1", "model.ckpt-2"]
    assert manager.latest_checkpoint() == str(tmp_path / "model.ckpt-2")


def test_a_writer_reporting_files_it_did_not_write_fails_the_save(tmp_path: Path) -> None:
    manager = saved_manager(tmp_path, [1])
    with pytest.raises(FileNotFoundError, match="ghost"):
        manager.save(state(2), 2, lambda values, folder: ["ghost.bin"])
    with pytest.raises(ValueError, match="inside its folder"):
        manager.save(state(2), 2, lambda values, folder: ["../escape"])
    assert steps_on_disk(tmp_path) == [1]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_a_failing_index_write_keeps_the_previous_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = saved_manager(tmp_path, [1, 2], max_to_keep=2)
    index_before = (tmp_path / "checkpoint.json").read_bytes()
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if str(dst).endswith("checkpoint.json"):
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="I/O error"):
        manager.save(state(3), 3, WRITE)
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.json").read_bytes() == index_before
    assert {1, 2} <= set(steps_on_disk(tmp_path))  # nothing rotated away
    assert manager.latest_checkpoint() == str(tmp_path / "model.ckpt-2")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from looprt.backends.numpy import NumpyBackend
    from looprt.checkpoint import CheckpointManager, set_fault_hook

    directory, point = sys.argv[1], sys.argv[2]

    def writer(state, folder):
        names = NumpyBackend().save_payload(state, folder)
        if point == "payload":
            with open(os.path.join(folder, names[0]), "r+b") as f:
                f.truncate(10)
            os._exit(3)
        return names

    if point == "index":
        set_fault_hook(lambda boundary, subject: os._exit(3) if boundary == "index.write.before" else None)
    manager = CheckpointManager(directory, max_to_keep=2)
    manager.save({"global_step": np.int64(9), "w": np.ones(3)}, 9, writer)
    """
)


@pytest.mark.parametrize("point", ["payload", "index"])
def test_a_process_killed_mid_save_loses_nothing(tmp_path: Path, point: str) -> None:
    saved_manager(tmp_path, [1, 2], max_to_keep=2)
    index_before = (tmp_path / "checkpoint.json").read_bytes()
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), point], capture_output=True, check=False
    )
    assert crashed.returncode == 3, crashed.stderr.decode()
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    assert (tmp_path / "checkpoint.json").read_bytes() == index_before
    assert {1, 2} <= set(steps_on_disk(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-2")
    if point == "payload":
        assert leftovers  # the crash left its temporary folder behind ...
    manager = CheckpointManager(str(tmp_path), max_to_keep=2)
    manager.save(state(3), 3, WRITE)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]  # ... the next save cleans it
    assert manager.latest_checkpoint() == str(tmp_path / "model.ckpt-3")
    assert [c["path"] for c in index_of(tmp_path)["checkpoints"]] == ["model.ckpt-2", "model.ckpt-3"]


def test_a_checkpoint_moved_aside_by_an_interrupted_replacement_is_put_back(tmp_path: Path) -> None:
    # A crash between moving model.ckpt-2 aside and renaming its replacement into place.
    manager = saved_manager(tmp_path, [1, 2])
    os.rename(tmp_path / "model.ckpt-2", tmp_path / ".tmp-displaced-0123abcd-model.ckpt-2")
    manager.save(state(3), 3, WRITE)
    assert steps_on_disk(tmp_path) == [1, 2, 3]
    assert verify_checkpoint(str(tmp_path / "model.ckpt-2")) is None
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_a_moved_aside_checkpoint_is_found_listed_and_restored_under_its_own_name(tmp_path: Path) -> None:
    # latest_checkpoint, CheckpointManager.checkpoints() and the CLI agree on one name.
    prog, sess = trained_session(2)
    saver = Saver(prog)
    saver.save(sess, str(tmp_path / "model.ckpt"), global_step=1)
    saver.save(sess, str(tmp_path / "model.ckpt"), global_step=2)
    os.rename(tmp_path / "model.ckpt-2", tmp_path / ".tmp-displaced-0123abcd-model.ckpt-2")
    path = str(tmp_path / "model.ckpt-2")
    assert latest_checkpoint(str(tmp_path)) == path
    infos = CheckpointManager(str(tmp_path), create=False).checkpoints()
    assert [(i.path, i.valid) for i in infos] == [(str(tmp_path / "model.ckpt-1"), True), (path, True)]
    listing = subprocess.run(
        [sys.executable, "-m", "looprt.cli", "checkpoints", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert path in listing.stdout and ".tmp-displaced" not in listing.stdout
    other, _ = make_program()
    Saver(other).restore(looprt.ProgramSession(other), path)
    assert np.array_equal(other.states["w"].value, prog.states["w"].value)


# -- unwritable directories --------------------------------------------------------------


def test_a_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    manager = saved_manager(tmp_path, [1])
    os.chmod(tmp_path, 0o555)
    try:
        if os.access(tmp_path, os.W_OK):
            pytest.skip("chmod does not stop this user (root) from writing")
        with pytest.raises(PermissionDeniedError, match="not writable"):
            manager.save(state(2), 2, WRITE)
    finally:
        os.chmod(tmp_path, 0o755)
    assert steps_on_disk(tmp_path) == [1]


def test_a_read_only_filesystem_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = saved_manager(tmp_path, [1])
    index_before = (tmp_path / "checkpoint.json").read_bytes()

    def read_only_mkdir(path: Any, mode: int = 0o777) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    with pytest.raises(PermissionError, match=r"not writable.*Read-only") as info:
        manager.save(state(2), 2, WRITE)
    assert isinstance(info.value, PermissionDeniedError) and str(tmp_path) in str(info.value)
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.json").read_bytes() == index_before
    assert steps_on_disk(tmp_path) == [1]


def test_a_file_where_the_directory_should_be_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "ckpt"
    blocker.write_text("not a folder")
    prog, sess = trained_session(1)
    with pytest.raises(FailedPreconditionError, match="ckpt.*not a folder"):
        Saver(prog).save(sess, str(blocker / "model.ckpt"), global_step=1)
    assert blocker.read_text() == "not a folder"
    with pytest.raises(FailedPreconditionError, match="no such folder"):
        CheckpointManager(str(tmp_path / "absent"), create=False).save(state(1), 1, WRITE)


def test_non_array_numpy_state_round_trips(tmp_path: Path) -> None:
    prog = looprt.Program(name="cfg")
    cfg = prog.state("cfg", {"lr": 0.1})
    saver = Saver(prog)
    path = saver.save(None, str(tmp_path / "model.ckpt"), global_step=1)
    cfg.value = {"lr": 0.5}
    saver.restore(None, path)
    assert cfg.value == {"lr": 0.1}
