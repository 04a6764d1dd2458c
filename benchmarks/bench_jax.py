"""A jitted JAX training step bare, under MonitoredTrainingSession, and in an Optax hand loop.

    python benchmarks/bench_jax.py [--quick] [--rounds N] [--block N] [--json PATH]

The step: an MLP 784-256-256-10 trained with Optax's Adam on batches of 64
(host NumPy batches, moved to the device by the jitted call), on the CPU.

Variants, each timed over blocks of ``--block`` steps that end with
``jax.block_until_ready`` on the state, the blocks of all variants
interleaved round after round (so drift of the machine hits them alike):

* ``bare loop``: ``params, opt_state, loss = step(params, opt_state, batch)``;
* ``Optax hand loop``: the bare loop plus what Flax's and Optax's example
  loops do: the step's loss kept on the device every step, and every 100
  steps brought to the host (``jax.device_get``), averaged, logged with the
  steps per second and written as a TensorBoard scalar; a checkpoint
  (``np.savez`` of the host tree, written and renamed) before and after;
* ``MonitoredTrainingSession``: ``sess.run(step)`` with the default hooks
  (step counter every 100 steps, the loss summary every 100 steps,
  checkpoints at the start and the end) on ``looprt.wrap`` of the same
  jitted function.

Overhead is a variant's median step time minus the bare loop's. Targets
(issue 14): looprt's overhead at most 0.25x the hand loop's, and at most 2%
of the step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import looprt
from looprt.summary import SummaryWriter, SummaryWriterCache

SIZES = (784, 256, 256, 10)
BATCH = 64
EVERY = 100  # logging, summaries, step counter


def init(key: Any) -> dict[str, Any]:
    params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(SIZES)):
        key, sub = jax.random.split(key)
        params[f"w{i}"] = jax.random.normal(sub, (fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        params[f"b{i}"] = jnp.zeros(fan_out)
    return params


OPTIMIZER = optax.adam(1e-3)


@jax.jit
def train_step(params: Any, opt_state: Any, batch: Any) -> Any:
    x, y = batch

    def loss_fn(p: Any) -> Any:
        h = x
        for i in range(len(SIZES) - 1):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < len(SIZES) - 2:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = OPTIMIZER.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


def batches(seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pool = [
        (rng.normal(size=(BATCH, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], BATCH))
        for _ in range(16)
    ]
    while True:
        yield from pool


def save_tree(tree: Any, path: str) -> None:
    """The hand loop's checkpoint: the host tree, keyed by path, written then renamed."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})
    os.replace(path + ".tmp", path)


class Bare:
    name = "bare loop"

    def __init__(self, directory: str) -> None:
        self.params = init(jax.random.key(0))
        self.opt_state = OPTIMIZER.init(self.params)
        self.data = batches(0)

    def block(self, steps: int) -> None:
        params, opt_state = self.params, self.opt_state
        for _ in range(steps):
            params, opt_state, _loss = train_step(params, opt_state, next(self.data))
        self.params, self.opt_state = jax.block_until_ready((params, opt_state))

    def close(self) -> None:
        pass


class HandLoop(Bare):
    name = "Optax hand loop"

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.directory = directory
        self.writer = SummaryWriter(os.path.join(directory, "hand"))
        self.step = 0
        self.losses: list[Any] = []
        self.last = time.perf_counter()
        save_tree((self.params, self.opt_state), os.path.join(directory, "hand-0.npz"))

    def block(self, steps: int) -> None:
        params, opt_state = self.params, self.opt_state
        for _ in range(steps):
            params, opt_state, loss = train_step(params, opt_state, next(self.data))
            self.losses.append(loss)
            self.step += 1
            if self.step % EVERY == 0:
                mean = float(np.mean(jax.device_get(self.losses)))
                now = time.perf_counter()
                logging.info("step %d: loss %.4f, %.1f steps/sec", self.step, mean, EVERY / (now - self.last))
                self.writer.add_scalar("loss", mean, self.step)
                self.losses, self.last = [], now
        self.params, self.opt_state = jax.block_until_ready((params, opt_state))

    def close(self) -> None:
        save_tree((self.params, self.opt_state), os.path.join(self.directory, f"hand-{self.step}.npz"))
        self.writer.close()


class Monitored:
    name = "MonitoredTrainingSession"

    def __init__(self, directory: str) -> None:
        params = init(jax.random.key(0))
        self.step = looprt.wrap(
            train_step,
            state={"params": params, "opt_state": OPTIMIZER.init(params)},
            inputs=batches(0),
            updates=("params", "opt_state"),
            outputs=("loss",),
            backend="jax",
        )
        self.step.program.summary("loss", self.step.loss)
        self.sess = looprt.MonitoredTrainingSession(
            checkpoint_dir=os.path.join(directory, "looprt"),
            scaffold=looprt.Scaffold(program=self.step.program),
            save_summaries_steps=EVERY,
            log_step_count_steps=EVERY,
        )
        self.states = self.step.program.states

    def block(self, steps: int) -> None:
        run, step = self.sess.run, self.step
        for _ in range(steps):
            run(step)
        jax.block_until_ready((self.states["params"].value, self.states["opt_state"].value))

    def close(self) -> None:
        self.sess.close()
        SummaryWriterCache.clear()


VARIANTS: tuple[Callable[[str], Any], ...] = (Bare, HandLoop, Monitored)


def measure(rounds: int, block: int, directory: str) -> dict[str, list[float]]:
    """Per-step times (us), one per block, of every variant; blocks interleaved round by round."""
    runners = [variant(directory) for variant in VARIANTS]
    samples: dict[str, list[float]] = {runner.name: [] for runner in runners}
    for runner in runners:
        runner.block(block)  # compiled, caches warm
    for _ in range(rounds):
        for runner in runners:
            start = time.perf_counter()
            runner.block(block)
            samples[runner.name].append((time.perf_counter() - start) / block * 1e6)
    for runner in runners:
        runner.close()
    return samples


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="blocks of each variant (default 30)")
    parser.add_argument("--block", type=int, default=200, help="steps per block (default 200)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 blocks of 20 steps")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    rounds, block = (2, 20) if args.quick else (args.rounds, args.block)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        samples = measure(rounds, block, directory)
    median = {name: statistics.median(values) for name, values in samples.items()}
    bare = median[Bare.name]
    rows = []
    for name, value in median.items():
        rows.append({"variant": name, "per_step_us": value, "overhead_us": value - bare})
    hand_overhead = median[HandLoop.name] - bare
    looprt_overhead = median[Monitored.name] - bare
    ratio_hand = looprt_overhead / hand_overhead if hand_overhead > 0 else float("inf")
    ratio_step = looprt_overhead / bare
    print(f"jax {jax.__version__} on {jax.default_backend()}; MLP {SIZES}, batch {BATCH}; "
          f"{rounds} blocks of {block} steps, medians")
    print(f"{'variant':<28}{'per-step us':>14}{'overhead us':>14}")
    for row in rows:
        print(f"{row['variant']:<28}{row['per_step_us']:>14.1f}{row['overhead_us']:>14.2f}")
    print(f"looprt overhead / hand loop overhead: {ratio_hand:.2f} (target <= 0.25)")
    print(f"looprt overhead / bare step: {ratio_step:.2%} (target <= 2%)")
    report = {
        "config": {"sizes": SIZES, "batch": BATCH, "rounds": rounds, "block": block, "jax": jax.__version__},
        "rows": rows,
        "samples_us": samples,
        "target": {"overhead_vs_hand_loop": ratio_hand, "overhead_vs_step": ratio_step},
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
