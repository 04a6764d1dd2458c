"""``looprt demo``: train a small MLP classifier with every standard piece of looprt.

The model is a one-hidden-layer MLP trained with SGD on a synthetic 10-class
problem (Gaussian clusters in 32 dimensions): in plain NumPy (``backend="numpy"``)
or in PyTorch (``backend="torch"``). The run writes checkpoints and TensorBoard
summaries to its directory; running it again resumes from the latest
checkpoint and trains ``steps`` more steps. A resumed run sees exactly the
batches an uninterrupted one would: NumPy minibatches are drawn from a
generator seeded by the global step; the PyTorch program's data loader
position is part of its checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from looprt.program.handles import Step
from looprt.program.program import Program
from looprt.program.session import ProgramSession
from looprt.session.scaffold import Scaffold

__all__ = ["DemoResult", "build_jax_program", "build_numpy_program", "build_torch_program", "run_demo"]

logger = logging.getLogger(__name__)

CLASSES, FEATURES, HIDDEN, BATCH = 10, 32, 64, 64


def _dataset(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (CLASSES, FEATURES))
    labels = rng.integers(0, CLASSES, 4096)
    features = centers[labels] + rng.normal(0.0, 1.2, (labels.size, FEATURES))
    return features[:3584], labels[:3584], features[3584:], labels[3584:]


def build_numpy_program(seed: int = 0) -> tuple[Program, Step, Step]:
    """The demo's program: its ``train`` step and its ``evaluate`` step."""
    x_train, y_train, x_test, y_test = _dataset(seed)
    rng = np.random.default_rng(seed + 1)
    prog = Program(backend="numpy", name="demo_mlp")
    prog.state("w1", rng.normal(0.0, np.sqrt(2.0 / FEATURES), (FEATURES, HIDDEN)))
    prog.state("b1", np.zeros(HIDDEN))
    prog.state("w2", rng.normal(0.0, np.sqrt(1.0 / HIDDEN), (HIDDEN, CLASSES)))
    prog.state("b2", np.zeros(CLASSES))
    prog.input("learning_rate", default=0.1)

    def forward(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> Any:
        hidden = np.maximum(x @ w1 + b1, 0.0)
        logits = hidden @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return hidden, probs

    @prog.step(outputs=("loss", "accuracy"))
    def train(
        learning_rate: float,
        global_step: np.ndarray,
        w1: np.ndarray,
        b1: np.ndarray,
        w2: np.ndarray,
        b2: np.ndarray,
    ) -> dict[str, float]:
        batch = np.random.default_rng([seed, int(global_step)]).integers(0, y_train.size, BATCH)
        x, y = x_train[batch], y_train[batch]
        hidden, probs = forward(x, w1, b1, w2, b2)
        loss = float(-np.log(probs[np.arange(BATCH), y] + 1e-12).mean())
        accuracy = float((probs.argmax(axis=1) == y).mean())
        grad_logits = probs
        grad_logits[np.arange(BATCH), y] -= 1.0
        grad_logits /= BATCH
        grad_hidden = (grad_logits @ w2.T) * (hidden > 0)
        w2 -= learning_rate * (hidden.T @ grad_logits)
        b2 -= learning_rate * grad_logits.sum(axis=0)
        w1 -= learning_rate * (x.T @ grad_hidden)
        b1 -= learning_rate * grad_hidden.sum(axis=0)
        return {"loss": loss, "accuracy": accuracy}

    @prog.step(outputs=("accuracy",), advance_global_step=False)
    def evaluate(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> dict[str, float]:
        _, probs = forward(x_test, w1, b1, w2, b2)
        return {"accuracy": float((probs.argmax(axis=1) == y_test).mean())}

    prog.summary("loss", train.loss)
    prog.summary("accuracy", train.accuracy)
    prog.summary("w1", "w1")
    return prog, train, evaluate


def build_torch_program(seed: int = 0) -> tuple[Program, Step, Step]:
    """The same demo in PyTorch: an ``nn.Sequential`` MLP, SGD, a shuffling ``DataLoader``."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from looprt.backends.torch import Epochs

    x_train, y_train, x_test, y_test = _dataset(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    )
    train_set = TensorDataset(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train))
    loader = DataLoader(
        train_set, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed + 1)
    )
    test_x, test_y = torch.tensor(x_test, dtype=torch.float32), torch.tensor(y_test)
    prog = Program(backend="torch", name="demo_mlp")
    prog.state("model", model)
    prog.state("opt", torch.optim.SGD(model.parameters(), lr=0.1))
    prog.input("batch", iterable=Epochs(loader))

    @prog.step(outputs=("loss", "accuracy"))
    def train(batch: Any, model: Any, opt: Any) -> dict[str, Any]:
        x, y = batch
        logits = model(x)
        loss: Any = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "accuracy": (logits.argmax(1) == y).float().mean()}

    @prog.step(outputs=("accuracy",), advance_global_step=False)
    def evaluate(model: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {"accuracy": (model(test_x).argmax(1) == test_y).float().mean()}

    prog.summary("loss", train.loss)
    prog.summary("accuracy", train.accuracy)
    return prog, train, evaluate


def build_jax_program(seed: int = 0) -> tuple[Program, Step, Step]:
    """The same demo in JAX: a jitted functional step (plain SGD) on the NumPy demo's batches."""
    import jax
    import jax.numpy as jnp

    x_train, y_train, x_test, y_test = _dataset(seed)
    rng = np.random.default_rng(seed + 1)
    params = {
        "w1": jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / FEATURES), (FEATURES, HIDDEN)), jnp.float32),
        "b1": jnp.zeros(HIDDEN),
        "w2": jnp.asarray(rng.normal(0.0, np.sqrt(1.0 / HIDDEN), (HIDDEN, CLASSES)), jnp.float32),
        "b2": jnp.zeros(CLASSES),
    }
    prog = Program(backend="jax", name="demo_mlp")
    prog.state("params", params)
    prog.input("learning_rate", default=0.1)

    def logits_of(p: Any, x: Any) -> Any:
        return jnp.maximum(x @ p["w1"] + p["b1"], 0.0) @ p["w2"] + p["b2"]

    @jax.jit
    def sgd(p: Any, x: Any, y: Any, learning_rate: Any) -> Any:
        def loss_fn(p: Any) -> Any:
            logits = logits_of(p, x)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.size), y]), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        new = jax.tree_util.tree_map(lambda v, g: v - learning_rate * g, p, grads)
        return new, loss, jnp.mean(logits.argmax(1) == y)

    @prog.step(updates=("params",), outputs=("loss", "accuracy"))
    def train(learning_rate: float, global_step: np.ndarray, params: Any) -> Any:
        # The NumPy demo's batches: drawn on the host from the global step, which stays there.
        batch = np.random.default_rng([seed, int(global_step)]).integers(0, y_train.size, BATCH)
        return sgd(params, x_train[batch].astype(np.float32), y_train[batch], learning_rate)

    test_x = jnp.asarray(x_test, jnp.float32)

    @prog.step(outputs=("accuracy",), advance_global_step=False)
    def evaluate(params: Any) -> dict[str, Any]:
        return {"accuracy": jnp.mean(logits_of(params, test_x).argmax(1) == y_test)}

    prog.summary("loss", train.loss)
    prog.summary("accuracy", train.accuracy)
    return prog, train, evaluate


