"""Evaluation on PyTorch and TF2 eager programs, and the TF drop-in's ``checkpoints_iterator``.

Each program trains a linear classifier while a hook records its weights
after every step; every checkpoint is then evaluated by ``evaluate_repeatedly``
and must equal a plain NumPy evaluation of the weights recorded at that step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.evaluation import evaluations
from looprt.metrics import Accuracy, Mean

RNG = np.random.default_rng(0)
X_TRAIN = RNG.normal(size=(64, 4)).astype(np.float32)
Y_TRAIN = (X_TRAIN @ np.array([1.0, -2.0, 0.5, 1.0]) > 0).astype(np.int64)
X_TEST = RNG.normal(size=(40, 4)).astype(np.float32)
Y_TEST = (X_TEST @ np.array([1.0, -2.0, 0.5, 1.0]) > 0).astype(np.int64)
TEST_BATCHES = [(X_TEST[i : i + 16], Y_TEST[i : i + 16]) for i in range(0, 40, 16)]  # 16, 16, 8


class RecordWeights(looprt.SessionRunHook):
    """Keeps ``read()`` (the weights as NumPy arrays) after every step, by global step."""

    def __init__(self, prog: looprt.Program, read: Any) -> None:
        self.prog, self.read = prog, read
        self.by_step: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.by_step[int(session.run(self.prog.global_step))] = self.read()

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.by_step[int(run_context.session.run(self.prog.global_step))] = self.read()


def plain_evaluation(kernel: np.ndarray, bias: np.ndarray) -> dict[str, float]:
    """Mean per-example cross-entropy and accuracy over the test set, in NumPy."""
    logits = X_TEST.astype(np.float64) @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return {
        "loss": float(-log_probs[np.arange(len(Y_TEST)), Y_TEST].mean()),
        "accuracy": float((logits.argmax(axis=1) == Y_TEST).mean()),
    }


def train_and_evaluate(prog: looprt.Program, train: Any, evaluate: Any, recorder: RecordWeights, tmp: Path) -> None:
    with looprt.MonitoredTrainingSession(
        scaffold=looprt.Scaffold(program=prog), checkpoint_dir=str(tmp), save_checkpoint_steps=2,
        save_summaries_steps=None, save_summaries_secs=None, log_step_count_steps=None,
        hooks=[looprt.StopAtStepHook(last_step=6), recorder],
    ) as sess:
        while not sess.should_stop():
            sess.run(train)
    metrics = {
        "loss": Mean(evaluate.losses),
        "accuracy": Accuracy(labels=evaluate.labels, predictions=evaluate.logits),
    }
    results = list(evaluations(str(tmp), metrics=metrics, eval_interval_secs=0, timeout=0, summary_dir=None))
    assert [int(path.rpartition("-")[2]) for path, _ in results] == [0, 2, 4, 6]
    for path, values in results:
        step = int(path.rpartition("-")[2])
        expected = plain_evaluation(*recorder.by_step[step])
        assert values == {name: pytest.approx(value, rel=1e-5) for name, value in expected.items()}, step
    assert len({round(v["loss"], 6) for _, v in results}) == 4  # training moved the weights


@pytest.mark.torch
def test_torch_program(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("looprt.backends.torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    prog = looprt.Program(backend="torch", name="classifier")
    prog.state("model", model)
    prog.state("opt", torch.optim.SGD(model.parameters(), lr=0.5))
    prog.input("test_batch", iterable=[(torch.tensor(x), torch.tensor(y)) for x, y in TEST_BATCHES])

    @prog.step(outputs=("loss",))
    def train(model: Any, opt: Any) -> dict[str, Any]:
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(X_TRAIN)), torch.tensor(Y_TRAIN))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    @prog.step(outputs=("losses", "labels", "logits"), advance_global_step=False)
    def evaluate(test_batch: Any, model: Any) -> dict[str, Any]:
        x, y = test_batch
        with torch.no_grad():
            logits = model(x)
        return {"losses": torch.nn.functional.cross_entropy(logits, y, reduction="none"), "labels": y, "logits": logits}

    def read() -> tuple[np.ndarray, np.ndarray]:
        return model.weight.detach().numpy().T.astype(np.float64), model.bias.detach().numpy().astype(np.float64)

    train_and_evaluate(prog, train, evaluate, RecordWeights(prog, read), tmp_path)


@pytest.mark.tensorflow
def test_tf2_eager_program(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    pytest.importorskip("looprt.backends.tensorflow")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_initializer="glorot_uniform")])
    prog = looprt.Program(backend="tensorflow", name="classifier")
    prog.state("model", model)
    prog.state("optimizer", keras.optimizers.SGD(0.5))
    prog.input("test_batch", iterable=tf.data.Dataset.from_tensor_slices((X_TEST, Y_TEST)).batch(16))

    @tf.function  # type: ignore[untyped-decorator]
    def fit(model: Any, optimizer: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=Y_TRAIN, logits=model(X_TRAIN))
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    @prog.step(outputs=("loss",))
    def train(model: Any, optimizer: Any) -> dict[str, Any]:
        return {"loss": fit(model, optimizer)}

    @prog.step(outputs=("losses", "labels", "logits"), advance_global_step=False)
    def evaluate(test_batch: Any, model: Any) -> dict[str, Any]:
        x, y = test_batch
        logits = model(x)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return {"losses": losses, "labels": y, "logits": logits}

    def read() -> tuple[np.ndarray, np.ndarray]:
        kernel, bias = model.get_weights()
        return kernel.astype(np.float64), bias.astype(np.float64)

    train_and_evaluate(prog, train, evaluate, RecordWeights(prog, read), tmp_path)


@pytest.mark.tensorflow
def test_tf_dropin_checkpoints_iterator_and_tfs_own_agree(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    train = pytest.importorskip("looprt.backends.tensorflow")
    weights = {}
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        w = tf.compat.v1.get_variable("w", [], initializer=tf.zeros_initializer())
        loss = tf.square(w - 3.0)
        train_op = train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
        with tf.control_dependencies([train_op]):
            after = tf.identity(w.read_value()), tf.identity(global_step.read_value())
        with train.MonitoredTrainingSession(
            checkpoint_dir=str(tmp_path), save_checkpoint_steps=2, save_summaries_steps=None,
            save_summaries_secs=None, hooks=[train.StopAtStepHook(last_step=6)],
        ) as sess:
            while not sess.should_stop():
                value, step = sess.run(after)
                weights[int(step)] = float(value)
        weights[0] = 0.0
    ours = list(train.checkpoints_iterator(str(tmp_path), timeout=0))
    theirs = list(tf.compat.v1.train.checkpoints_iterator(str(tmp_path), timeout=0))
    assert [int(p.rpartition("-")[2]) for p in ours] == [0, 2, 4, 6]
    assert theirs == ours[-1:]  # TF's yields the newest only; the same path
    for prefix in ours:
        step = int(prefix.rpartition("-")[2])
        assert tf.train.load_checkpoint(prefix).get_tensor("w") == pytest.approx(weights[step])
        with tf.Graph().as_default():  # TF's own Saver restores what the drop-in's iterator gives
            v = tf.compat.v1.get_variable("w", [], initializer=tf.zeros_initializer())
            tf.compat.v1.train.get_or_create_global_step()
            with tf.compat.v1.Session() as plain:
                tf.compat.v1.train.Saver().restore(plain, prefix)
                assert plain.run(v) == pytest.approx(weights[step])
