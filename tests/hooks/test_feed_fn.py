"""FeedFnHook: feeds what feed_fn returns into every run."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import looprt
from looprt.hooks.feed_fn import FeedFnHook


def make_program() -> tuple[looprt.Program, Any, Any]:
    prog = looprt.Program(name="p")
    x = prog.input("x")

    @prog.step(outputs=("y",))
    def double(x: int) -> dict[str, int]:
        return {"y": 2 * x}

    return prog, x, double


def monitored(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def test_feed_fn_is_called_once_per_run_and_fed() -> None:
    prog, x, double = make_program()
    counter = itertools.count(1)
    calls: list[int] = []

    def feed_fn() -> dict[Any, int]:
        value = next(counter)
        calls.append(value)
        return {x: value}

    hook = FeedFnHook(feed_fn)
    assert hook.feed_fn is feed_fn
    with monitored(prog, [hook]) as sess:
        assert [sess.run(double.y) for _ in range(3)] == [2, 4, 6]
        assert sess.run(prog.global_step) == 3  # a run that does not use x is still fed
    assert calls == [1, 2, 3, 4]


def test_names_work_as_keys_and_other_feeds_merge() -> None:
    prog, x, double = make_program()
    prog.input("unused", default=0)
    with monitored(prog, [FeedFnHook(lambda: {"x": 5})]) as sess:
        assert sess.run(double.y, feed_dict={"unused": 1}) == 10


def test_feeding_what_the_caller_feeds_is_a_conflict() -> None:
    prog, x, double = make_program()
    with (
        monitored(prog, [FeedFnHook(lambda: {x: 1})]) as sess,
        pytest.raises(looprt.FeedConflictError, match="^Same tensor is fed by a SessionRunHook and user."),
    ):
        sess.run(double.y, feed_dict={x: 2})


def test_two_feed_fn_hooks_feeding_one_input_conflict() -> None:
    prog, x, double = make_program()
    hooks = [FeedFnHook(lambda: {x: 1}), FeedFnHook(lambda: {x: 2})]
    with (
        monitored(prog, hooks) as sess,
        pytest.raises(looprt.FeedConflictError, match="^Same tensor is fed by two hooks."),
    ):
        sess.run(double.y)


@pytest.mark.tensorflow
def test_matches_tensorflow() -> None:
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default():
        ph = tf.compat.v1.placeholder(tf.int32, [])
        y = 2 * ph
        counter = itertools.count(1)
        with tf.compat.v1.train.MonitoredSession(
            hooks=[tf.compat.v1.train.FeedFnHook(lambda: {ph: next(counter)})]
        ) as sess:
            tf_values = [int(sess.run(y)) for _ in range(3)]
    prog, x, double = make_program()
    counter = itertools.count(1)
    with monitored(prog, [FeedFnHook(lambda: {x: next(counter)})]) as sess:
        assert [sess.run(double.y) for _ in range(3)] == tf_values
