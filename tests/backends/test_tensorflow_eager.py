"""TF2 eager programs: Keras models, optimizers and ``tf.function`` steps under looprt's sessions.

The same sessions and neutral hooks as NumPy programs; checkpoints are
``tf.train.Checkpoint`` files that a plain TF program restores. Eager
execution stays on throughout (graph-mode tests use ``tf.Graph`` contexts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
tensorflow_backend = pytest.importorskip("looprt.backends.tensorflow")

import looprt  # noqa: E402

pytestmark = pytest.mark.tensorflow

XS = np.linspace(-1.0, 1.0, 16).astype(np.float32)[:, None]
YS = 3.0 * XS + 1.0


def make_program(batches: Any = None, fail_on: set[int] | None = None) -> dict[str, Any]:
    """Linear regression in Keras; ``fail_on``: calls of the step that raise tf's AbortedError."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.5)
    prog = looprt.Program(backend="tensorflow", name="regression")
    prog.state("model", model)
    prog.state("optimizer", optimizer)
    batch = prog.input("batch", iterable=batches if batches is not None else
                       tf.data.Dataset.from_tensors((XS, YS)).repeat())
    calls = [0]

    @tf.function
    def fit(batch: Any, model: Any, optimizer: Any) -> Any:
        x, y = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    @prog.step(outputs=("loss",))
    def train(batch: Any, model: Any, optimizer: Any) -> dict[str, Any]:
        calls[0] += 1
        if fail_on and calls[0] in fail_on:
            raise tf.errors.AbortedError(None, None, f"peer lost at call {calls[0]}")
        return {"loss": fit(batch, model, optimizer)}

    prog.summary("loss", train.loss)
    return {"prog": prog, "model": model, "optimizer": optimizer, "train": train, "batch": batch}


def run_until(parts: dict[str, Any], checkpoint_dir: Path | None, last_step: int, hooks: Any = ()) -> list[Any]:
    losses = []
    with looprt.MonitoredTrainingSession(
        scaffold=looprt.Scaffold(program=parts["prog"]),
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        save_checkpoint_steps=2,
        hooks=[looprt.StopAtStepHook(last_step=last_step), *hooks],
    ) as sess:
        while not sess.should_stop():
            losses.append(sess.run(parts["train"].loss))
    return losses


def test_trains_under_looprt_sessions_with_host_values(tmp_path: Path) -> None:
    parts = make_program()
    losses = run_until(parts, tmp_path, 10)
    assert len(losses) == 10
    assert type(losses[0]) is np.float32  # a 0-d tensor comes back as a NumPy scalar, as TF's Session gives
    assert losses[-1] < losses[0] / 10
    with looprt.SingularMonitoredSession(scaffold=looprt.Scaffold(program=parts["prog"])) as sess:
        step, weights = sess.run([parts["prog"].global_step, parts["prog"].states["model"]])
    assert type(step) is np.int64
    assert [w.shape for w in weights] == [(1, 1), (1,)]


def test_checkpoints_are_tf_checkpoints_a_plain_tf_program_restores(tmp_path: Path) -> None:
    parts = make_program()
    run_until(parts, tmp_path, 5)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.5)
    optimizer.build(model.trainable_variables)
    global_step = tf.Variable(0, dtype=tf.int64)
    status = tf.train.Checkpoint(model=model, optimizer=optimizer, global_step=global_step).read(
        tf.train.latest_checkpoint(str(tmp_path))
    )
    status.assert_consumed()
    assert int(global_step.numpy()) == 5
    for restored, trained in zip(model.get_weights(), parts["model"].get_weights()):
        np.testing.assert_array_equal(restored, trained)
    for restored, trained in zip(optimizer.variables, parts["optimizer"].variables):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy())


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path: Path) -> None:
    straight = run_until(make_program(), None, 8)
    first = run_until(make_program(), tmp_path, 5)
    resumed = make_program()  # a new process: new, unbuilt optimizer; its slots are restored on creation
    rest = run_until(resumed, tmp_path, 8)
    np.testing.assert_array_equal(first + rest, straight)


class Recorder(looprt.SessionRunHook):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.events.append(("created", int(session.run(session.graph.global_step))))

    def end(self, session: Any) -> None:
        self.events.append(("end", int(session.run(session.graph.global_step))))


