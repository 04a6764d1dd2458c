"""Memory over a long run: 10,000 steps, 20 hooks, a checkpoint every 1,000 steps.

Usage::

    python benchmarks/bench_memory.py [--steps 10000] [--every 1000] [--quick]
                                      [--json PATH] [--no-tracemalloc]

A NumPy softmax-regression program (minibatch 64x256 -> 10, synthetic data)
is trained under ``looprt.MonitoredTrainingSession`` with checkpoints every
``--every`` steps and summaries every 100 steps into a temporary directory,
and 20 hooks in all: the 3 default ones (step counter, summary saver,
checkpoint saver), ``StopAtStepHook(last_step=steps)``, ``NanTensorHook`` on
the loss, ``LoggingTensorHook`` every 1,000 runs, and 14 hooks that fetch the
global step every 100th run. The loop runs until the stop hook ends it.

Every ``--every`` steps (just after that step's checkpoint) it samples:

* peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and current RSS
  (``/proc/self/statm``, where there is one);
* Python's traced memory (``tracemalloc``: current and peak), the number of
  allocated memory blocks (``sys.getallocatedblocks``) and of objects the
  collector tracks;
* the checkpoints on disk (the saver keeps the newest 5).

Memory is flat when, from the first sample (1k steps) to the last (10k),
traced Python memory grows by less than ``FLAT_TRACED_BYTES`` and peak RSS by
less than ``FLAT_RSS_MIB`` (allocator noise). ``--no-tracemalloc`` runs
without tracing (faster; RSS and blocks only). The script never fails on the
figures; it exits 0 after printing them.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_overhead import write_json

import looprt

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
HOOKS = 20
FETCH_EVERY = 100
LOG_EVERY = 1000
FLAT_TRACED_BYTES = 256 * 1024
FLAT_RSS_MIB = 8.0


class GlobalStepEveryHook(looprt.SessionRunHook):
    """Fetches the global step on every ``every``-th run and keeps the last value."""

    def __init__(self, every: int = FETCH_EVERY) -> None:
        self.every = every
        self.runs = 0
        self.last: Any = None
        self._global_step: Any = None

    def after_create_session(self, session: Any, coord: Any) -> None:
        self._global_step = session.graph.global_step

    def before_run(self, run_context: Any) -> Any:
        runs = self.runs
        self.runs = runs + 1
        if runs % self.every == 0:
            return looprt.SessionRunArgs(self._global_step)
        return None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_values.results is not None:
            self.last = run_values.results


def softmax_program() -> tuple[looprt.Program, looprt.Step]:
    """The overhead benchmark's softmax-regression program, smaller (256 features)."""
    from bench_overhead import softmax_program as overhead_program

    prog, step, _ = overhead_program(features=256)
    return prog, step


