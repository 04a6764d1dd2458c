"""Where looprt's time goes right after a real training step, when the step has left the caches cold.

Usage::

    python benchmarks/bench_cold.py [--quick] [--rounds N] [--seed N] [--json PATH]

The step of ``bench_torch.py`` (MLP 784-256-256-10, batch 64, SGD with
momentum, one torch thread) is run single steps interleaved, in a random
order per round, the collector off, as ``bench_torch.py`` runs them:

* ``bare`` and ``bare, again`` (the A/A control);
* ``raw session``: ``sess.run(step)`` on the raw session a
  ``ChiefSessionCreator`` makes (the program model alone);
* ``MonitoredSession, no hooks``: the session layers (recovery,
  coordination, hook calls with no hooks) on top of it;
* ``MonitoredTrainingSession``: the layers and the three default hooks;

and three probes that run the bare step and then, timed with it, only
looprt's own code or a control, so that the step's own variation is the
same as the bare step's:

* ``step + raw run of a no-op step``: the raw session running a step
  function that does nothing;
* ``step + raw run of a no-op step returning a value, not a mapping``:
  the same with a step declared with one output that returns it bare;
* ``step + MonitoredTrainingSession run of a no-op step``: likewise under
  ``MonitoredTrainingSession`` with its default hooks;
* ``step + 40 small functions``: 40 distinct Python functions of a few
  lines each on one object, the control: what Python calls alone cost
  after the step; and ``..., each on an object of its own class``: the
  same calls touching 40 objects of 40 classes.

Each variant's overhead is its median minus the bare median. The same no-op
runs are also timed hot (10,000 runs in a row, no training step between),
which is what looprt's code costs when the caches hold it. The ratio of the
two is what a real step's cold caches make of it; comparing the probes with
the 40-function control tells whether the cost follows the number of Python
calls or the memory a run touches.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import looprt

sys.path.insert(0, str(Path(__file__).parent))
import bench_torch

_SMALL_FUNCTIONS = 40


def _small(o: Any) -> int:
    x: int = o.a + o.b
    if x > 2:
        o.a = 1
    return x


def small_functions(count: int) -> list[Callable[[Any], int]]:
    """``count`` distinct functions of a few lines each (each its own code object and caches)."""
    return [
        types.FunctionType(_small.__code__.replace(co_name=f"f{i}"), globals(), f"f{i}") for i in range(count)
    ]


class _Pair:
    def __init__(self) -> None:
        self.a = 1
        self.b = 2


def distinct_pairs(count: int) -> list[Any]:
    """``count`` objects like ``_Pair()``, each of a class of its own."""
    return [type(f"Pair{i}", (_Pair,), {})() for i in range(count)]


def hot_per_run(run: Callable[[], Any], runs: int) -> float:
    """Microseconds per call of ``run``, called ``runs`` times in a row (after a warm-up)."""
    for _ in range(min(runs, 1000)):
        run()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(runs):
            run()
        return (time.perf_counter_ns() - start) / runs / 1e3
    finally:
        gc.enable()


def measure(rounds: int, hot_runs: int, seed: int) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Per-step nanoseconds of every interleaved variant, and the hot microseconds per run."""
    torch.set_num_threads(1)
    logging.getLogger("looprt").setLevel(logging.WARNING)
    train_step, model, opt, batches = bench_torch.build()
    stream = itertools.cycle(batches)

    def nothing(batch: Any) -> dict[str, Any]:
        return {"loss": 0.0}

    def nothing_bare(batch: Any) -> float:
        return 0.0  # its one output as a value, not a mapping

    def program(fn: Callable[..., Any], name: str) -> Any:
        return looprt.wrap(fn, state={"model": model, "opt": opt}, inputs=itertools.cycle(batches), name=name)

    def creator(step: Any) -> looprt.ChiefSessionCreator:
        return looprt.ChiefSessionCreator(scaffold=looprt.Scaffold(program=step.program))

    def monitored(step: Any, directory: str) -> Any:
        return looprt.MonitoredTrainingSession(
            checkpoint_dir=directory, scaffold=looprt.Scaffold(program=step.program)
        )

    with tempfile.TemporaryDirectory() as work:
        raw_step, plain_step, mts_step = (program(train_step, name) for name in ("raw", "ms", "mts"))
        noop_raw_step, noop_mts_step = program(nothing, "noop_raw"), program(nothing, "noop_mts")
        value_step = looprt.wrap(
            nothing_bare,
            state={"model": model},
            inputs=itertools.cycle(batches),
            outputs=("loss",),
            name="value",
        )
        raw, noop_raw = creator(raw_step).create_session(), creator(noop_raw_step).create_session()
        value_raw = creator(value_step).create_session()
        plain = looprt.MonitoredSession(creator(plain_step))
        mts, noop_mts = monitored(mts_step, f"{work}/mts"), monitored(noop_mts_step, f"{work}/noop")
        functions, pair = small_functions(_SMALL_FUNCTIONS), _Pair()
        pairs = distinct_pairs(_SMALL_FUNCTIONS)

        def bare() -> None:
            train_step(next(stream))

        def bare_again() -> None:
            train_step(next(stream))

        def step_then_raw_noop() -> None:
            train_step(next(stream))
            noop_raw.run(noop_raw_step)

        def step_then_raw_value() -> None:
            train_step(next(stream))
            value_raw.run(value_step)

        def step_then_mts_noop() -> None:
            train_step(next(stream))
            noop_mts.run(noop_mts_step)

        def call_functions() -> None:
            for function in functions:
                function(pair)

        def step_then_functions() -> None:
            train_step(next(stream))
            call_functions()

        def step_then_functions_on_classes() -> None:
            train_step(next(stream))
            for function, each in zip(functions, pairs, strict=True):
                function(each)

        variants: dict[str, Callable[[], Any]] = {
            "bare": bare,
            "bare, again (A/A control)": bare_again,
            "raw session": lambda: raw.run(raw_step),
            "MonitoredSession, no hooks": lambda: plain.run(plain_step),
            "MonitoredTrainingSession": lambda: mts.run(mts_step),
            _COLD["raw"]: step_then_raw_noop,
            _COLD["value"]: step_then_raw_value,
            _COLD["mts"]: step_then_mts_noop,
            _COLD["functions"]: step_then_functions,
            _COLD["classes"]: step_then_functions_on_classes,
        }
        with plain, mts, noop_mts:
            samples = bench_torch.interleaved(variants, rounds, seed)
            hot = {
                _HOT["raw"]: hot_per_run(lambda: noop_raw.run(noop_raw_step), hot_runs),
                _HOT["mts"]: hot_per_run(lambda: noop_mts.run(noop_mts_step), hot_runs),
                _HOT["functions"]: hot_per_run(call_functions, hot_runs),
            }
        for session in (raw, noop_raw, value_raw):
            session.close()
    return samples, hot


