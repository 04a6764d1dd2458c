"""What looprt adds to a real PyTorch training step: a small MLP on the CPU.

Usage::

    python benchmarks/bench_torch.py [--quick] [--rounds N] [--seed N] [--batch N] [--json PATH]
                                     [--block-steps N] [--block-rounds N] [--no-peers]

One training step (an MLP 784-256-256-10, a minibatch of 64 by default from
a list of prepared batches, cross entropy, SGD with momentum) is run five
ways, side by side in one process:

* bare: ``train_step(next(batches))``;
* bare, again: the same code a second time, an A/A control: its "overhead"
  is what the measurement itself cannot tell apart from zero;
* floor: the least any loop runtime written in Python does per step, in one
  function (take the next batch under a lock, check it needs no
  conversion, call the step, count it): a reference for what the step's
  cold caches make of even that much Python;
* raw session: the step made a program by ``looprt.wrap`` (the batches its
  iterable input), run by its raw ``TorchSession``: ``sess.run(step)``;
* MonitoredTrainingSession: the same program under
  ``looprt.MonitoredTrainingSession`` with its default hooks (step counter,
  summaries every 100 steps, a checkpoint every 600 s, in a fresh temporary
  directory, one session for the whole run): ``sess.run(step)``;
``--batch`` changes the minibatch (default 64), and with it the step time.

PyTorch runs on one thread (steadier figures on a small or busy machine).
Each round runs one step of every variant, in a fresh random order, each
step timed on its own, the garbage collector off. Interleaving single steps
puts every variant in the same conditions (a step always follows another
training step, with caches as a training loop leaves them), and the random
order cancels the effect of which step came before. A variant's overhead is
the median of its steps minus the bare steps' median, with a 90% bootstrap
interval; ratios are over the bare median. The target is that
MonitoredTrainingSession adds under 1% to the step (judged on that median
overhead); the script reports whether it is met and exits 0.

A second table compares peers that own their loops, so every variant in it
runs in blocks of ``--block-steps`` steps (default 100), one block of each
per round in a random order, ``--block-rounds`` rounds (default 15), the
collector off; per-step = median block time / steps; overhead = per-step -
the bare loop's. Variants: the bare loop, an A/A copy of it,
``MonitoredTrainingSession`` (the session above), Ignite's bare ``Engine``
running the same step, Ignite with MonitoredTrainingSession's default work
(iterations per second logged every 100 iterations; ``ModelCheckpoint`` of
the model and optimizer every 600 s, checked every iteration, the first one
before timing; no summaries), and PyTorch Lightning's minimal ``Trainer``
(automatic optimization of the same model and optimizer; no logger,
checkpointing, progress bar or model summary) fitting N and 2N batches on a
new ``Trainer`` per block: the fit rows include ``fit``'s start-up, the
marginal row (fit over 2N - fit over N, per step) does not. Each Ignite
block is one ``engine.run`` (its start and end events included). The last
column is MonitoredTrainingSession's overhead over each peer's. A peer whose
package is missing is skipped and named; ``--no-peers`` skips the table.

Also reported, looprt's own time: the same loops around a step function
that does nothing, minus the bare loop, timed hot: what looprt's code costs
when nothing evicts it from the caches. After a real training step the same
code runs several times slower (benchmarks/README.md explains why), which is
the difference between the two figures.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import torch

import looprt

TARGET = 0.01
SIZES = (784, 256, 256, 10)
BATCH = 64
EVERY_N_STEPS = 100  # MonitoredTrainingSession's default step counter and summaries
CHECKPOINT_SECS = 600  # ... and its checkpoints
LIGHTNING_FIT = "Lightning Trainer.fit over N (start-up incl.)"
LIGHTNING_FIT_2N = "Lightning Trainer.fit over 2N (start-up incl.)"
LIGHTNING_MARGINAL = "Lightning, marginal per step"
PEER_REFERENCES = ("Ignite Engine (bare)", "Ignite Engine + handlers", LIGHTNING_FIT, LIGHTNING_MARGINAL)


def build(
    batch: int = BATCH,
) -> tuple[Callable[[Any], dict[str, Any]], torch.nn.Module, torch.optim.Optimizer, list[Any]]:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(torch.randn(batch, SIZES[0]), torch.randint(0, SIZES[-1], (batch,))) for _ in range(16)]

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    return train_step, model, opt, batches


def timed(block: Callable[[int], None], steps: int) -> float:
    """Per-step seconds of ``block(steps)``, the garbage collector off."""
    gc.disable()
    try:
        start = time.perf_counter()
        block(steps)
        return (time.perf_counter() - start) / steps
    finally:
        gc.enable()


def empty_step_cost(monitored_factory: Callable[[Any], Any], steps: int, repeats: int) -> dict[str, float]:
    """Per-step seconds that looprt itself spends: the same loops around a step that does nothing."""
    batches = build()[3]

    def nothing(batch: Any) -> dict[str, Any]:
        return {"loss": batch[0]}

    def program() -> Any:
        state = {"w": torch.zeros(1)}
        return looprt.wrap(nothing, state=state, inputs=itertools.cycle(batches), name="empty")

    step, monitored_step = program(), program()
    raw = looprt.ChiefSessionCreator(looprt.Scaffold(program=step.program)).create_session()
    bare_batches = itertools.cycle(batches)
    with monitored_factory(monitored_step.program) as monitored:
        loops: dict[str, Callable[[int], None]] = {
            "bare": lambda n: [nothing(next(bare_batches)) for _ in range(n)] and None,
            "raw session": lambda n: [raw.run(step) for _ in range(n)] and None,
            "MonitoredTrainingSession": lambda n: [monitored.run(monitored_step) for _ in range(n)] and None,
        }
        return {
            name: statistics.median(timed(loop, steps) for _ in range(repeats))
            for name, loop in loops.items()
        }


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int, seed: int) -> dict[str, list[int]]:
    """Nanoseconds of each step of each variant: one step of every variant per round, shuffled."""
    names = list(variants)
    calls = [variants[name] for name in names]
    samples: dict[str, list[int]] = {name: [] for name in names}
    lists = [samples[name] for name in names]
    order = list(range(len(names)))
    rng = random.Random(seed)
    clock = time.perf_counter_ns
    gc.collect()
    gc.freeze()  # what exists now (torch's modules) is out of the collector's reach
    gc.disable()
    try:
        for _ in range(rounds):
            rng.shuffle(order)
            for i in order:
                start = clock()
                calls[i]()
                lists[i].append(clock() - start)
    finally:
        gc.enable()
        gc.unfreeze()
    return samples


def bootstrap_difference(a: list[int], b: list[int], seed: int, resamples: int = 200) -> tuple[float, float]:
    """A 90% bootstrap interval of ``median(a) - median(b)``."""
    rng = random.Random(seed)
    differences = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
        for _ in range(resamples)
    )
    return differences[resamples // 20], differences[-(resamples // 20) - 1]


def profile(call: Callable[[], Any], steps: int) -> dict[str, Any]:
    """Profile ``steps`` calls (after 100 unprofiled ones); print the Python calls, most frequent first."""
    import cProfile
    import pstats

    for _ in range(100):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("ncalls").print_stats(r"looprt|bench_torch|<string>", 15)
    return {"profiled_steps": steps}


# --- peers: Ignite and Lightning own their loops, so every variant here runs in blocks ------------


def _ignite_variants(
    train_step: Callable[[Any], Any], model: Any, opt: Any, stream: Iterator[Any], directory: str
) -> dict[str, Callable[[int], float]]:
    """Ignite's bare ``Engine`` and one with MonitoredTrainingSession's work; {} without Ignite."""
    try:
        from ignite.engine import Engine, Events
        from ignite.handlers import ModelCheckpoint
    except ImportError:
        return {}

    def engine_block(engine: Any) -> Callable[[int], float]:
        data = _endless(stream)

        def block(steps: int) -> float:
            start = time.perf_counter()
            engine.run(data, max_epochs=1, epoch_length=steps)
            return time.perf_counter() - start

        return block

    bare = Engine(lambda engine, batch: train_step(batch))
    handled = Engine(lambda engine, batch: train_step(batch))
    handled.add_event_handler(Events.ITERATION_COMPLETED(every=EVERY_N_STEPS), StepRateLogger())
    # MonitoredTrainingSession's default: a checkpoint every 600 s, checked on every step.
    saver = ModelCheckpoint(directory, "ignite", n_saved=1, require_empty=False, global_step_transform=None)
    to_save = {"model": model, "opt": opt}
    saver(handled, to_save)  # the first one before timing, as a session's at its start
    every_600s = Events.ITERATION_COMPLETED(event_filter=SecondsFilter(CHECKPOINT_SECS))
    handled.add_event_handler(every_600s, saver, to_save)
    return {"Ignite Engine (bare)": engine_block(bare), "Ignite Engine + handlers": engine_block(handled)}


def _lightning_variants(
    model: Any, opt: Any, stream: Iterator[Any], directory: str
) -> dict[str, Callable[[int], float]]:
    """Lightning's minimal ``Trainer.fit`` over ``steps`` batches (and twice that); {} without it."""
    try:
        import lightning as L
    except ImportError:
        return {}
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\..*")

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return opt

    module = MLP()

    def fit(scale: int) -> Callable[[int], float]:
        def block(steps: int) -> float:
            trainer = L.Trainer(
                max_steps=steps * scale, accelerator="cpu", devices=1, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=directory,
            )
            data = (next(stream) for _ in range(steps * scale + 2))  # +2: Lightning fetches ahead
            start = time.perf_counter()
            trainer.fit(module, train_dataloaders=data)
            elapsed = time.perf_counter() - start
            if trainer.global_step != steps * scale:
                raise AssertionError(f"Lightning ran {trainer.global_step} of {steps * scale} steps")
            return elapsed / scale

        return block

    return {LIGHTNING_FIT: fit(1), LIGHTNING_FIT_2N: fit(2)}