_BUILDERS = {"numpy": build_numpy_program, "torch": build_torch_program, "jax": build_jax_program}


@dataclass
class DemoResult:
    """What a demo run did."""

    directory: str
    first_step: int
    last_step: int
    loss: float | None
    test_accuracy: float
    interrupted: bool = False  # stopped by Ctrl-C (``handle_interrupts``), after a final checkpoint


def run_demo(
    directory: str,
    steps: int = 1000,
    backend: str = "numpy",
    seed: int = 0,
    progress: bool | None = None,
    handle_interrupts: bool = False,
) -> DemoResult:
    """Train ``steps`` more steps in ``directory``, resuming from its latest checkpoint.

    ``backend`` is "numpy" or "torch" (which needs PyTorch installed). A
    directory whose checkpoints another backend wrote raises
    ``FailedPreconditionError`` before anything is written. With
    ``handle_interrupts`` (the main thread only), Ctrl-C or SIGTERM stops
    at the next step boundary after a final checkpoint (``interrupted``).
    """
    if backend not in _BUILDERS:
        raise ValueError(f"the demo runs on {' or '.join(map(repr, _BUILDERS))}, not {backend!r}")
    _check_backend(directory, backend)
    from looprt.hooks.logging_tensor import LoggingTensorHook
    from looprt.hooks.progress import ProgressBarHook
    from looprt.hooks.stop_at_step import StopAtStepHook
    from looprt.session.training import MonitoredTrainingSession

    prog, train, evaluate = _BUILDERS[backend](seed)
    stop = StopAtStepHook(num_steps=steps)
    hooks = [
        stop,
        LoggingTensorHook(
            {"step": prog.global_step, "loss": train.loss, "accuracy": train.accuracy}, every_n_iter=100
        ),
        ProgressBarHook(
            total=lambda: stop.last_step,
            every_n_steps=10,
            tensors={"loss": train.loss},
            disable=None if progress is None else not progress,
        ),
    ]
    if handle_interrupts:
        import signal

        from looprt.hooks.preemption import PreemptionHook

        interrupts = PreemptionHook(signals=(signal.SIGINT, signal.SIGTERM))
        hooks.append(interrupts)
    first_step: int | None = None
    loss: float | None = None
    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        scaffold=Scaffold(program=prog),
        hooks=hooks,
        save_checkpoint_steps=max(steps // 5, 1),
        save_summaries_steps=max(steps // 50, 1),
        log_step_count_steps=max(steps // 10, 1),
    ) as sess:
        while not sess.should_stop():
            out = sess.run({"train": train, "loss": train.loss, "step": prog.global_step})
            if first_step is None:
                first_step = int(out["step"])
            loss = out["loss"]
    evaluator = ProgramSession(prog)
    accuracy = float(evaluator.run(evaluate.accuracy))
    last_step = int(evaluator.run(prog.global_step))
    logger.info("test accuracy after step %d: %.3f", last_step, accuracy)
    return DemoResult(
        directory,
        first_step if first_step is not None else last_step,
        last_step,
        loss,
        accuracy,
        interrupted=handle_interrupts and interrupts.preempted,
    )


def _check_backend(directory: str, backend: str) -> None:
    """Raise ``FailedPreconditionError`` if ``directory``'s newest checkpoint is another backend's."""
    from looprt.checkpoint.format import read_manifest
    from looprt.checkpoint.latest import latest_checkpoint, resolve_checkpoint
    from looprt.errors import FailedPreconditionError

    if "://" not in directory and not os.path.isdir(directory):
        return
    path = latest_checkpoint(directory)
    if path is None:
        return
    if "://" in path:
        from looprt.checkpoint.remote import read_manifest as read_remote_manifest
        from looprt.checkpoint.storage import Location

        folder, _, name = path.rpartition("/")
        manifest, _, _ = read_remote_manifest(Location(folder), name)
    else:
        manifest, _ = read_manifest(resolve_checkpoint(path))
    written_by = (manifest or {}).get("backend")
    if written_by and written_by != backend:
        raise FailedPreconditionError(
            f"the checkpoints in {directory} belong to the {written_by!r} backend, not {backend!r}: "
            f"resume them with --backend {written_by}, or train {backend} in another --dir"
        )