_COLD = {
    "raw": "step + raw run of a no-op step",
    "value": "step + raw run of a no-op step returning a value, not a mapping",
    "mts": "step + MonitoredTrainingSession run of a no-op step",
    "functions": f"step + {_SMALL_FUNCTIONS} small functions",
    "classes": f"step + {_SMALL_FUNCTIONS} small functions, each on an object of its own class",
}
_HOT = {
    "raw": "raw run of a no-op step",
    "mts": "MonitoredTrainingSession run of a no-op step",
    "functions": f"{_SMALL_FUNCTIONS} small functions",
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000, help="steps of each variant (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random order (default 0)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 rounds, 200 hot runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    rounds, hot_runs = (30, 200) if args.quick else (args.rounds, 10_000)
    samples, hot = measure(rounds, hot_runs, args.seed)
    bare_median = statistics.median(samples["bare"])
    print(f"{rounds} rounds, seed {args.seed}, medians; the step alone {bare_median / 1e3:.1f} us")
    print(f"{'variant':<72} {'overhead us':>11}")
    overheads: dict[str, float] = {}
    for name, values in samples.items():
        if name != "bare":
            overheads[name] = (statistics.median(values) - bare_median) / 1e3
            print(f"{name:<72} {overheads[name]:11.2f}")
    print(f"\nhot, {hot_runs} runs in a row, us per run; after a step / hot")
    factors: dict[str, float | None] = {}
    for key, name in _HOT.items():
        cold = overheads[_COLD[key]]
        factors[name] = cold / hot[name] if hot[name] > 0 else None
        factor = "-" if factors[name] is None else f"{factors[name]:.1f}x"
        print(f"{name:<44} {hot[name]:8.2f}   {factor:>8}")
    report = {
        "rounds": rounds,
        "seed": args.seed,
        "bare_us": bare_median / 1e3,
        "overhead_us": overheads,
        "hot_us": hot,
        "cold_over_hot": factors,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
