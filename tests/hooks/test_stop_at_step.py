"""StopAtStepHook: when it stops, on NumPy programs and against TF's own hook."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.hooks.stop_at_step import StopAtStepHook


def make_program(advance_per_run: int = 1) -> tuple[looprt.Program, Any]:
    """A program and a fetch (its steps) that advances the global step ``advance_per_run`` times."""
    prog = looprt.Program(name="p")
    prog.state("w", np.zeros(()))

    def fn(w: Any) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w)}

    train = [prog.step(fn, outputs=("loss",), name=f"train{k}") for k in range(advance_per_run)]
    return prog, train


class RawCreator:
    """Creates plain sessions of ``prog`` (no initialization, so the global step is kept)."""

    def __init__(self, prog: looprt.Program, abort_runs: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.prog, self.abort_runs, self.runs, self.created = prog, set(abort_runs), 0, 0

    def create_session(self) -> Any:
        self.created += 1
        creator = self

        class Session(looprt.ProgramSession):
            def run(
                self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None
            ) -> Any:
                creator.runs += 1
                if creator.runs in creator.abort_runs:
                    raise looprt.AbortedError(f"aborted run {creator.runs}")
                return super().run(fetches, feed_dict, options, run_metadata)

        return Session(self.prog)


def monitored(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def count_runs(sess: Any, fetches: Any, limit: int = 50) -> int:
    runs = 0
    while not sess.should_stop():
        sess.run(fetches)
        runs += 1
        assert runs < limit, "never stopped"
    return runs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "One of num_steps or last_step must be specified."),
        ({"num_steps": 1, "last_step": 2}, "Only one of num_steps or last_step can be specified."),
    ],
)
def test_argument_errors(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        StopAtStepHook(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"last_step": "5"}, "last_step must be an int, got str '5'"),
        ({"last_step": 2.5}, "last_step must be an int, got float 2.5"),
        ({"num_steps": True}, "num_steps must be an int, got bool True"),
    ],
)
def test_steps_that_are_not_whole_numbers_are_type_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        StopAtStepHook(**kwargs)
    StopAtStepHook(last_step=np.int64(5))  # NumPy integers are whole numbers


@pytest.mark.parametrize(
    ("kwargs", "runs"), [({"num_steps": 5}, 5), ({"last_step": 3}, 3), ({"num_steps": 1}, 1)]
)
def test_stops_after_the_step_that_reaches_last_step(kwargs: dict[str, int], runs: int) -> None:
    prog, train = make_program()
    with monitored(prog, [StopAtStepHook(**kwargs)]) as sess:
        assert count_runs(sess, train) == runs
    assert prog.global_step.value == runs


def test_num_steps_counts_from_the_global_step_at_session_creation() -> None:
    prog, train = make_program()
    prog.global_step.value[...] = 10
    hook = StopAtStepHook(num_steps=3)
    assert hook.last_step is None
    with looprt.MonitoredSession(RawCreator(prog), hooks=[hook]) as sess:
        assert hook.last_step == 13
        assert count_runs(sess, train) == 3
    assert prog.global_step.value == 13


@pytest.mark.parametrize("kwargs", [{"last_step": 4}, {"last_step": 10}, {"num_steps": 0}])
def test_a_session_that_starts_at_or_past_last_step_runs_no_step(kwargs: dict[str, int]) -> None:
    prog, train = make_program()
    prog.global_step.value[...] = 10
    ended = looprt.FinalOpsHook(prog.global_step)
    with looprt.MonitoredSession(RawCreator(prog), hooks=[StopAtStepHook(**kwargs), ended]) as sess:
        assert sess.should_stop()  # before the first run
        assert count_runs(sess, train) == 0
    assert prog.global_step.value == 10
    assert ended.final_ops_values == 10  # a clean end: every hook's end ran


def test_stop_at_start_false_keeps_tfs_one_run_past_last_step() -> None:
    prog, train = make_program()
    prog.global_step.value[...] = 10
    hook = StopAtStepHook(last_step=4, stop_at_start=False)
    with looprt.MonitoredSession(RawCreator(prog), hooks=[hook]) as sess:
        assert not sess.should_stop()
        assert count_runs(sess, train) == 1
    assert prog.global_step.value == 11


@pytest.mark.tensorflow
def test_the_tf_drop_in_keeps_tfs_one_run_past_last_step() -> None:
    train_module = pytest.importorskip("looprt.backends.tensorflow")
    hook = train_module.StopAtStepHook(last_step=4)
    assert isinstance(hook, StopAtStepHook)
    prog, train = make_program()
    prog.global_step.value[...] = 10
    with looprt.MonitoredSession(RawCreator(prog), hooks=[hook]) as sess:
        assert count_runs(sess, train) == 1


def test_prediction_is_confirmed_by_reading_the_global_step_again() -> None:
    prog, train = make_program()
    with monitored(prog, [StopAtStepHook(last_step=2)]) as sess:
        sess.run(train)  # global step 0 -> 1
        sess.run("w")  # reads 1, predicts 2, but no step ran: no stop
        assert not sess.should_stop()
        sess.run(train)  # 1 -> 2
        assert sess.should_stop()


def test_overshooting_steps_stop_at_the_first_run_past_last_step() -> None:
    prog, train = make_program(advance_per_run=2)
    with monitored(prog, [StopAtStepHook(last_step=3)]) as sess:
        assert count_runs(sess, train) == 2
    assert prog.global_step.value == 4


def test_recovery_keeps_the_last_step_computed_at_first_creation() -> None:
    prog, train = make_program()
    creator = RawCreator(prog, abort_runs={3})
    hook = StopAtStepHook(num_steps=4)
    with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
        assert count_runs(sess, train) == 4
    assert creator.created == 2
    assert hook.last_step == 4
    assert prog.global_step.value == 4


def test_a_session_without_global_step_is_an_error() -> None:
    class NoStepSession:
        graph = None

        def run(self, *args: Any, **kwargs: Any) -> Any:
            return None

        def close(self) -> None:
            pass

    class Creator:
        def create_session(self) -> Any:
            return NoStepSession()

    with pytest.raises(RuntimeError, match=r"^Global step should be created to use StopAtStepHook\.$"):
        looprt.MonitoredSession(Creator(), hooks=[StopAtStepHook(num_steps=1)])


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    ("kwargs", "advance", "start"),
    [
        ({"num_steps": 4}, 1, 0),
        ({"last_step": 3}, 1, 0),
        ({"last_step": 5}, 2, 0),
        ({"num_steps": 2}, 3, 5),
        ({"last_step": 2}, 1, 6),
    ],
)
def test_matches_tensorflow(kwargs: dict[str, int], advance: int, start: int) -> None:
    tf = pytest.importorskip("tensorflow")

    with tf.Graph().as_default():
        from tensorflow.python.training import training_util

        gs = tf.compat.v1.train.get_or_create_global_step()
        # Order the hook's global-step read before the increment: TF otherwise races
        # them inside one run (looprt reads state before steps by design).
        with tf.control_dependencies([training_util._get_or_create_global_step_read()]):
            train_op = tf.compat.v1.assign_add(gs, advance)
        scaffold = tf.compat.v1.train.Scaffold(init_fn=lambda _, s: gs.load(start, s))
        creator = tf.compat.v1.train.ChiefSessionCreator(scaffold=scaffold)
        final = tf.compat.v1.train.FinalOpsHook(gs)
        hooks = [tf.compat.v1.train.StopAtStepHook(**kwargs), final]
        with tf.compat.v1.train.MonitoredSession(creator, hooks=hooks) as sess:
            tf_runs = count_runs(sess, train_op)
        tf_final = final.final_ops_values

    prog, train = make_program(advance_per_run=advance)
    prog.global_step.value[...] = start
    # TF's behaviour is stop_at_start=False (the default stops a started-past-the-end session at once).
    with looprt.MonitoredSession(
        RawCreator(prog), hooks=[StopAtStepHook(**kwargs, stop_at_start=False)]
    ) as sess:
        runs = count_runs(sess, train)
    assert (runs, prog.global_step.value) == (tf_runs, tf_final)

    for bad in ({}, {"num_steps": 1, "last_step": 1}):
        with pytest.raises(ValueError) as tf_error:
            tf.compat.v1.train.StopAtStepHook(**bad)
        with pytest.raises(ValueError) as ours:
            StopAtStepHook(**bad)
        assert str(ours.value) == str(tf_error.value)
