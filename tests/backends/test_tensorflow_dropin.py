"""The TF drop-in: an existing ``tf.compat.v1`` script runs unchanged on looprt, with TF's results.

The script (``linear_regression``) is written once, against a ``train``
namespace, and run twice: with ``train = tf.compat.v1.train`` and with
``train = looprt.backends.tensorflow``. It uses a ``tf.data`` input, the
global step, a merged summary, checkpoints, ``StopAtStepHook`` and a
``LoggingTensorHook`` given a tensor name, stops and resumes from its
checkpoints, and finally runs until the data runs dry. Everything a user can
observe must match: losses and weights, runs per phase, the checkpoints kept
(read with TF's own reader), and the summaries written.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
train = pytest.importorskip("looprt.backends.tensorflow")

import looprt  # noqa: E402
from looprt.hooks.dispatch import overrides  # noqa: E402

pytestmark = pytest.mark.tensorflow


def linear_regression(train: Any, checkpoint_dir: str, last_step: int, log: list[Any]) -> dict[str, Any]:
    """A typical tf.compat.v1 training script; ``train`` is the only thing swapped."""
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        xs = np.linspace(-1.0, 1.0, 64).astype(np.float32)
        dataset = tf.data.Dataset.from_tensor_slices((xs, 3.0 * xs + 1.0)).batch(8).repeat(3)
        x, y = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        w = tf.compat.v1.get_variable("w", [], initializer=tf.zeros_initializer())
        b = tf.compat.v1.get_variable("b", [], initializer=tf.zeros_initializer())
        loss = tf.reduce_mean(tf.square(w * x + b - y), name="loss")
        tf.compat.v1.summary.scalar("loss", loss)
        train_op = train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
        hooks = [
            train.StopAtStepHook(last_step=last_step),
            train.LoggingTensorHook({"loss": "loss", "x": x}, every_n_iter=5,
                                    formatter=lambda values: log.append(
                                        {tag: np.asarray(v).tolist() for tag, v in values.items()}) or ""),
        ]
        runs, losses = 0, []
        with train.MonitoredTrainingSession(
            checkpoint_dir=checkpoint_dir,
            hooks=hooks,
            save_checkpoint_steps=5,
            save_summaries_steps=3,
        ) as sess:
            while not sess.should_stop():
                _, value = sess.run([train_op, loss])
                losses.append(value)
                runs += 1
    return {"runs": runs, "losses": losses}


def summaries(directory: Path) -> list[tuple[int, str, float]]:
    """Every scalar summary written to ``directory``'s event files, read with TF's reader."""
    found = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            found += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
    return sorted(found)


def has_graph_event(directory: Path) -> bool:
    return any(
        event.graph_def
        for path in directory.glob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(path))
    )


def checkpoint_values(directory: Path) -> tuple[int, float, float]:
    """(global step, w, b) of the newest checkpoint, found and read by TF's own functions."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(directory)))
    return int(reader.get_tensor("global_step")), float(reader.get_tensor("w")), float(reader.get_tensor("b"))


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The script's three phases on each namespace: stop at 7, resume to 30, run until the data ends."""
    results: dict[str, dict[str, Any]] = {}
    for name, namespace in (("tf", tf.compat.v1.train), ("looprt", train)):
        directory = tmp_path_factory.mktemp(name)
        log: list[Any] = []
        phases = [linear_regression(namespace, str(directory), last, log) for last in (7, 30, 1000)]
        results[name] = {"dir": directory, "phases": phases, "log": log}
    return results


def test_same_training_as_tf(both_runs: dict[str, dict[str, Any]]) -> None:
    ours, theirs = both_runs["looprt"]["phases"], both_runs["tf"]["phases"]
    assert [p["runs"] for p in ours] == [p["runs"] for p in theirs] == [7, 23, 24]
    for mine, tfs in zip(ours, theirs):
        np.testing.assert_array_equal(mine["losses"], tfs["losses"])
    assert both_runs["looprt"]["log"] == both_runs["tf"]["log"]


