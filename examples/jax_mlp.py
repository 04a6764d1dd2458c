"""An MLP classifier in JAX and Optax, trained under looprt: the JAX backend end to end.

    python examples/jax_mlp.py --steps 600 --dir jax-mlp-run

The data are 10 classes of Gaussian clusters in 32 dimensions (4,096
examples, 512 held out). Within 200 steps of batches of 64 the test accuracy
is above 0.95. The training step is an ordinary jitted function that returns
new parameters, optimizer state and PRNG key; ``looprt.wrap`` makes it a
program whose checkpoints hold all three (and where the batch list stands),
so running the script again with the same ``--dir`` resumes exactly where it
stopped and trains ``--steps`` more. The loop fetches nothing, so it never
waits for the device; the logging hook fetches the loss every few steps.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import looprt

CLASSES, FEATURES, HIDDEN, BATCH = 10, 32, 128, 64
TARGET_ACCURACY = 0.95  # within 200 steps


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test sets: Gaussian clusters around random class centers."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(CLASSES, FEATURES))
    labels = rng.integers(0, CLASSES, 4096)
    features = (centers[labels] + 1.2 * rng.normal(size=(4096, FEATURES))).astype(np.float32)
    return features[:3584], labels[:3584], features[3584:], labels[3584:]


class Batches:
    """Shuffled minibatches, epoch after epoch; the same order every time it is iterated."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        self.x, self.y, self.seed = x, y, seed

    def __iter__(self) -> Any:
        for epoch in itertools.count():
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.y))
            for start in range(0, len(order) - BATCH + 1, BATCH):
                index = order[start : start + BATCH]
                yield self.x[index], self.y[index]


def init_params(key: Any) -> dict[str, Any]:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (FEATURES, HIDDEN)) * np.sqrt(2.0 / FEATURES),
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) * np.sqrt(1.0 / HIDDEN),
        "b2": jnp.zeros(CLASSES),
    }


def logits_of(params: dict[str, Any], x: Any, key: Any = None) -> Any:
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    if key is not None:  # dropout while training: the PRNG key in state makes it resumable
        hidden = jnp.where(jax.random.bernoulli(key, 0.9, hidden.shape), hidden / 0.9, 0.0)
    return hidden @ params["w2"] + params["b2"]


def main(argv: list[str] | None = None) -> float:
    """Train ``--steps`` more steps in ``--dir``; return the test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="steps to train in this run")
    parser.add_argument("--dir", default="jax-mlp-run", help="checkpoint and summary folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    x_train, y_train, x_test, y_test = make_data(args.seed)
    key, init_key = jax.random.split(jax.random.key(args.seed))
    params = init_params(init_key)
    optimizer = optax.sgd(0.05, momentum=0.9)

    @jax.jit
    def train_step(params: Any, opt_state: Any, key: Any, batch: Any) -> Any:
        x, y = batch
        key, dropout = jax.random.split(key)

        def loss_fn(p: Any) -> Any:
            logits = logits_of(p, x, dropout)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        accuracy = jnp.mean(logits.argmax(1) == y)
        return optax.apply_updates(params, updates), opt_state, key, loss, accuracy

    # One line makes the step a program: its state is checkpointed, its batches pulled per run.
    step = looprt.wrap(
        train_step,
        state={"params": params, "opt_state": optimizer.init(params), "key": key},
        inputs=Batches(x_train, y_train, args.seed),
        updates=("params", "opt_state", "key"),
        outputs=("loss", "accuracy"),
        backend="jax",
    )
    step.program.summary("loss", step.loss)
    step.program.summary("accuracy", step.accuracy)
    every = max(args.steps // 5, 1)
    hooks = [
        looprt.StopAtStepHook(num_steps=args.steps),
        # Fetches the loss every `every` steps only; looprt.NanTensorHook(step.loss) would
        # check it every step, and so wait for every step.
        looprt.LoggingTensorHook({"step": step.program.global_step, "loss": step.loss}, every_n_iter=every),
    ]
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=args.dir,
        scaffold=looprt.Scaffold(program=step.program),
        hooks=hooks,
        save_checkpoint_steps=every,
        save_summaries_steps=max(args.steps // 50, 1),
    ) as sess:
        while not sess.should_stop():
            sess.run(step)

    trained = step.program.states["params"].value
    accuracy = float(jnp.mean(logits_of(trained, x_test).argmax(1) == y_test))
    print(
        f"global step {int(step.program.global_step.value)}: test accuracy {accuracy:.3f} "
        f"(target {TARGET_ACCURACY})\ncheckpoints and summaries in {args.dir} "
        f"(tensorboard --logdir {args.dir})"
    )
    return accuracy


if __name__ == "__main__":
    main()
