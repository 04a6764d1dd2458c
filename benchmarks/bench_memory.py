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
without tracing (faster; RSS and blocks only).

Then a big model (``--big-mib``, default 256 MiB; 4 with ``--quick``; 0
skips it), each part in a fresh subprocess so that its peak RSS is its own:

* torch memory: an ``nn.Sequential`` of ``Linear`` layers holding that many
  MiB of float32 parameters, trained with SGD (no momentum; the step sets
  the gradients to None after ``opt.step()``), made a program by
  ``looprt.wrap``, run a few steps under ``MonitoredTrainingSession`` (which
  saves at the start and the end), then restored from its checkpoint. The
  peak RSS, less the RSS before the model was built (the interpreter,
  torch, looprt), as a multiple of the model's size: at most
  ``BIG_PEAK_TARGET``. The parameters and one host copy of them (the
  checkpoint being written or read) are 2x. It runs ``TORCH_MEMORY_RUNS``
  times; the median run is the figure, and every run is shown with the
  anonymous memory still held after the save beyond the model: in some
  runs glibc keeps the freed host copy of the last save (``malloc_trim``
  gives it back: not a leak), and the restore's memory-mapped file pages
  then come on top of it (about 2.9x).
* restore time: ``Saver.restore`` of a checkpoint of that size, as a
  multiple of the bare read of its payload (``torch.load`` of a torch
  model's, ``np.load`` of a NumPy program's state): at most
  ``BIG_RESTORE_TARGET``. Best of ``RESTORE_REPEATS``, files in the page
  cache. Also shown against the bare restore into the live state (a
  memory-mapped ``torch.load`` and ``load_state_dict``; ``np.load`` and an
  assignment into each array), which allocates no new memory: on a VM whose
  kernel is slow to hand out memory it has not used lately, the bare read
  pays for fresh pages (0.14 to 0.18 s for 256 MiB, against 0.02 s when
  pages are recycled), and that reference does not.

The script never fails on the figures; it exits 0 after printing them.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import subprocess
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
BIG_PEAK_TARGET = 2.2
BIG_RESTORE_TARGET = 1.5
BIG_STEPS = 3
RESTORE_REPEATS = 3
# The torch memory part runs this many times, each in a fresh process: glibc sometimes keeps
# the freed host copy of the last save (released by malloc_trim; not a leak), and the restore's
# file-backed pages then come on top of it. The median is the figure; every run is shown.
TORCH_MEMORY_RUNS = 5


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