def test_same_checkpoints_as_tf(both_runs: dict[str, dict[str, Any]]) -> None:
    ours, theirs = both_runs["looprt"]["dir"], both_runs["tf"]["dir"]
    assert checkpoint_values(ours) == checkpoint_values(theirs)
    assert checkpoint_values(ours)[0] == 54  # the data ran dry: a clean end, and end() saved
    kept = [int(p.rsplit("-", 1)[1]) for p in tf.train.get_checkpoint_state(str(theirs)).all_model_checkpoint_paths]
    assert [c.step for c in looprt.CheckpointManager(str(ours)).checkpoints()] == kept
    assert all(c.valid for c in looprt.CheckpointManager(str(ours)).checkpoints())
    assert (ours / "graph.pbtxt").read_text() != ""


def test_same_summaries_as_tf(both_runs: dict[str, dict[str, Any]]) -> None:
    """The loss of the right runs, at their global steps, every 3 steps (or 2: see below)."""
    for name in ("tf", "looprt"):
        phases = both_runs[name]["phases"]
        loss_at = {}  # global step after a run -> the loss that run computed
        first_steps, start = [], 0
        for phase in phases:
            first_steps.append(start + 1)
            loss_at.update({start + i + 1: float(loss) for i, loss in enumerate(phase["losses"])})
            start += phase["runs"]
        written = summaries(both_runs[name]["dir"])
        assert {tag for _, tag, _ in written} == {"loss_1"}, name  # the merged summary op's tag
        assert all(value == loss_at[step] for step, _, value in written), name
        steps = [step for step, _, _ in written]
        assert set(first_steps) <= set(steps), name  # each session writes on its first run
        # Every 3 steps; in TF and looprt alike the hook's read of the global step races the
        # train op's increment, and a read after it makes the timer fire a step early.
        assert all(b in first_steps or b - a in (2, 3) for a, b in itertools.pairwise(steps)), (name, steps)
    assert has_graph_event(both_runs["looprt"]["dir"]) and has_graph_event(both_runs["tf"]["dir"])


def test_resumes_from_checkpoints_tf_wrote(tmp_path: Path) -> None:
    """A job moved onto looprt carries on from the checkpoints its TF version left."""
    log: list[Any] = []
    linear_regression(tf.compat.v1.train, str(tmp_path / "tf"), 7, log)
    linear_regression(tf.compat.v1.train, str(tmp_path / "tf"), 12, log)
    linear_regression(tf.compat.v1.train, str(tmp_path / "moved"), 7, log)
    moved = linear_regression(train, str(tmp_path / "moved"), 12, log)
    assert moved["runs"] == 5
    assert checkpoint_values(tmp_path / "moved") == checkpoint_values(tmp_path / "tf")


# --------------------------------------------------------------------------- the namespace


def test_namespace_has_the_monitored_session_family() -> None:
    for name in train.__all__:
        assert getattr(train, name) is not None
    assert train.MonitoredSession.StepContext is train.StepContext
    assert issubclass(train.Scaffold, tf.compat.v1.train.Scaffold)
    assert train.SessionRunHook is looprt.SessionRunHook
    assert issubclass(train.MonitoredSession, looprt.MonitoredSession)
    assert train.GradientDescentOptimizer is tf.compat.v1.train.GradientDescentOptimizer
    with pytest.raises(AttributeError, match="nor has tf.compat.v1.train"):
        _ = train.NoSuchThing


