"""CheckpointSaverHook: trigger steps, listeners and stop requests, against TF's own hook."""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.checkpoint import Saver, latest_checkpoint
from looprt.hooks.checkpoint_saver import CheckpointSaverHook, CheckpointSaverListener


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder(CheckpointSaverListener):
    """Logs every listener call; ``after_save`` asks to stop from step ``stop_at`` on."""

    def __init__(self, log: list[tuple[Any, ...]], name: str = "l", stop_at: int | None = None) -> None:
        self.log, self.name, self.stop_at = log, name, stop_at

    def begin(self) -> None:
        self.log.append((self.name, "begin"))

    def before_save(self, session: Any, global_step_value: Any) -> None:
        self.log.append((self.name, "before_save", int(global_step_value)))

    def after_save(self, session: Any, global_step_value: Any) -> bool:
        self.log.append((self.name, "after_save", int(global_step_value)))
        return self.stop_at is not None and global_step_value >= self.stop_at

    def end(self, session: Any, global_step_value: Any) -> None:
        self.log.append((self.name, "end", int(global_step_value)))


def saved_steps(log: list[tuple[Any, ...]], name: str = "l") -> list[int]:
    return [entry[2] for entry in log if entry[:2] == (name, "before_save")]


def make_program() -> tuple[looprt.Program, looprt.Step]:
    prog = looprt.Program(name="p")
    prog.state("w", np.zeros(3))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        w -= 0.1 * (w - 1.0)
        return {"loss": float(((w - 1.0) ** 2).sum())}

    return prog, train


def run_looprt(
    directory: Path,
    runs: int,
    listeners: list[Any],
    after_each_run: Callable[[], None] = lambda: None,
    **hook_kwargs: Any,
) -> tuple[int, looprt.Program]:
    """Train up to ``runs`` steps with the hook; return how many ran."""
    prog, train = make_program()
    hook = CheckpointSaverHook(str(directory), listeners=listeners, **hook_kwargs)
    done = 0
    with looprt.MonitoredSession(
        looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=[hook]
    ) as sess:
        while done < runs and not sess.should_stop():
            sess.run(train)
            done += 1
            after_each_run()
    return done, prog


def run_tf(
    directory: Path,
    runs: int,
    listeners: list[Any],
    after_each_run: Callable[[], None] = lambda: None,
    hook_class: Any = None,
    **hook_kwargs: Any,
) -> int:
    """The same loop in TF graph mode: a real global step, a tiny train op, TF's hook."""
    import tensorflow as tf

    done = 0
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        w = tf.compat.v1.get_variable("w", initializer=tf.zeros([3]))
        loss = tf.reduce_sum(tf.square(w - 1.0))
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
        hook = (hook_class or tf.compat.v1.train.CheckpointSaverHook)(
            str(directory), listeners=listeners, **hook_kwargs
        )
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            while done < runs and not sess.should_stop():
                sess.run(train_op)
                done += 1
                after_each_run()
    return done


def kept_steps(directory: Path) -> list[int]:
    """Steps in rotation according to the directory's index (ours or TF's)."""
    if (directory / "checkpoint.json").exists():
        import json

        entries = json.loads((directory / "checkpoint.json").read_text())["checkpoints"]
        return [e["step"] for e in entries]
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(directory))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]


# -- arguments ---------------------------------------------------------------------------


def test_exactly_one_of_save_secs_and_save_steps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^Either every_secs or every_steps should be provided\.$"):
        CheckpointSaverHook(str(tmp_path))
    with pytest.raises(ValueError, match=r"^Can not provide both every_secs and every_steps\.$"):
        CheckpointSaverHook(str(tmp_path), save_secs=10, save_steps=10)


def test_saver_and_scaffold_are_exclusive(tmp_path: Path) -> None:
    prog, _ = make_program()
    with pytest.raises(ValueError, match=r"^You cannot provide both saver and scaffold\.$"):
        CheckpointSaverHook(
            str(tmp_path), save_steps=1, saver=Saver(prog), scaffold=looprt.Scaffold(program=prog)
        )


# -- when it saves -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("save_steps", "runs", "expected"),
    [(3, 10, [0, 3, 6, 9, 10]), (5, 10, [0, 5, 10]), (1, 3, [0, 1, 2, 3]), (100, 4, [0, 4])],
)
def test_save_steps(tmp_path: Path, save_steps: int, runs: int, expected: list[int]) -> None:
    log: list[tuple[Any, ...]] = []
    run_looprt(tmp_path, runs, [Recorder(log)], save_steps=save_steps)
    assert saved_steps(log) == expected
    assert kept_steps(tmp_path) == expected[-5:]
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / f"model.ckpt-{runs}")


def test_save_secs_with_an_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    gaps = iter([3, 4, 5, 1, 9, 2, 2, 2, 11, 1])  # seconds after runs 1..10

    def tick() -> None:
        clock.now += next(gaps)

    log: list[tuple[Any, ...]] = []
    run_looprt(tmp_path, 10, [Recorder(log)], after_each_run=tick, save_secs=10, clock=clock)
    # Run k's after_run sees the time after k-1 gaps: 0,3,7,12(save 4),13,22(save 6),24,26,28,39(save 10).
    assert saved_steps(log) == [0, 4, 6, 10]


def test_the_checkpoints_resume_training(tmp_path: Path) -> None:
    run_looprt(tmp_path, 7, [], save_steps=3)
    prog, train = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_dir=str(tmp_path))
    with looprt.MonitoredSession(creator) as sess:
        assert sess.run(prog.global_step) == 7
        expected = 1.0 - 0.9**7
        np.testing.assert_allclose(sess.run("w"), np.full(3, expected))


