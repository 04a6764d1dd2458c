"""What looprt adds to a real PyTorch training step: a small MLP on the CPU.

Usage::

    python benchmarks/bench_torch.py [--quick] [--rounds N] [--seed N] [--batch N] [--fused] [--json PATH]

One training step (an MLP 784-256-256-10, a minibatch of 64 by default from
a list of prepared batches, cross entropy, SGD with momentum) is run five
ways (six with ``--fused``), side by side in one process:

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
* with ``--fused``, an experiment: a MonitoredTrainingSession's idle run
  (``looprt.hooks.idle``) done by one function that inlines every layer (the
  session layers, the raw session's runner, the input's pull, the batch
  check). It reads looprt's private state and keeps none of the error
  handling: not a way to run, a measure of what the layers' calls cost after
  a training step.

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
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import torch

import looprt

TARGET = 0.01
SIZES = (784, 256, 256, 10)
BATCH = 64


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


def fused_idle_run(monitored: Any, step: Any) -> Callable[[], Any]:
    """``monitored.run(step)`` with an idle run's work inlined into one function (an experiment).

    Reads looprt's private state (the hooked session's idle span, the input's
    iterator and lock) and has none of the layers' error handling.
    """
    hooked = monitored._coordinated_creator.hooked
    ((_, handle),) = step.bindings
    fn, lock, now, never = step.fn, handle._lock, time.time, float("inf")

    def run() -> Any:
        span = hooked._idle
        if step is span.fetch and span.state.value is span.counter:
            global_step = span.view[()]
            if span.last < global_step < span.step and (span.until == never or now() < span.until):
                span.last = span.skipped = global_step
                with lock:
                    batch = next(handle._iterator)
                    handle.position += 1
                if type(batch) is tuple:
                    for item in batch:
                        if type(item) is not torch.Tensor:
                            raise TypeError(item)
                fn(batch)
                span.view[()] += 1
                return None
        return monitored.run(step)

    return run


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000, help="steps of each variant (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random orders (default 0)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 rounds")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"minibatch size (default {BATCH})")
    parser.add_argument("--fused", action="store_true", help="add the experiment that inlines an idle run")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--profile", action="store_true", help="only profile 1000 MonitoredTrainingSession steps (cProfile)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 30
    if args.rounds < 1 or args.batch < 1:
        parser.error("--rounds and --batch must be at least 1")
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
        if args.fused:
            fused_step = program()
            fused = stack.enter_context(monitored_factory(fused_step.program))
            variants["fused idle run (experiment)"] = fused_idle_run(fused, fused_step)
        for _ in range(20):  # warm-up
            for call in variants.values():
                call()
        samples = interleaved(variants, args.rounds, args.seed)
        own = empty_step_cost(monitored_factory, 1000, 5 if args.quick else 15)

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
    report = {
        "config": {"rounds": args.rounds, "seed": args.seed, "sizes": SIZES, "batch": args.batch},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
        "rows": rows,
        "target": {"ratio": TARGET, "met": met, "measured": measured, "looprt_own": isolated},
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
