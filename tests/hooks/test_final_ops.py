"""FinalOpsHook: final values in end, and the end-of-input warning, against TF's hook."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.hooks.final_ops import FinalOpsHook


def make_program(batches: Any = (1, 2, 3)) -> tuple[looprt.Program, Any]:
    prog = looprt.Program(name="p")
    prog.state("total", np.zeros(()))
    prog.input("batch", iterable=batches)
    prog.input("scale", default=1.0)

    @prog.step(outputs=("total",))
    def train(batch: float, total: Any) -> dict[str, float]:
        total += batch
        return {"total": float(total)}

    @prog.step(outputs=("value",), advance_global_step=False)
    def metric(total: Any, scale: float) -> dict[str, float]:
        return {"value": float(total) * scale}

    return prog, train


def monitored(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def warnings_of(caplog: pytest.LogCaptureFixture, module: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.module == module and r.levelno == logging.WARNING]


def test_values_are_computed_in_end_with_the_feed() -> None:
    prog, train = make_program()
    hook = FinalOpsHook(
        {"metric": "metric/value", "steps": prog.global_step}, final_ops_feed_dict={"scale": 10.0}
    )
    with monitored(prog, [hook]) as sess:
        while True:
            sess.run(train)
            assert hook.final_ops_values is None
    assert hook.final_ops_values == {"metric": 60.0, "steps": 3}


def test_none_runs_nothing() -> None:
    prog, train = make_program()
    hook = FinalOpsHook(None)
    with monitored(prog, [hook]) as sess:
        sess.run(train)
    assert hook.final_ops_values is None


def test_no_values_when_the_session_fails() -> None:
    prog, train = make_program()
    hook = FinalOpsHook(prog.global_step)
    with pytest.raises(ZeroDivisionError), monitored(prog, [hook]) as sess:
        sess.run(train)
        _ = 1 / 0
    assert hook.final_ops_values is None


@pytest.mark.parametrize("error", [looprt.OutOfRangeError, StopIteration])
def test_end_of_input_in_end_warns_and_propagates(
    error: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    prog, train = make_program(batches=[1])

    @prog.step(outputs=("next",), advance_global_step=False)
    def reads_input(batch: float) -> dict[str, float]:
        return {"next": batch}

    @prog.step(outputs=("next",), advance_global_step=False)
    def iterates(total: Any) -> dict[str, float]:
        raise StopIteration

    hook = FinalOpsHook((iterates if error is StopIteration else reads_input).next)
    sess = monitored(prog, [hook])
    sess.run(train)
    with pytest.raises(error):
        sess.close()
    (warning,) = warnings_of(caplog, "final_ops")
    assert warning.startswith(
        "An OutOfRangeError or StopIteration exception is raised by the code in FinalOpsHook."
    )
    assert hook.final_ops_values is None


def test_other_errors_in_end_propagate_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    prog, train = make_program()
    sess = monitored(prog, [FinalOpsHook("nonexistent")])
    with pytest.raises(looprt.FetchError):
        sess.close()
    assert warnings_of(caplog, "final_ops") == []


@pytest.mark.tensorflow
def test_matches_tensorflow(caplog: pytest.LogCaptureFixture) -> None:
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default():
        gs = tf.compat.v1.train.get_or_create_global_step()
        batch = tf.compat.v1.data.make_one_shot_iterator(
            tf.data.Dataset.from_tensor_slices([1.0, 2.0, 3.0])
        ).get_next()
        total = tf.compat.v1.get_variable("total", initializer=0.0, use_resource=True)
        update = total.assign_add(batch)
        with tf.control_dependencies([update]):  # no step without a batch, as in looprt
            train_op = tf.group(update, gs.assign_add(1))
        scale = tf.compat.v1.placeholder_with_default(1.0, [])
        values_hook = tf.compat.v1.train.FinalOpsHook(
            {"metric": total.read_value() * scale, "steps": gs}, {scale: 10.0}
        )
        with tf.compat.v1.train.MonitoredSession(hooks=[values_hook]) as sess:
            while True:
                sess.run(train_op)
        failing = tf.compat.v1.train.FinalOpsHook(batch)
        sess = tf.compat.v1.train.MonitoredSession(hooks=[failing])
        for _ in range(3):
            sess.run(train_op)
        with pytest.raises(tf.errors.OutOfRangeError):
            sess.close()
    tf_values = values_hook.final_ops_values

    prog, train = make_program()
    hook = FinalOpsHook({"metric": "metric/value", "steps": prog.global_step}, {"scale": 10.0})
    with monitored(prog, [hook]) as sess:
        while True:
            sess.run(train)
    assert hook.final_ops_values == tf_values

    prog, train = make_program()
    sess = monitored(prog, [FinalOpsHook("batch")])
    for _ in range(3):
        sess.run(train)
    with pytest.raises(looprt.OutOfRangeError):
        sess.close()
    assert warnings_of(caplog, "final_ops") == warnings_of(caplog, "basic_session_run_hooks")
    assert len(warnings_of(caplog, "final_ops")) == 1
