"""GlobalStepWaiterHook: holds the first run until the global step is reached; no real sleeping."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.hooks.global_step_waiter import GlobalStepWaiterHook


def make_program() -> tuple[looprt.Program, Any]:
    prog = looprt.Program(name="p")
    prog.state("w", np.zeros(()))

    @prog.step
    def train(w: Any) -> None:
        w += 1.0

    return prog, train


class Chief:
    """Stands in for the chief: each sleep of the worker advances the shared global step."""

    def __init__(self, prog: looprt.Program, steps_per_sleep: int) -> None:
        self.prog, self.steps_per_sleep = prog, steps_per_sleep
        self.sleeps: list[float] = []

    def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self.prog.global_step.value[...] += self.steps_per_sleep


def worker(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    """A worker session on a program a chief already initialized."""
    prog.ready.set()
    return looprt.MonitoredSession(looprt.WorkerSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def waiter_messages(caplog: pytest.LogCaptureFixture, module: str = "global_step_waiter") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.module == module]


def test_waits_logging_every_thousand_steps_then_runs_freely(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    prog, train = make_program()
    chief = Chief(prog, steps_per_sleep=600)
    with worker(prog, [GlobalStepWaiterHook(2500, sleep=chief.sleep)]) as sess:
        sess.run(train)
        # Reads 0, 600, 1200 (logged: more than 1000 past 0), 1800, 2400 (logged), 3000: go.
        assert chief.sleeps == [0.5] * 5
        assert prog.global_step.value == 3001
        assert prog.states["w"].value == 1.0
        for _ in range(3):
            sess.run(train)
        assert len(chief.sleeps) == 5
    assert waiter_messages(caplog) == [
        "Waiting for global step 2500 before starting training.",
        "Waiting for global step 2500 before starting training. Current step is 1200.",
        "Waiting for global step 2500 before starting training. Current step is 2400.",
    ]


def test_a_reached_step_does_not_sleep(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    prog, train = make_program()
    prog.global_step.value[...] = 7
    chief = Chief(prog, steps_per_sleep=1)
    with worker(prog, [GlobalStepWaiterHook(7, sleep=chief.sleep)]) as sess:
        sess.run(train)
    assert chief.sleeps == []
    assert waiter_messages(caplog) == ["Waiting for global step 7 before starting training."]


@pytest.mark.parametrize("step", [0, -5])
def test_non_positive_steps_never_wait_or_read(step: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    prog, train = make_program()
    chief = Chief(prog, steps_per_sleep=1)
    raw_runs: list[Any] = []

    class CountingSession(looprt.ProgramSession):
        def run(self, fetches: Any, *args: Any, **kwargs: Any) -> Any:
            raw_runs.append(fetches)
            return super().run(fetches, *args, **kwargs)

    class Creator:
        def create_session(self) -> Any:
            return CountingSession(prog)

    with looprt.MonitoredSession(Creator(), hooks=[GlobalStepWaiterHook(step, sleep=chief.sleep)]) as sess:
        sess.run(train)
        sess.run(train)
    assert raw_runs == [train, train]
    assert chief.sleeps == []
    assert waiter_messages(caplog) == []


def test_waits_for_a_chief_in_another_thread() -> None:
    prog, train = make_program()
    chief_may_go = threading.Event()
    worker_waiting = threading.Event()

    def sleep(secs: float) -> None:
        worker_waiting.set()
        assert chief_may_go.wait(10)

    def chief() -> None:
        assert worker_waiting.wait(10)
        with looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))) as sess:
            for _ in range(3):
                sess.run(train)
        chief_may_go.set()

    thread = threading.Thread(target=chief)
    prog.ready.set()
    sess = looprt.MonitoredSession(
        looprt.WorkerSessionCreator(looprt.Scaffold(program=prog)),
        hooks=[GlobalStepWaiterHook(3, sleep=sleep)],
    )
    thread.start()
    sess.run(train)
    thread.join(10)
    sess.close()
    assert prog.global_step.value == 4


def test_a_session_without_global_step_is_an_error() -> None:
    class NoStepSession:
        graph = object()

        def run(self, *args: Any, **kwargs: Any) -> Any:
            return None

        def close(self) -> None:
            pass

    class Creator:
        def create_session(self) -> Any:
            return NoStepSession()

    with pytest.raises(RuntimeError, match=r"^Global step should be created to use _GlobalStepWaiterHook\.$"):
        looprt.MonitoredSession(Creator(), hooks=[GlobalStepWaiterHook(1)])


@pytest.mark.tensorflow
def test_matches_tensorflow(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.training import basic_session_run_hooks

    caplog.set_level(logging.INFO)
    tf_sleeps: list[float] = []

    with tf.Graph().as_default():
        gs = tf.compat.v1.train.get_or_create_global_step()
        chief_step = tf.compat.v1.assign_add(gs, 600)
        train_op = tf.compat.v1.assign_add(gs, 1)

        class Raw(tf.compat.v1.train.SessionRunHook):
            def after_create_session(self, session: Any, coord: Any) -> None:
                self.session = session

        raw = Raw()

        class FakeTime:
            @staticmethod
            def sleep(secs: float) -> None:
                tf_sleeps.append(secs)
                raw.session.run(chief_step)

        monkeypatch.setattr(basic_session_run_hooks, "time", FakeTime)
        with tf.compat.v1.train.MonitoredSession(
            hooks=[raw, tf.compat.v1.train.GlobalStepWaiterHook(2500)]
        ) as sess:
            for _ in range(3):
                sess.run(train_op)
            tf_final = sess.run(gs)
    tf_messages = waiter_messages(caplog, "basic_session_run_hooks")
    caplog.clear()

    prog, train = make_program()
    chief = Chief(prog, steps_per_sleep=600)
    with worker(prog, [GlobalStepWaiterHook(2500, sleep=chief.sleep)]) as sess:
        for _ in range(3):
            sess.run(train)
        final = sess.run(prog.global_step)
    assert (waiter_messages(caplog), chief.sleeps, final) == (tf_messages, tf_sleeps, tf_final)
    assert len(tf_messages) == 3