def loop(call: Callable[[], Any]) -> Callable[[int], float]:
    """A block: ``steps`` calls of ``call``; returns the seconds they took."""

    def block(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            call()
        return time.perf_counter() - start

    return block


def _endless(stream: Iterator[Any]) -> Iterator[Any]:
    while True:
        yield next(stream)


class StepRateLogger:
    """Ignite's stand-in for StepCounterHook: logs iterations per second (INFO), when called."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("bench_torch.ignite")
        self.last: tuple[float, int] | None = None

    def __call__(self, engine: Any) -> None:
        now, iteration = time.time(), engine.state.iteration
        if self.last is not None and now > self.last[0]:
            self.logger.info("iterations/sec: %g", (iteration - self.last[1]) / (now - self.last[0]))
        self.last = (now, iteration)


class SecondsFilter:
    """An Ignite event filter that lets an event through once every ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = time.time()

    def __call__(self, engine: Any, event: int) -> bool:
        now = time.time()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def peer_blocks(
    variants: dict[str, Callable[[int], float]], steps: int, rounds: int, seed: int
) -> dict[str, list[float]]:
    """Per-step seconds of each variant, one block of ``steps`` of every variant per round, shuffled."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(seed)
    for name in names:  # warm-up
        variants[name](steps)
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            rng.shuffle(names)
            for name in names:
                samples[name].append(variants[name](steps) / steps)
    finally:
        gc.enable()
    return samples


def peer_table(samples: dict[str, list[float]], steps: int) -> list[dict[str, Any]]:
    """Rows: per-step median, overhead over the bare loop, looprt's overhead as a ratio to each peer's."""
    medians = {name: statistics.median(values) for name, values in samples.items()}
    if LIGHTNING_FIT_2N in medians:
        # Twice the steps minus the steps: Lightning's per-step cost without fit's fixed start-up.
        medians[LIGHTNING_MARGINAL] = 2 * medians[LIGHTNING_FIT_2N] - medians[LIGHTNING_FIT]
    bare = medians["bare loop"]
    looprt_overhead = medians["MonitoredTrainingSession loop"] - bare
    rows = []
    for name, median in medians.items():
        overhead = median - bare
        rows.append({
            "variant": name,
            "per_step_us": median * 1e6,
            "overhead_us": None if name == "bare loop" else overhead * 1e6,
            "overhead_ratio": overhead / bare,
            "looprt_ratio": looprt_overhead / overhead if name in PEER_REFERENCES and overhead > 0 else None,
        })
    return rows


def print_peer_table(rows: list[dict[str, Any]], steps: int, rounds: int) -> None:
    print(
        f"\nBlocks of {steps} steps, one block of every variant per round in random order, {rounds} rounds; "
        "medians per step"
    )
    print(f"{'variant':<44} {'per-step us':>12} {'overhead us':>12} {'overhead':>9} {'looprt/peer':>12}")
    for row in rows:
        overhead = "-" if row["overhead_us"] is None else f"{row['overhead_us']:.2f}"
        ratio = "-" if row["looprt_ratio"] is None else f"{row['looprt_ratio']:.3f}"
        print(
            f"{row['variant']:<44} {row['per_step_us']:>12.1f} {overhead:>12} {row['overhead_ratio']:>9.2%} "
            f"{ratio:>12}"
        )
    print(
        "looprt/peer: MonitoredTrainingSession's overhead (this table) over the peer's. Ignite + handlers\n"
        "does MonitoredTrainingSession's default work (a step-rate log every 100 steps, a checkpoint every\n"
        "600 s checked every step; no summaries); each block is one engine.run. Lightning: a minimal\n"
        "Trainer (no logger, checkpointing, progress bar or model summary); a block is one fit on a new\n"
        "Trainer, whose start-up the fit rows include and the marginal row leaves out."
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000, help="steps of each variant (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random orders (default 0)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 rounds")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"minibatch size (default {BATCH})")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--block-steps", type=int, default=100, help="steps per block in the peers' table")
    parser.add_argument("--block-rounds", type=int, default=15, help="blocks of each variant (peers' table)")
    parser.add_argument("--no-peers", action="store_true", help="skip the Ignite and Lightning table")
    parser.add_argument(
        "--profile", action="store_true", help="only profile 1000 MonitoredTrainingSession steps (cProfile)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.block_steps, args.block_rounds = 30, 10, 2
    if min(args.rounds, args.batch, args.block_steps, args.block_rounds) < 1:
        parser.error("--rounds, --batch, --block-steps and --block-rounds must be at least 1")
    torch.set_num_threads(1)

    train_step, model, opt, batches = build(args.batch)

    def program() -> Any:
        # One program per session, over the same model and optimizer: each session counts
        # its own global step, so the hooks trigger every N of its own steps, as in a real loop.
        return looprt.wrap(train_step, state={"model": model, "opt": opt}, inputs=stream, name="bench")

    # Every variant takes its batches from one stream: in a random order of variants, each gets
    # batches at random positions, so no variant is favoured by which data it touches.
    stream: Iterator[Any] = itertools.cycle(batches)
    step, monitored_step = program(), program()
    with ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory())

        def monitored_factory(program: Any) -> Any:
            return looprt.MonitoredTrainingSession(
                checkpoint_dir=tempfile.mkdtemp(dir=directory), scaffold=looprt.Scaffold(program=program)
            )

        raw = looprt.ChiefSessionCreator(looprt.Scaffold(program=step.program)).create_session()
        monitored = stack.enter_context(monitored_factory(monitored_step.program))
        if args.profile:
            return profile(lambda: monitored.run(monitored_step), 1000)

        def bare() -> None:
            train_step(next(stream))

        def bare_again() -> None:
            train_step(next(stream))

        floor_lock = threading.Lock()
        floor_count = [0]

        def floor() -> None:
            # The least a loop runtime does per step, in one function: take the next batch
            # under a lock, check it needs no conversion, call the step, count it.
            with floor_lock:
                batch = next(stream)
            if type(batch) is tuple:
                for item in batch:
                    if type(item) is not torch.Tensor:
                        raise TypeError(item)
            train_step(batch=batch)
            floor_count[0] += 1

        variants: dict[str, Callable[[], Any]] = {
            "bare": bare,
            "bare, again (A/A control)": bare_again,
            "floor: one Python function": floor,
            "raw session": lambda: raw.run(step),
            "MonitoredTrainingSession": lambda: monitored.run(monitored_step),
        }
        for _ in range(20):  # warm-up
            for call in variants.values():
                call()
        samples = interleaved(variants, args.rounds, args.seed)
        own = empty_step_cost(monitored_factory, 1000, 5 if args.quick else 15)
        peer_samples = None
        if not args.no_peers:
            peer_samples = peer_blocks(
                {
                    "bare loop": loop(bare),
                    "bare loop, again (A/A control)": loop(bare_again),
                    "MonitoredTrainingSession loop": loop(lambda: monitored.run(monitored_step)),
                    **_ignite_variants(train_step, model, opt, stream, tempfile.mkdtemp(dir=directory)),
                    **_lightning_variants(model, opt, stream, tempfile.mkdtemp(dir=directory)),
                },
                args.block_steps,
                args.block_rounds,
                args.seed,
            )

    bare_median = statistics.median(samples["bare"])
    rows = []
    sizes = "-".join(map(str, SIZES))
    print(f"PyTorch MLP {sizes}, batch {args.batch}, 1 thread; {args.rounds} interleaved steps per variant")
    print(
        f"{'variant':<27} {'per-step us':>12} {'overhead us':>12} {'90% interval us':>17} "
        f"{'overhead':>9} {'looprt us':>10} {'looprt %':>9}"
    )
    for name, values in samples.items():
        median = statistics.median(values)
        overhead = median - bare_median
        low, high = bootstrap_difference(values, samples["bare"], args.seed)
        row: dict[str, Any] = {
            "variant": name,
            "per_step_us": median / 1e3,
            "overhead_us": overhead / 1e3,
            "overhead_interval_us": [low / 1e3, high / 1e3],
            "overhead_ratio": overhead / bare_median,
        }
        cost = own.get(name)
        if cost is not None:
            row["looprt_us"] = (cost - own["bare"]) * 1e6
            row["looprt_ratio"] = (cost - own["bare"]) * 1e9 / bare_median
        rows.append(row)
        looprt_us = f"{row['looprt_us']:>10.2f}" if "looprt_us" in row else f"{'-':>10}"
        looprt_pct = f"{row['looprt_ratio']:>9.2%}" if "looprt_ratio" in row else f"{'-':>9}"
        interval = f"[{low / 1e3:.1f}, {high / 1e3:.1f}]"
        print(
            f"{name:<27} {median / 1e3:>12.1f} {overhead / 1e3:>12.2f} {interval:>17} "
            f"{overhead / bare_median:>9.2%} {looprt_us} {looprt_pct}"
        )
    monitored_row = next(row for row in rows if row["variant"] == "MonitoredTrainingSession")
    measured, isolated = monitored_row["overhead_ratio"], monitored_row["looprt_ratio"]
    print(
        "overhead: median step minus the bare median, steps interleaved in random order (the A/A\n"
        "control shows the resolution); looprt: a step that does nothing, in a hot loop, minus bare"
    )
    met = measured < TARGET
    print(
        f"target: MonitoredTrainingSession adds < {TARGET:.0%} to the step: {'met' if met else 'NOT met'} "
        f"(measured {measured:.2%}; looprt's own time, hot, {isolated:.2%})"
    )
    peers = None
    if peer_samples is not None:
        peer_rows = peer_table(peer_samples, args.block_steps)
        print_peer_table(peer_rows, args.block_steps, args.block_rounds)
        missing = [
            name for name, present in (
                ("pytorch-ignite", any(n.startswith("Ignite") for n in peer_samples)),
                ("lightning", LIGHTNING_FIT in peer_samples),
            ) if not present
        ]
        if missing:
            print(f"not installed, skipped: {', '.join(missing)}")
        peers = {
            "block_steps": args.block_steps,
            "rounds": args.block_rounds,
            "rows": peer_rows,
            "samples_us": {name: [v * 1e6 for v in values] for name, values in peer_samples.items()},
        }
    report = {
        "config": {"rounds": args.rounds, "seed": args.seed, "sizes": SIZES, "batch": args.batch},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
        "rows": rows,
        "target": {"ratio": TARGET, "met": met, "measured": measured, "looprt_own": isolated},
        "peers": peers,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