def test_tf_hook_base_methods_are_skipped() -> None:
    class OnlyAfterRun(tf.compat.v1.train.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            pass

    hook = OnlyAfterRun()
    assert overrides(hook, "after_run")
    assert not any(overrides(hook, name) for name in ("begin", "after_create_session", "before_run", "end"))


def test_coordinator_stops_cleanly_on_tf_out_of_range() -> None:
    coord = train.Coordinator()
    coord.request_stop(tf.errors.OutOfRangeError(None, None, "done"))
    coord.join()  # no error: a clean stop, as with tf.train.Coordinator


# --------------------------------------------------------------------------- graph-mode details


def test_graph_is_unfinalized_after_close_unless_it_was_finalized_before() -> None:
    with tf.Graph().as_default() as graph:
        tf.compat.v1.train.get_or_create_global_step()
        with train.MonitoredSession() as sess:
            assert graph.finalized
            assert isinstance(sess.graph, tf.Graph)
        assert not graph.finalized
        tf.constant(1.0)  # the script may build more ops now, as under TF
        graph.finalize()
        with train.MonitoredSession():
            pass
        assert graph.finalized


def test_queue_runners_are_started() -> None:
    with tf.Graph().as_default():
        queue = tf.queue.FIFOQueue(4, tf.float32)
        tf.compat.v1.train.add_queue_runner(tf.compat.v1.train.QueueRunner(queue, [queue.enqueue(7.0)]))
        dequeue = queue.dequeue()
        # Without the runner thread the dequeue would block: fail instead of hanging.
        options = tf.compat.v1.RunOptions(timeout_in_ms=20000)
        with train.MonitoredSession() as sess:
            assert [sess.run(dequeue, options=options) for _ in range(3)] == [7.0] * 3


def test_singular_session_gives_the_raw_tf_session() -> None:
    with tf.Graph().as_default():
        counter = tf.compat.v1.Variable(0, name="counter")
        increment = tf.compat.v1.assign_add(counter, 1)
        with train.SingularMonitoredSession() as sess:
            assert isinstance(sess.raw_session(), tf.compat.v1.Session)
            sess.run(increment)
            assert sess.raw_session().run(counter) == 1


def test_tf_run_options_and_metadata_reach_every_hook() -> None:
    seen: list[Any] = []

    class Watch(tf.compat.v1.train.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            seen.append((type(run_values.options), type(run_values.run_metadata)))

    with tf.Graph().as_default():
        value = tf.constant(1.0)
        with train.MonitoredSession(hooks=[Watch()]) as sess:
            sess.run(value)
    assert seen == [(tf.compat.v1.RunOptions, tf.compat.v1.RunMetadata)]


def test_logging_tensor_hook_resolves_names_like_tf(caplog: pytest.LogCaptureFixture) -> None:
    with tf.Graph().as_default():
        tf.constant(4.0, name="four")
        tf.split(tf.constant([1.0, 2.0]), 2, name="pair")
        zero = tf.constant(0.0)
        hook = train.LoggingTensorHook(["four"], every_n_iter=1)
        with caplog.at_level(logging.INFO, logger="tensorflow"), train.MonitoredSession(hooks=[hook]) as sess:
            sess.run(zero)
        assert "four = 4.0" in caplog.text
        with pytest.raises(ValueError, match="Name pair is ambiguous"):
            train.LoggingTensorHook(["pair"], every_n_iter=1).begin()
    with tf.Graph().as_default():
        other = tf.constant(1.0)
    with tf.Graph().as_default(), pytest.raises(ValueError, match="should have graph attribute"):
        train.LoggingTensorHook([other], every_n_iter=1).begin()


# --------------------------------------------------------------------------- bad input


def _outcome(namespace: Any, use: Any) -> tuple[str, str]:
    """What ``use(sess, graph)`` raises inside ``namespace``'s MonitoredSession over a small graph."""
    with tf.Graph().as_default() as graph:
        tf.compat.v1.train.get_or_create_global_step()
        graph.prevent_feeding(tf.constant(2.0, name="unfeedable"))
        try:
            with namespace.MonitoredSession() as sess:
                use(sess, graph)
        except Exception as e:
            return type(e).__name__, str(e).split("\n")[0]
    return "no error", ""


def _other_graph_tensor(sess: Any, graph: Any) -> Any:
    with tf.Graph().as_default():
        foreign = tf.constant(1.0)
    return sess.run(foreign)


def _unfeedable(sess: Any, graph: Any) -> Any:
    return sess.run("global_step:0", feed_dict={"unfeedable:0": 3.0})


def _no_such_tensor(sess: Any, graph: Any) -> Any:
    return sess.run("nothing:0")


def _feed_not_in_graph(sess: Any, graph: Any) -> Any:
    return sess.run("global_step:0", feed_dict={"nothing:0": 1.0})


@pytest.mark.parametrize("use", [_other_graph_tensor, _unfeedable, _no_such_tensor, _feed_not_in_graph])
def test_bad_fetches_and_feeds_fail_as_under_tf(use: Any) -> None:
    expected = _outcome(tf.compat.v1.train, use)
    assert expected[0] != "no error"
    assert _outcome(train, use) == expected


def test_eager_mode_where_graph_mode_is_required() -> None:
    assert tf.executing_eagerly()
    with pytest.raises(RuntimeError, match=r"with tf.Graph\(\).as_default\(\)") as info:
        train.MonitoredSession()
    assert isinstance(info.value, train.GraphModeRequiredError)
    with pytest.raises(RuntimeError, match="executing eagerly"):
        train.MonitoredTrainingSession()
    assert tf.executing_eagerly()  # nothing turned eager execution off


def test_an_error_names_both_missing_ops_when_nothing_initializes(tmp_path: Path) -> None:
    with tf.Graph().as_default():
        tf.compat.v1.Variable(1.0, name="v")
        scaffold = train.Scaffold(init_op=tf.no_op(), local_init_op=tf.no_op())
        with pytest.raises(RuntimeError, match="Variables not initialized: v"):
            train.MonitoredSession(train.ChiefSessionCreator(scaffold=scaffold))


# --------------------------------------------------------------------------- the other standard hooks


def _with_standard_hooks(namespace: Any, fail_on_nan_loss: bool, tmp_path: Path) -> tuple[Any, ...]:
    """FeedFn, NanTensor, FinalOps, GlobalStepWaiter and StopAtStep hooks of ``namespace`` together."""
    feeds = [4.0, 2.0, 1.0, -1.0, 3.0, 5.0]
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.compat.v1.placeholder_with_default(1.0, [], name="x")
        loss = tf.math.log(x)  # NaN for the fourth feed
        advance = tf.compat.v1.assign_add(global_step, 1)
        compute = tf.group(loss)
        final = namespace.FinalOpsHook({"step": global_step, "x2": x * 2.0})
        hooks = [
            namespace.FeedFnHook(lambda: {x: feeds.pop(0)}),
            namespace.NanTensorHook(loss, fail_on_nan_loss=fail_on_nan_loss),
            namespace.GlobalStepWaiterHook(wait_until_step=0),
            namespace.StopAtStepHook(num_steps=5),
            namespace.ProfilerHook(save_steps=2, output_dir=str(tmp_path)),
            final,
        ]
        runs = 0

        def step(step_context: Any) -> None:
            # The global step advances in a run of its own: the hooks read it in the hooked run,
            # which would race an increment made in that same run (in TF alone too).
            step_context.session.run(advance)
            step_context.run_with_hooks(compute)

        try:
            with namespace.MonitoredSession(hooks=hooks) as sess:
                while not sess.should_stop():
                    sess.run_step_fn(step)
                    runs += 1
            outcome = "clean"
        except Exception as e:
            outcome = type(e).__name__
    timelines = sorted(p.name for p in tmp_path.glob("timeline-*.json"))
    return runs, outcome, final.final_ops_values, feeds, timelines


@pytest.mark.parametrize("fail_on_nan_loss", [True, False])
def test_standard_hooks_behave_as_tfs(fail_on_nan_loss: bool, tmp_path: Path) -> None:
    expected = _with_standard_hooks(tf.compat.v1.train, fail_on_nan_loss, tmp_path / "tf")
    assert _with_standard_hooks(train, fail_on_nan_loss, tmp_path / "looprt") == expected
    assert expected[4]  # a trace was taken and TF's timeline written