# -- listeners -------------------------------------------------------------------------------


def test_listener_call_order(tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    run_looprt(tmp_path, 4, [Recorder(log, "a"), Recorder(log, "b")], save_steps=2)
    assert log == [
        ("a", "begin"), ("b", "begin"),
        ("a", "before_save", 0), ("b", "before_save", 0), ("a", "after_save", 0), ("b", "after_save", 0),
        ("a", "before_save", 2), ("b", "before_save", 2), ("a", "after_save", 2), ("b", "after_save", 2),
        ("a", "before_save", 4), ("b", "before_save", 4), ("a", "after_save", 4), ("b", "after_save", 4),
        ("a", "end", 4), ("b", "end", 4),
    ]  # fmt: skip


def test_after_save_returning_true_stops_training(tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    done, prog = run_looprt(tmp_path, 100, [Recorder(log, "a", stop_at=4), Recorder(log, "b")], save_steps=2)
    assert done == 4
    # Every listener still hears the save that stopped the training; the end needs no new save.
    assert log[-4:] == [("a", "after_save", 4), ("b", "after_save", 4), ("a", "end", 4), ("b", "end", 4)]


def test_a_stop_request_from_the_first_save_is_ignored_as_in_tf(tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    done, _ = run_looprt(tmp_path, 3, [Recorder(log, stop_at=0)], save_steps=10)
    assert done == 3  # after_create_session ignores after_save's answer; TF does too


# -- which saver ----------------------------------------------------------------------------


class RecordingSaver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    def save(self, sess: Any, save_path: str, global_step: Any = None, write_meta_graph: bool = True) -> str:
        self.calls.append((save_path, int(global_step), write_meta_graph))
        return save_path


def test_an_explicit_saver_is_used(tmp_path: Path) -> None:
    saver = RecordingSaver()
    run_looprt(tmp_path, 2, [], save_steps=1, saver=saver, checkpoint_basename="m", save_graph_def=False)
    path = os.path.join(str(tmp_path), "m")
    assert saver.calls == [(path, 0, False), (path, 1, False), (path, 2, False)]
    assert not list(tmp_path.iterdir())


def test_the_scaffold_saver_is_used(tmp_path: Path) -> None:
    saver = RecordingSaver()
    prog, _ = make_program()
    scaffold = looprt.Scaffold(program=prog, saver=saver)
    run_looprt(tmp_path, 1, [], save_steps=1, scaffold=scaffold)
    assert [c[1] for c in saver.calls] == [0, 1]


# -- against TensorFlow's own hook ----------------------------------------------------------


@pytest.mark.parametrize(("save_steps", "runs"), [(1, 4), (2, 7), (3, 9), (5, 3), (2, 20)])
def test_same_saves_as_tf(tmp_path: Path, save_steps: int, runs: int) -> None:
    pytest.importorskip("tensorflow")
    ours: list[tuple[Any, ...]] = []
    theirs: list[tuple[Any, ...]] = []
    run_looprt(tmp_path / "ours", runs, [Recorder(ours)], save_steps=save_steps)
    run_tf(tmp_path / "tf", runs, [Recorder(theirs)], save_steps=save_steps)
    assert ours == theirs
    assert kept_steps(tmp_path / "ours") == kept_steps(tmp_path / "tf")


def test_same_stop_as_tf(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    ours: list[tuple[Any, ...]] = []
    theirs: list[tuple[Any, ...]] = []
    done_ours, _ = run_looprt(tmp_path / "ours", 50, [Recorder(ours, stop_at=5)], save_steps=3)
    done_tf = run_tf(tmp_path / "tf", 50, [Recorder(theirs, stop_at=5)], save_steps=3)
    assert (done_ours, ours) == (done_tf, theirs)
    assert done_ours == 6


def test_same_save_secs_as_tf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorflow")
    from tensorflow.python.training import basic_session_run_hooks

    gaps = [3, 4, 5, 1, 9, 2, 2, 2, 11, 1, 30, 0, 0, 10, 10]
    logs: dict[str, list[tuple[Any, ...]]] = {"ours": [], "tf": []}
    for who, log in logs.items():
        clock = FakeClock()
        ticks = iter(gaps)

        def tick(clock: FakeClock = clock, ticks: Any = ticks) -> None:
            clock.now += next(ticks)

        if who == "ours":
            run_looprt(tmp_path / who, len(gaps), [Recorder(log)], tick, save_secs=10, clock=clock)
        else:
            monkeypatch.setattr(basic_session_run_hooks, "time", types.SimpleNamespace(time=clock))
            run_tf(tmp_path / who, len(gaps), [Recorder(log)], tick, save_secs=10)
    assert logs["ours"] == logs["tf"]
    assert len(saved_steps(logs["ours"])) > 3


def test_our_hook_in_a_tf_monitored_session_saves_like_tfs(tmp_path: Path) -> None:
    """Under TF, the hook finds TF's global step and the saver in TF's SAVERS collection."""
    pytest.importorskip("tensorflow")
    ours: list[tuple[Any, ...]] = []
    theirs: list[tuple[Any, ...]] = []
    run_tf(tmp_path / "ours", 7, [Recorder(ours)], hook_class=CheckpointSaverHook, save_steps=3)
    run_tf(tmp_path / "tf", 7, [Recorder(theirs)], save_steps=3)
    assert ours == theirs
    assert kept_steps(tmp_path / "ours") == kept_steps(tmp_path / "tf") == [0, 3, 6, 7]