def test_tf_aborted_error_in_a_step_recovers_from_the_checkpoint(tmp_path: Path) -> None:
    recorder = Recorder()
    parts = make_program(fail_on={4})
    losses = run_until(parts, tmp_path, 6, hooks=[recorder])
    # Checkpoints at 0 and 2; the 4th call (global step 3 -> 4) aborts: restored at 2, step 3 runs again.
    assert recorder.events == [("created", 0), ("created", 2), ("end", 6)]
    assert len(losses) == 3 + 4
    assert losses[3] == losses[2]


def test_exhausted_dataset_ends_the_with_block_cleanly() -> None:
    recorder = Recorder()
    parts = make_program(batches=tf.data.Dataset.from_tensors((XS, YS)).repeat(3))
    assert len(run_until(parts, None, 100, hooks=[recorder])) == 3
    assert recorder.events[-1] == ("end", 3)


def test_tf_out_of_range_inside_a_step_ends_the_with_block_cleanly() -> None:
    prog = looprt.Program(backend="tensorflow")
    iterator = iter(tf.data.Dataset.range(2))

    @prog.step(outputs=("item",))
    def pull() -> dict[str, Any]:
        return {"item": iterator.get_next()}

    items = []
    with looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))) as sess:
        while not sess.should_stop():
            items.append(sess.run(pull.item))
    assert items == [0, 1]


def test_fed_numbers_do_not_retrace_a_tf_function() -> None:
    traces = []
    prog = looprt.Program(backend="tensorflow")
    total = prog.state("total", tf.Variable(0.0))
    lr = prog.input("lr", default=0.5)

    @prog.step(outputs=("total",))
    @tf.function
    def accumulate(lr: Any, total: Any) -> dict[str, Any]:
        traces.append(1)
        return {"total": total.assign_add(lr)}

    with looprt.SingularMonitoredSession(scaffold=looprt.Scaffold(program=prog)) as sess:
        results = [sess.run(accumulate.total, feed_dict={lr: value}) for value in (0.25, 1.0, 2.0, 4.0)]
        assert sess.run(total) == 7.25
    assert results == [0.25, 1.25, 3.25, 7.25]
    assert len(traces) == 1


def test_init_op_resets_state_and_reports_objects_built_later(caplog: pytest.LogCaptureFixture) -> None:
    parts = make_program()
    scaffold = looprt.Scaffold(program=parts["prog"])
    with looprt.SingularMonitoredSession(scaffold=scaffold) as sess:
        sess.run(parts["train"].loss)
        sess.raw_session().run(scaffold.init_op)  # the optimizer has made its slots since
    assert [w.tolist() for w in parts["model"].get_weights()] == [[[0.0]], [0.0]]
    assert int(parts["optimizer"].iterations.numpy()) == 0
    assert "has 4 variables, the value to restore 2" in caplog.text


def test_looprt_saver_writes_snapshots_and_restores_all_or_nothing(tmp_path: Path) -> None:
    parts = make_program()
    prog = parts["prog"]
    note = prog.state("note", {"epoch": 3})
    saver = looprt.Saver(prog)
    with looprt.SingularMonitoredSession(scaffold=looprt.Scaffold(program=prog, saver=saver)) as sess:
        sess.run(parts["train"].loss)
        path = saver.save(sess.raw_session(), str(tmp_path / "snap"))
        trained = parts["model"].get_weights()
        sess.run(parts["train"].loss)
        note.value = {"epoch": 4}
        saver.restore(sess.raw_session(), path)
    assert note.value == {"epoch": 3}
    for restored, saved in zip(parts["model"].get_weights(), trained):
        np.testing.assert_array_equal(restored, saved)


def test_wrap_infers_the_tensorflow_backend() -> None:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    step = looprt.wrap(lambda batch: {"y": model(batch)}, state={"model": model}, inputs=[XS])
    assert step.program.backend.name == "tensorflow"
    with looprt.SingularMonitoredSession(scaffold=looprt.Scaffold(program=step.program)) as sess:
        assert sess.run(step["y"]).shape == (16, 1)


def test_inside_a_graph_context_the_eager_backend_refuses() -> None:
    with tf.Graph().as_default(), pytest.raises(RuntimeError, match="TF2 eager programs") as info:
        looprt.Program(backend="tensorflow")
    assert isinstance(info.value, tensorflow_backend.EagerModeRequiredError)
    assert tf.executing_eagerly()