def rss_mib() -> float | None:
    """Current resident set size in MiB (Linux), else None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def sample(step: int, checkpoint_dir: str, traced: bool) -> dict[str, Any]:
    gc.collect()
    current, peak = tracemalloc.get_traced_memory() if traced else (None, None)
    checkpoints = looprt.latest_checkpoint(checkpoint_dir)
    return {
        "step": step,
        "peak_rss_mib": peak_rss_mib(),
        "rss_mib": rss_mib(),
        "traced_current_bytes": current,
        "traced_peak_bytes": peak,
        "allocated_blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()),
        "checkpoint_folders": sum(1 for p in Path(checkpoint_dir).iterdir() if p.is_dir()),
        "latest_checkpoint": None if checkpoints is None else os.path.basename(checkpoints),
    }


def run(steps: int, every: int, traced: bool) -> dict[str, Any]:
    """Train ``steps`` steps with 20 hooks, sampling memory every ``every`` steps."""
    prog, step = softmax_program()
    extra = [
        looprt.StopAtStepHook(last_step=steps),
        looprt.NanTensorHook(step.loss),
        looprt.LoggingTensorHook({"loss": step.loss}, every_n_iter=LOG_EVERY),
    ]
    fetchers = [GlobalStepEveryHook() for _ in range(HOOKS - 3 - len(extra))]
    samples: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as checkpoint_dir:
        if traced:
            tracemalloc.start()
        try:
            with looprt.MonitoredTrainingSession(
                checkpoint_dir=checkpoint_dir,
                scaffold=looprt.Scaffold(program=prog),
                hooks=[*extra, *fetchers],
                save_checkpoint_steps=every,
                save_summaries_steps=FETCH_EVERY,
                log_step_count_steps=FETCH_EVERY,
            ) as sess:
                # Creating the session opened the summary writer and the checkpoint
                # directory: the baseline the run is measured against.
                start = sample(0, checkpoint_dir, traced)
                loss = step.loss
                done = 0
                while not sess.should_stop():
                    sess.run(loss)
                    done += 1
                    if done % every == 0:
                        samples.append(sample(done, checkpoint_dir, traced))
            final = sample(done, checkpoint_dir, traced)
        finally:
            if traced:
                tracemalloc.stop()
    elapsed = time.perf_counter() - started
    if fetchers[0].last is None or done != steps:
        raise AssertionError(f"ran {done} of {steps} steps; hooks fetched {fetchers[0].last!r}")
    first, last = samples[0], samples[-1]
    growth = {
        "peak_rss_mib": last["peak_rss_mib"] - first["peak_rss_mib"],
        "traced_current_bytes": (
            None if not traced else last["traced_current_bytes"] - first["traced_current_bytes"]
        ),
        "allocated_blocks": last["allocated_blocks"] - first["allocated_blocks"],
        "gc_objects": last["gc_objects"] - first["gc_objects"],
    }
    flat = growth["peak_rss_mib"] < FLAT_RSS_MIB and (
        not traced or growth["traced_current_bytes"] < FLAT_TRACED_BYTES
    )
    return {
        "steps": steps,
        "every": every,
        "hooks": 3 + len(extra) + len(fetchers),
        "traced": traced,
        "seconds": elapsed,
        "start": start,
        "samples": samples,
        "final": final,
        "growth": growth,
        "flat": flat,
        "modules": len(sys.modules),
        "torch_imported": "torch" in sys.modules,
    }


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def print_report(report: dict[str, Any]) -> None:
    header = (
        f"{'step':>7} {'peak RSS MiB':>13} {'RSS MiB':>8} {'traced KiB':>11} {'traced peak KiB':>16} "
        f"{'blocks':>8} {'gc objects':>11} {'ckpt dirs':>10}  latest"
    )
    print(header)
    print("-" * len(header))
    for s in report["samples"]:
        print(
            f"{s['step']:>7} {_mib(s['peak_rss_mib']):>13} {_mib(s['rss_mib']):>8} "
            f"{_kib(s['traced_current_bytes']):>11} {_kib(s['traced_peak_bytes']):>16} "
            f"{s['allocated_blocks']:>8} {s['gc_objects']:>11} {s['checkpoint_folders']:>10}  "
            f"{s['latest_checkpoint']}"
        )
    g = report["growth"]
    first, last = report["samples"][0], report["samples"][-1]
    start = report["start"]
    traced = ""
    if g["traced_current_bytes"] is not None:
        traced = f", traced {g['traced_current_bytes'] / 1024:+.1f} KiB"
    print(
        f"\npeak RSS at {first['step']} steps: {first['peak_rss_mib']:.1f} MiB; at {last['step']} steps: "
        f"{last['peak_rss_mib']:.1f} MiB; growth {g['peak_rss_mib']:+.1f} MiB{traced}, "
        f"blocks {g['allocated_blocks']:+d}, gc objects {g['gc_objects']:+d} "
        f"({report['seconds']:.1f} s for {report['steps']} steps, {report['hooks']} hooks)"
    )
    print(
        f"at the start (session created, nothing run): peak RSS {start['peak_rss_mib']:.1f} MiB, "
        f"traced {_kib(start['traced_current_bytes'])} KiB; Python modules loaded: {report['modules']}"
    )
    print(
        f"target: flat memory (peak RSS < {FLAT_RSS_MIB:g} MiB and traced < {FLAT_TRACED_BYTES // 1024} KiB "
        f"growth from the first sample to the last): {'MET' if report['flat'] else 'NOT MET'}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="200 steps, a checkpoint every 100 (smoke test)")
    parser.add_argument("--steps", type=int, help="steps to train (default 10000; quick 200)")
    parser.add_argument("--every", type=int, help="steps between checkpoints and samples (default 1000)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="sample RSS and blocks only")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.quick else 10_000
    if args.every is None:
        args.every = 100 if args.quick else 1000
    if args.steps < 1 or args.every < 1 or args.steps < args.every:
        parser.error("--steps and --every must be positive, and --every at most --steps")
    return args


def collect(args: argparse.Namespace, echo: bool = True) -> dict[str, Any]:
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    # LoggingTensorHook and the step counter log at INFO; keep the table readable.
    logging.getLogger("looprt").setLevel(logging.WARNING)
    if echo:
        print(
            f"looprt {looprt.__version__}, Python {platform.python_version()}; {platform.machine()}, "
            f"{os.cpu_count()} CPUs; {args.steps} steps, a checkpoint every {args.every}, "
            f"{HOOKS} hooks, tracemalloc {'off' if args.no_tracemalloc else 'on'}\n"
        )
    report = run(args.steps, args.every, not args.no_tracemalloc)
    report["versions"] = {"looprt": looprt.__version__, "python": platform.python_version()}
    if echo:
        print_report(report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = collect(args)
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
