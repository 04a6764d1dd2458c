"""LoggingTensorHook: when it logs and what it writes, on NumPy programs and against TF's hook."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.hooks.logging_tensor import LoggingTensorHook


class Clock:
    """Time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_program() -> tuple[looprt.Program, Any]:
    prog = looprt.Program(name="p")
    prog.state("w", np.zeros(()))

    @prog.step(outputs=("loss",))
    def train(w: Any) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w) / 2}

    return prog, train


def monitored(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def messages(caplog: pytest.LogCaptureFixture, logger: str = "looprt.hooks.logging_tensor") -> list[str]:
    """What the hooks logged (TF's and looprt's loggers also carry other modules' lines)."""
    modules = {"basic_session_run_hooks", "logging_tensor"}
    return [r.getMessage() for r in caplog.records if r.name == logger and r.module in modules]


def drive(sess: Any, fetch: Any, clock: Clock | None, runs: int, tick: float = 0.0) -> None:
    for _ in range(runs):
        sess.run(fetch)
        if clock is not None:
            clock.now += tick


@pytest.fixture
def info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="looprt")
    return caplog


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either at_end and/or exactly one of every_n_iter and every_n_secs must be provided."),
        (
            {"every_n_iter": 1, "every_n_secs": 1},
            "either at_end and/or exactly one of every_n_iter and every_n_secs must be provided.",
        ),
        (
            {"at_end": True, "every_n_iter": 1, "every_n_secs": 1},
            "either at_end and/or exactly one of every_n_iter and every_n_secs must be provided.",
        ),
        ({"every_n_iter": 0}, "invalid every_n_iter=0."),
        ({"every_n_iter": -3, "at_end": True}, "invalid every_n_iter=-3."),
    ],
)
def test_argument_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as error:
        LoggingTensorHook(["w"], **kwargs)
    assert str(error.value) == message


