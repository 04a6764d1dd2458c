"""NanTensorHook: raise or stop on a NaN loss, on NumPy programs and against TF's hook."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.hooks.nan_tensor import NanLossDuringTrainingError, NanTensorHook

NAN = float("nan")


class EndRecorder(looprt.SessionRunHook):
    def __init__(self) -> None:
        self.ended = False

    def end(self, session: Any) -> None:
        self.ended = True


def make_program() -> tuple[looprt.Program, Any, Any]:
    """``train`` returns the fed loss as its output."""
    prog = looprt.Program(name="p")
    loss_in = prog.input("loss_in")

    @prog.step(outputs=("loss",))
    def train(loss_in: float) -> dict[str, float]:
        return {"loss": loss_in}

    return prog, loss_in, train


def monitored(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def looprt_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "looprt.hooks.nan_tensor"]


def test_error_class() -> None:
    error = NanLossDuringTrainingError()
    assert isinstance(error, RuntimeError)
    assert isinstance(error, looprt.LooprtError)
    assert str(error) == "NaN loss during training."
    assert str(pickle.loads(pickle.dumps(error))) == "NaN loss during training."


def test_finite_losses_pass(caplog: pytest.LogCaptureFixture) -> None:
    prog, loss_in, train = make_program()
    with monitored(prog, [NanTensorHook(train.loss)]) as sess:
        for value in [1.0, np.inf, -3.0, 0.0]:
            assert sess.run(train.loss, feed_dict={loss_in: value}) == value
        assert not sess.should_stop()
    assert looprt_records(caplog) == []


def test_nan_raises_logs_an_error_and_skips_end(caplog: pytest.LogCaptureFixture) -> None:
    prog, loss_in, train = make_program()
    recorder = EndRecorder()
    runs = 0
    with (
        pytest.raises(NanLossDuringTrainingError, match=r"^NaN loss during training\.$"),
        monitored(prog, [NanTensorHook(train.loss), recorder]) as sess,
    ):
        for value in [1.0, 2.0, NAN, 4.0]:
            sess.run(train, feed_dict={loss_in: value})
            runs += 1
    assert runs == 2
    assert not recorder.ended
    assert looprt_records(caplog) == [(logging.ERROR, "Model diverged with loss = NaN.")]


def test_nan_with_fail_off_warns_and_requests_a_stop(caplog: pytest.LogCaptureFixture) -> None:
    prog, loss_in, train = make_program()
    recorder = EndRecorder()
    runs = 0
    with monitored(prog, [NanTensorHook(train.loss, fail_on_nan_loss=False), recorder]) as sess:
        for value in [1.0, NAN, 4.0]:
            if sess.should_stop():
                break
            sess.run(train, feed_dict={loss_in: value})
            runs += 1
    assert runs == 2
    assert recorder.ended
    assert looprt_records(caplog) == [(logging.WARNING, "Model diverged with loss = NaN.")]


def test_the_loss_can_be_any_fetchable() -> None:
    prog = looprt.Program(name="p")
    prog.state("loss", np.float32(NAN))
    with pytest.raises(NanLossDuringTrainingError), monitored(prog, [NanTensorHook("loss")]) as sess:
        sess.run(prog.global_step)


@pytest.mark.tensorflow
@pytest.mark.parametrize("fail", [True, False])
def test_matches_tensorflow(fail: bool, caplog: pytest.LogCaptureFixture) -> None:
    tf = pytest.importorskip("tensorflow")
    values = [1.0, 2.0, NAN, 4.0]

    def drive(sess: Any, fetch: Any, feed: Any) -> tuple[int, str | None]:
        runs = 0
        try:
            for value in values:
                if sess.should_stop():
                    break
                sess.run(fetch, feed_dict={feed: value})
                runs += 1
        except RuntimeError as error:
            return runs, f"{type(error).__name__}: {error}"
        return runs, None

    with tf.Graph().as_default():
        tf.compat.v1.train.get_or_create_global_step()
        ph = tf.compat.v1.placeholder(tf.float32, [])
        loss = tf.identity(ph)
        with tf.compat.v1.train.MonitoredSession(
            hooks=[tf.compat.v1.train.NanTensorHook(loss, fail_on_nan_loss=fail)]
        ) as sess:
            tf_result = drive(sess, loss, ph)
    tf_logs = [(r.levelno, r.getMessage()) for r in caplog.records if r.module == "basic_session_run_hooks"]
    caplog.clear()

    prog, loss_in, train = make_program()
    with monitored(prog, [NanTensorHook(train.loss, fail_on_nan_loss=fail)]) as sess:
        result = drive(sess, train, loss_in)
    assert result == tf_result
    assert looprt_records(caplog) == tf_logs
    assert len(tf_logs) == 1
