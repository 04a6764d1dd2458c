"""What looprt adds to a real PyTorch training step: a small MLP on the CPU.

Usage::

    python benchmarks/bench_torch.py [--quick] [--steps N] [--repeats N] [--json PATH]

One training step (an MLP 784-256-256-10, a minibatch of 64 from a list of
prepared batches, cross entropy, SGD with momentum) is timed three ways, side
by side in one process:

* bare: ``train_step(next(batches))`` in a Python loop;
* raw session: the step made a program by ``looprt.wrap`` (the batches its
  iterable input), run by its raw ``TorchSession``: ``sess.run(step)``;
* MonitoredTrainingSession: the same program under
  ``looprt.MonitoredTrainingSession`` with its default hooks (step counter,
  summaries every 100 steps, a checkpoint every 600 s, in a fresh temporary
  directory, one session for the whole run): ``sess.run(step)``, fetching
  nothing.

PyTorch runs on one thread (steadier figures on a small or busy machine).
Two figures per variant:

* overhead: each repeat times a block of ``--steps`` steps of every variant
  (the order reversed on odd repeats, so a linear drift cancels), the
  garbage collector off inside a block; the overhead is the median, over
  repeats, of a block's per-step time minus that of the bare block next to
  it. On a shared machine single blocks vary by tens of microseconds; the
  median of a few hundred pairs is steady to a few.
* looprt's own time: the same three loops around a step function that does
  nothing (it returns its batch), minus the bare loop: the time looprt
  itself spends per step, which does not depend on what the step computes.

Ratios are over the bare MLP step's median. The target is that
MonitoredTrainingSession adds under 1% to the step (judged on the measured
overhead); the script reports whether it is met and exits 0. Where the
measured overhead is well above looprt's own time, the difference is
looprt's per-step Python running with cold caches after each PyTorch step
(a step that evicts the caches makes the same code several times slower).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import torch

import looprt

TARGET = 0.01
SIZES = (784, 256, 256, 10)
BATCH = 64


def build() -> tuple[Callable[[Any], dict[str, Any]], torch.nn.Module, torch.optim.Optimizer, list[Any]]:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(torch.randn(BATCH, SIZES[0]), torch.randint(0, SIZES[-1], (BATCH,))) for _ in range(16)]

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

    step = looprt.wrap(nothing, state={"w": torch.zeros(1)}, inputs=itertools.cycle(batches), name="empty")
    raw = looprt.ChiefSessionCreator(looprt.Scaffold(program=step.program)).create_session()
    bare_batches = itertools.cycle(batches)
    with monitored_factory(step.program) as monitored:
        loops: dict[str, Callable[[int], None]] = {
            "bare": lambda n: [nothing(next(bare_batches)) for _ in range(n)] and None,
            "raw session": lambda n: [raw.run(step) for _ in range(n)] and None,
            "MonitoredTrainingSession": lambda n: [monitored.run(step) for _ in range(n)] and None,
        }
        return {
            name: statistics.median(timed(loop, steps) for _ in range(repeats))
            for name, loop in loops.items()
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block (default 10)")
    parser.add_argument("--repeats", type=int, default=300, help="timed blocks per variant (default 300)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 steps, 4 repeats")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 5, 4
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    torch.set_num_threads(1)

    train_step, model, opt, batches = build()
    step = looprt.wrap(
        train_step, state={"model": model, "opt": opt}, inputs=itertools.cycle(batches), name="bench"
    )
    bare_batches: Iterator[Any] = itertools.cycle(batches)
    with ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory())

        def monitored_factory(program: Any) -> Any:
            return looprt.MonitoredTrainingSession(
                checkpoint_dir=tempfile.mkdtemp(dir=directory), scaffold=looprt.Scaffold(program=program)
            )

        raw = looprt.ChiefSessionCreator(looprt.Scaffold(program=step.program)).create_session()
        monitored = stack.enter_context(monitored_factory(step.program))

        def bare(steps: int) -> None:
            for _ in range(steps):
                train_step(next(bare_batches))

        def session_loop(run: Callable[[Any], Any]) -> Callable[[int], None]:
            def loop(steps: int) -> None:
                for _ in range(steps):
                    run(step)

            return loop

        variants = {
            "bare": bare,
            "raw session": session_loop(raw.run),
            "MonitoredTrainingSession": session_loop(monitored.run),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for loop in variants.values():  # warm-up
            timed(loop, args.steps)
        # What exists now (torch's modules) is out of the collector's reach: a collection
        # between blocks stays quick.
        gc.collect()
        gc.freeze()
        try:
            for repeat in range(args.repeats):
                order = list(variants.items())
                for name, loop in order if repeat % 2 == 0 else reversed(order):
                    samples[name].append(timed(loop, args.steps))
            own = empty_step_cost(monitored_factory, max(args.steps * 10, 100), max(args.repeats // 20, 3))
        finally:
            gc.unfreeze()

    bare_median = statistics.median(samples["bare"])
    rows = []
    sizes = "-".join(map(str, SIZES))
    print(f"PyTorch MLP {sizes}, batch {BATCH}, 1 thread; {args.repeats} x {args.steps} steps")
    print(
        f"{'variant':<26} {'per-step us':>12} {'overhead us':>12} {'overhead':>9} "
        f"{'looprt us':>10} {'looprt %':>9}"
    )
    for name, values in samples.items():
        median = statistics.median(values)
        # Paired with the bare block next to it in time, so the machine's drift cancels.
        overhead = statistics.median(v - b for v, b in zip(values, samples["bare"]))
        cost = own[name] - own["bare"]
        rows.append(
            {
                "variant": name,
                "per_step_us": median * 1e6,
                "overhead_us": overhead * 1e6,
                "overhead_ratio": overhead / bare_median,
                "looprt_us": cost * 1e6,
                "looprt_ratio": cost / bare_median,
                "samples_us": [v * 1e6 for v in values],
            }
        )
        print(
            f"{name:<26} {median * 1e6:>12.1f} {overhead * 1e6:>12.2f} {overhead / bare_median:>9.2%} "
            f"{cost * 1e6:>10.2f} {cost / bare_median:>9.2%}"
        )
    measured, isolated = rows[-1]["overhead_ratio"], rows[-1]["looprt_ratio"]
    print(
        "overhead: paired with the bare block next to it (noisy on a busy machine); looprt: the same\n"
        "loop around a step that does nothing, minus the bare loop (looprt's own time per step)"
    )
    met = measured < TARGET
    print(
        f"target: MonitoredTrainingSession adds < {TARGET:.0%} to the step: {'met' if met else 'NOT met'} "
        f"(measured {measured:.2%}; looprt's own time, hot, {isolated:.2%})"
    )
    report = {
        "config": {"steps": args.steps, "repeats": args.repeats, "sizes": SIZES, "batch": BATCH},
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