def anon_rss_mib() -> float | None:
    """Anonymous resident memory in MiB (Linux's ``RssAnon``: not file pages), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


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


# -- a big model: peak memory and restore time (each in a fresh process) ----------------------


def _layers(mib: float) -> tuple[int, int]:
    """(layers, width) of a stack of square Linear layers holding about ``mib`` MiB of float32."""
    width = 2048 if mib >= 64 else 256
    per_layer = (width * width + width) * 4 / 2**20
    return max(1, round(mib / per_layer)), width


def torch_memory_child(mib: float, directory: str) -> dict[str, Any]:
    """``looprt.wrap`` + training + save + restore of a ``mib``-MiB torch model; peak RSS."""
    import torch

    from looprt.backends import torch as looprt_torch

    torch.manual_seed(0)
    torch.set_num_threads(4)
    # torch's one-time cost, which a bare loop pays too: the first optimizer made loads
    # about 74 MiB of torch's own modules (torch._dynamo and what it imports).
    torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    base = rss_mib() or 0.0
    base_anon = anon_rss_mib()
    layers, width = _layers(mib)
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    batch = torch.randn(8, width)

    def train_step(x: Any) -> dict[str, Any]:
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)  # no gradients held between steps
        return {"loss": loss.detach()}

    step = looprt.wrap(
        train_step, state={"model": model, "opt": opt}, inputs=[batch] * BIG_STEPS, outputs=("loss",)
    )
    peaks: dict[str, float] = {}
    with looprt_torch.MonitoredTrainingSession(
        checkpoint_dir=directory,
        scaffold=looprt.Scaffold(program=step.program),
        save_checkpoint_steps=BIG_STEPS,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as sess:
        peaks["created"] = peak_rss_mib()
        while not sess.should_stop():  # until the inputs run out
            sess.run(step)
    peaks["trained and saved"] = peak_rss_mib()
    gc.collect()
    anon = anon_rss_mib()
    path = looprt.latest_checkpoint(directory)
    looprt.Saver(step.program).restore(None, path)
    peaks["restored"] = peak_rss_mib()
    return {
        "model_mib": size,
        "layers": layers,
        "width": width,
        "base_rss_mib": base,
        "peak_rss_mib": peaks,
        "multiple": (peaks["restored"] - base) / size,
        # Anonymous memory held after the save, beyond the model: freed memory the allocator
        # kept (about one checkpoint's worth in some runs), which the restore's pages add to.
        "kept_after_save_mib": None if anon is None or base_anon is None else anon - base_anon - size,
        "steps": int(step.program.global_step.value),
        "checkpoint": os.path.basename(path or ""),
    }


def _best_of(fn: Any) -> float:
    best = float("inf")
    for _ in range(RESTORE_REPEATS):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def restore_time_child(mib: float, backend: str, directory: str) -> dict[str, Any]:
    """Seconds of ``Saver.restore`` and of the bare read, for a ``mib``-MiB checkpoint of ``backend``."""
    import numpy as np

    prog = looprt.Program(backend=backend, name="big")
    if backend == "torch":
        import torch

        layers, width = _layers(mib)
        model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))
        prog.state("model", model)
        payload = "state.pt"

        def bare() -> Any:
            return torch.load(os.path.join(path, payload), map_location="cpu", weights_only=True)

        def bare_into_live() -> None:
            loaded = torch.load(os.path.join(path, payload), map_location="cpu", weights_only=True, mmap=True)
            model.load_state_dict(loaded["values"]["model"])
    else:
        parts = 4
        for index in range(parts):
            prog.state(f"w{index}", np.random.default_rng(index).random(int(mib * 2**20 / 8 / parts)))
        payload = "state.npz"

        def bare() -> Any:
            with np.load(os.path.join(path, payload), allow_pickle=False) as data:
                return {name: data[name] for name in data.files}

        def bare_into_live() -> None:
            with np.load(os.path.join(path, payload), allow_pickle=False) as data:
                for name, handle in prog.states.items():
                    handle.value[...] = data[name]

    saver = looprt.Saver(prog)
    path = saver.save(None, os.path.join(directory, "model.ckpt"), global_step=1)
    bare()  # the files into the page cache
    restore = _best_of(lambda: saver.restore(None, path))
    # What a session does: find the latest checkpoint (which verifies it), then restore it.
    session_restore = _best_of(lambda: saver.restore(None, looprt.latest_checkpoint(directory)))
    read = _best_of(bare)
    into_live = _best_of(bare_into_live)
    return {
        "backend": backend,
        "payload_mib": os.path.getsize(os.path.join(path, payload)) / 2**20,
        "restore_s": restore,
        "bare_s": read,
        "bare_into_live_s": into_live,
        "latest_and_restore_s": session_restore,
        "multiple": restore / read,
        "multiple_of_into_live": restore / into_live,
    }


def _child(kind: str, mib: float) -> dict[str, Any] | None:
    """Run one big-model measurement in a fresh interpreter; None if it could not run."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-big-") as directory:
        done = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--big-mib", str(mib), "--child-dir", directory],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        print(f"{kind}: failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def big_model(mib: float) -> dict[str, Any]:
    """The big-model figures: torch peak memory, and restore times of torch and NumPy."""
    try:
        import torch  # noqa: F401
    except ImportError:
        has_torch = False
    else:
        has_torch = True
    torch_restore = _child("restore-torch", mib) if has_torch else None
    tried = [_child("torch-memory", mib) for _ in range(TORCH_MEMORY_RUNS)] if has_torch else []
    runs = [r for r in tried if r is not None]
    memory: dict[str, Any] | None = None
    if runs:
        memory = sorted(runs, key=lambda r: r["multiple"])[len(runs) // 2]  # the median run
        memory = {
            **memory,
            "runs": [r["multiple"] for r in runs],
            "kept": [r["kept_after_save_mib"] for r in runs],
        }
    report: dict[str, Any] = {
        "mib": mib,
        "torch_memory": memory,
        "restore": [r for r in (torch_restore, _child("restore-numpy", mib)) if r is not None],
    }
    report["memory_met"] = None if memory is None else memory["multiple"] <= BIG_PEAK_TARGET
    report["restore_met"] = all(r["multiple"] <= BIG_RESTORE_TARGET for r in report["restore"])
    return report


def print_big_model(report: dict[str, Any]) -> None:
    memory = report["torch_memory"]
    print(f"\nbig model ({report['mib']:g} MiB), each part in a fresh process:")
    if memory is None:
        print("  torch memory: not run (torch is not installed, or the run failed)")
    else:
        peaks = memory["peak_rss_mib"]
        print(
            f"  torch memory: {memory['layers']} x Linear({memory['width']}, {memory['width']}), "
            f"{memory['model_mib']:.1f} MiB of parameters; "
            f"RSS before the model {memory['base_rss_mib']:.0f} MiB; "
            f"peak RSS: session created {peaks['created']:.0f}, trained and saved "
            f"{peaks['trained and saved']:.0f}, restored {peaks['restored']:.0f} MiB"
        )
        kept = ", ".join("-" if k is None else f"{k:.0f}" for k in memory["kept"])
        print(
            f"  {len(memory['runs'])} runs, peak RSS over the base as a multiple of the model: "
            f"{', '.join(f'{m:.2f}' for m in memory['runs'])}; freed memory the allocator kept "
            f"after the save (MiB): {kept}"
        )
        print(
            f"  target: peak RSS over the base at most {BIG_PEAK_TARGET:g}x the model, median run: "
            f"{memory['multiple']:.2f}x: {'MET' if report['memory_met'] else 'NOT MET'}"
        )
    for r in report["restore"]:
        bare = "torch.load" if r["backend"] == "torch" else "np.load"
        print(
            f"  restore {r['backend']:>5}: {r['payload_mib']:.0f} MiB in {r['restore_s'] * 1000:.0f} ms; "
            f"bare {bare} {r['bare_s'] * 1000:.0f} ms: {r['multiple']:.2f}x; bare {bare} into the live "
            f"state {r['bare_into_live_s'] * 1000:.0f} ms: {r['multiple_of_into_live']:.2f}x; "
            f"latest_checkpoint + restore (a session's) {r['latest_and_restore_s'] * 1000:.0f} ms"
        )
    print(
        f"  target: restore at most {BIG_RESTORE_TARGET:g}x the bare read: "
        f"{'MET' if report['restore_met'] else 'NOT MET'}"
    )


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
    parser.add_argument(
        "--big-mib", type=float, help="the big model's size in MiB (default 256; quick 4; 0: skip)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.quick else 10_000
    if args.every is None:
        args.every = 100 if args.quick else 1000
    if args.big_mib is None:
        args.big_mib = 4.0 if args.quick else 256.0
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
    if args.big_mib > 0:
        report["big_model"] = big_model(args.big_mib)
        if echo:
            print_big_model(report["big_model"])
    return report


def child_main(args: argparse.Namespace) -> int:
    """One big-model measurement (``--child``); prints its figures as one JSON line."""
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "4")
    logging.getLogger("looprt").setLevel(logging.WARNING)
    if args.child == "torch-memory":
        result = torch_memory_child(args.big_mib, args.child_dir)
    else:
        result = restore_time_child(args.big_mib, args.child.removeprefix("restore-"), args.child_dir)
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    report = collect(args)
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