def test_every_n_iter_logs_sorted_tags_with_elapsed_seconds(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    clock = Clock()
    hook = LoggingTensorHook({"loss": train.loss, "gs": prog.global_step}, every_n_iter=2, clock=clock)
    with monitored(prog, [hook]) as sess:
        drive(sess, train, clock, runs=5, tick=0.25)
    assert messages(info) == [
        "gs = 0, loss = 0.5",
        "gs = 2, loss = 1.5 (0.500 sec)",
        "gs = 4, loss = 2.5 (0.500 sec)",
    ]
    assert all(r.levelno == logging.INFO for r in info.records if r.name == "looprt.hooks.logging_tensor")


def test_list_keeps_its_order_and_items_are_their_own_tags(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    hook = LoggingTensorHook(["w", prog.global_step], every_n_iter=3)
    with monitored(prog, [hook]) as sess:
        drive(sess, train, None, runs=4)
    step_tag = str(prog.global_step)
    assert messages(info)[0] == f"w = 0.0, {step_tag} = 0"
    assert messages(info)[1].startswith(f"w = 3.0, {step_tag} = 3 (")


def test_counts_runs_not_global_steps(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    hook = LoggingTensorHook({"gs": prog.global_step}, every_n_iter=2)
    with monitored(prog, [hook]) as sess:
        for fetch in ["w", "w", train, "w", train]:
            sess.run(fetch)
    assert [m.split(" (")[0] for m in messages(info)] == ["gs = 0", "gs = 0", "gs = 1"]


def test_every_n_secs_uses_the_clock(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    clock = Clock()
    hook = LoggingTensorHook({"loss": train.loss}, every_n_secs=10, clock=clock)
    with monitored(prog, [hook]) as sess:
        for tick in [4, 4, 4, 20, 1, 9, 0]:
            sess.run(train)
            clock.now += tick
    # Run 1 logs (first), then the first runs at least 10 s after the last log: runs 4, 5 and 7.
    assert messages(info) == [
        "loss = 0.5",
        "loss = 2.0 (12.000 sec)",
        "loss = 2.5 (20.000 sec)",
        "loss = 3.5 (10.000 sec)",
    ]


def test_at_end_only_logs_once_in_end_with_its_own_run(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    hook = LoggingTensorHook({"w": "w", "gs": prog.global_step}, at_end=True)
    with monitored(prog, [hook]) as sess:
        drive(sess, train, None, runs=3)
        assert messages(info) == []
    assert messages(info) == ["gs = 3, w = 3.0"]


def test_at_end_with_every_n_iter_logs_both(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    clock = Clock()
    hook = LoggingTensorHook({"gs": prog.global_step}, every_n_iter=2, at_end=True, clock=clock)
    with monitored(prog, [hook]) as sess:
        drive(sess, train, clock, runs=3, tick=1.0)
    assert messages(info) == ["gs = 0", "gs = 2 (2.000 sec)", "gs = 3 (1.000 sec)"]


def test_no_end_log_when_the_session_fails(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    hook = LoggingTensorHook({"gs": prog.global_step}, at_end=True)
    with pytest.raises(KeyError), monitored(prog, [hook]) as sess:
        sess.run(train)
        raise KeyError("user error")
    assert messages(info) == []


def test_formatter_replaces_the_text_and_sees_values_by_tag(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    seen: list[dict[Any, Any]] = []

    def formatter(values: dict[Any, Any]) -> str:
        seen.append(values)
        return f"loss is {values['loss']} at 100%"

    hook = LoggingTensorHook({"loss": train.loss}, every_n_iter=1, formatter=formatter)
    with monitored(prog, [hook]) as sess:
        drive(sess, train, None, runs=2)
    assert messages(info) == ["loss is 0.5 at 100%", "loss is 1.0 at 100%"]
    assert seen == [{"loss": 0.5}, {"loss": 1.0}]


def test_numpy_values_print_suppressed_and_print_options_are_restored(info: pytest.LogCaptureFixture) -> None:
    prog = looprt.Program(name="p")
    prog.state("v", np.array([1e-10, 1.0]))
    before = np.get_printoptions()
    with monitored(prog, [LoggingTensorHook({"v": "v"}, every_n_iter=1)]) as sess:
        sess.run("v")
    assert messages(info) == [f"v = {np.array([0.0, 1.0])}"]
    assert np.get_printoptions() == before
    assert "e-10" in str(np.array([1e-10, 1.0]))


def test_fetchables_are_checked_when_the_session_is_created() -> None:
    prog, _ = make_program()
    other, _ = make_program()
    with pytest.raises(ValueError, match="should have graph attribute that is equal to current graph"):
        monitored(prog, [LoggingTensorHook([other.global_step], every_n_iter=1)])
    prog2, _ = make_program()
    with pytest.raises(KeyError, match="nope"):
        monitored(prog2, [LoggingTensorHook({"x": "nope"}, at_end=True)])
    prog3, _ = make_program()
    with pytest.raises(ValueError, match="should have graph attribute"):
        monitored(prog3, [LoggingTensorHook({"x": 3}, every_n_iter=1)])


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    "kwargs",
    [
        {"every_n_iter": 2},
        {"every_n_iter": 3, "at_end": True},
        {"at_end": True},
        {"every_n_secs": 10},
        {"every_n_secs": 5, "at_end": True},
    ],
)
def test_matches_tensorflow(
    kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.training import basic_session_run_hooks

    ticks = [4, 4, 4, 20, 1, 9, 0, 3]
    clock = Clock()

    class FakeTime:
        time = clock

    monkeypatch.setattr(basic_session_run_hooks, "time", FakeTime)
    caplog.set_level(logging.INFO, logger="tensorflow")
    caplog.set_level(logging.INFO, logger="looprt")

    with tf.Graph().as_default():
        # Every logged tensor is read before the updates, as looprt reads state.
        gs = tf.compat.v1.train.get_or_create_global_step()
        w_var = tf.compat.v1.get_variable("w_var", initializer=0.0, use_resource=True)
        gs_before = tf.identity(gs.read_value())
        w_before = tf.identity(w_var.read_value(), name="w")
        loss = tf.identity((w_before + 1.0) / 2, name="train/loss")
        with tf.control_dependencies([gs_before, w_before, loss]):
            train_op = tf.group(w_var.assign_add(1.0), gs.assign_add(1))
        hook = tf.compat.v1.train.LoggingTensorHook({"loss": loss, "gs": gs_before, "w": "w"}, **kwargs)
        names_hook = tf.compat.v1.train.LoggingTensorHook(["train/loss", "w"], **kwargs)
        with tf.compat.v1.train.MonitoredSession(hooks=[hook, names_hook]) as sess:
            for tick in ticks:
                sess.run(train_op)
                clock.now += tick
    tf_messages = messages(caplog, "tensorflow")
    caplog.clear()

    clock.now = 1000.0
    # As in TF's graph, the loss is computed without side effects, apart from the update.
    prog = looprt.Program(name="p")
    w_state = prog.state("w", np.zeros(()))

    @prog.step(outputs=("loss",), advance_global_step=False)
    def train(w: Any) -> dict[str, float]:
        return {"loss": (float(w) + 1.0) / 2}

    @prog.step
    def update(w: Any) -> None:
        w += 1.0

    assert w_state.value == 0
    hooks = [
        LoggingTensorHook({"loss": train.loss, "gs": prog.global_step, "w": "w"}, clock=clock, **kwargs),
        LoggingTensorHook(["train/loss", "w"], clock=clock, **kwargs),
    ]
    with monitored(prog, hooks) as sess:
        for tick in ticks:
            sess.run(update)
            clock.now += tick
    assert tf_messages  # the comparison is not vacuous
    assert messages(caplog) == tf_messages


def test_a_subclass_replaces_the_tensors_for_the_same_tags(info: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()

    class Doubled(LoggingTensorHook):
        """Logs twice the given state: what a subclass resolving its fetchables in begin does."""

        def begin(self) -> None:
            super().begin()
            self.tensors = {tag: train.loss for tag in self.tensors}

    hook = Doubled({"w": "w"}, every_n_iter=1)
    assert hook.tensors == {"w": "w"}
    with monitored(prog, [hook]) as sess:
        drive(sess, train, None, runs=2)
    assert messages(info)[0] == "w = 0.5"


def test_the_tensors_keep_their_tags() -> None:
    hook = LoggingTensorHook({"loss": "loss", "w": "w"}, every_n_iter=1)
    with pytest.raises(ValueError, match=r"missing \['w'\], unknown \['x'\]"):
        hook.tensors = {"loss": "loss", "x": "x"}
    assert hook.tensors == {"loss": "loss", "w": "w"}
