"""Linear regression on the NumPy backend: a complete looprt training script.

    python examples/numpy_regression.py --steps 500 --dir regression-run

Trains ``y = x @ w + noise`` by minibatch SGD under ``MonitoredTrainingSession``
with checkpoints and TensorBoard summaries in ``--dir``. Run it again with the
same ``--dir`` and it resumes from the latest checkpoint and trains ``--steps``
more. Each minibatch is drawn from a generator seeded with the global step, so
a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

import looprt

FEATURES, BATCH = 8, 64
TRUE_W = np.linspace(-2.0, 2.0, FEATURES)
NOISE = 0.1


def build_program() -> tuple[looprt.Program, looprt.Step]:
    """The program: state ``w`` and ``b``, input ``learning_rate``, step ``train``."""
    prog = looprt.Program(backend="numpy", name="regression")
    prog.state("w", np.zeros(FEATURES))
    prog.state("b", np.zeros(()))
    prog.input("learning_rate", default=0.05)

    @prog.step(outputs=("loss",))
    def train(
        learning_rate: float, global_step: np.ndarray, w: np.ndarray, b: np.ndarray
    ) -> dict[str, float]:
        rng = np.random.default_rng([0, int(global_step)])  # the batch of this step, on any run
        x = rng.normal(size=(BATCH, FEATURES))
        y = x @ TRUE_W + 1.5 + NOISE * rng.normal(size=BATCH)
        error = x @ w + b - y
        w -= learning_rate * 2.0 * x.T @ error / BATCH  # state is updated in place
        b -= learning_rate * 2.0 * error.mean()
        return {"loss": float((error**2).mean())}

    prog.summary("loss", train.loss)
    prog.summary("w", "w")
    return prog, train


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps to train in this run")
    parser.add_argument("--dir", default="regression-run", help="checkpoint and summary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    prog, train = build_program()
    hooks = [
        looprt.StopAtStepHook(num_steps=args.steps),
        looprt.NanTensorHook(train.loss),
        looprt.LoggingTensorHook(
            {"step": prog.global_step, "loss": train.loss}, every_n_iter=max(args.steps // 5, 1)
        ),
    ]
    loss = float("nan")
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=args.dir,
        scaffold=looprt.Scaffold(program=prog),
        hooks=hooks,
        save_checkpoint_steps=max(args.steps // 2, 1),
        save_summaries_steps=max(args.steps // 20, 1),
    ) as sess:
        while not sess.should_stop():
            loss = sess.run(train.loss)

    w = prog.states["w"].value
    error = float(np.abs(w - TRUE_W).max())
    print(
        f"global step {int(prog.global_step.value)}: loss {loss:.4f}, largest weight error {error:.4f}\n"
        f"checkpoints and summaries in {args.dir} (tensorboard --logdir {args.dir})"
    )
    return error


if __name__ == "__main__":
    main()
