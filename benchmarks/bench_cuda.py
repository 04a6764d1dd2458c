"""What looprt adds to a PyTorch training step on a CUDA device: synchronisations and step time.

Usage::

    python benchmarks/bench_cuda.py [--quick] [--seed N] [--device D] [--json PATH]

Without a CUDA device (and without ``--device``) it says so and exits 0.
``--device cpu`` runs the step-time part on the CPU: a smoke run of the
script, not a figure about GPUs.

Two MLPs train on the device, from batches already there, under SGD with
momentum:

* small, 784-256-256-10, batch 64: the GPU finishes each kernel before
  Python has launched the next, so a step takes as long as the CPU takes to
  launch it, and every microsecond looprt spends shows;
* large, 4096-4096-4096-10, batch 1024: the GPU is the bottleneck, and the
  CPU (looprt included) runs ahead of it.

Synchronisations. With ``torch.cuda.set_sync_debug_mode("warn")`` each call
that makes the host wait for the device warns. The script counts the
warnings of each step, for steps run bare and steps run by
``MonitoredTrainingSession`` with its default hooks (its program declares a
summary of the loss), and lists the global steps on which a monitored step
waited: they must be those on which a hook fetches a value from the device,
the summary hook's every 100 steps. The claim checked: on every other step,
looprt makes no more synchronisations than the bare step, which makes none.
A control step that fetches its loss shows that the count sees a wait.

Step time. Each variant (bare; bare again, an A/A control; the raw
session; ``MonitoredTrainingSession``) runs blocks of steps, each block
timed from one ``torch.cuda.synchronize()`` to the next; the blocks of all
variants are interleaved in a fresh random order each round. A variant's
step time is the median over rounds of its block time over the block's
steps; its overhead is that minus the bare median, with a 90% bootstrap
interval, and the ratio is over the bare median. The small model is also
timed one step at a time, interleaved in random order as in
``bench_torch.py``, with no wait for the device (the queue is drained every
20 rounds, untimed): on a launch-bound step the host's time is the step
time, and single steps resolve finer than blocks (on the lent H200's
virtual CPU, their A/A control moved by up to 18 µs; blocks', by up to
26). The target is an overhead within 1% of the step.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import torch
from bench_overhead import write_json
from bench_torch import bootstrap_difference

import looprt
from looprt.backends.torch import TorchBackend

TARGET = 0.01
MODELS = {
    "small": {"sizes": (784, 256, 256, 10), "batch": 64, "block": 10, "rounds": 300, "steps": 3000},
    "large": {"sizes": (4096, 4096, 4096, 10), "batch": 1024, "block": 20, "rounds": 20, "steps": 0},
}
SYNC_STEPS = 300
QUICK_LARGE = {"sizes": (512, 512, 512, 10), "batch": 128}  # --quick: a smoke run, also on a CPU


def build(
    sizes: tuple[int, ...], batch: int, device: str
) -> tuple[Callable[[Any], Any], dict[str, Any], list[Any]]:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [
        (torch.randn(batch, sizes[0], device=device), torch.randint(0, sizes[-1], (batch,), device=device))
        for _ in range(8)
    ]

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    return train_step, {"model": model, "opt": opt}, batches


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def syncs_per_step(call: Callable[[], Any], steps: int) -> list[int]:
    """How many synchronising calls each of ``steps`` calls made."""
    counts = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                before = len(caught)
                call()
                counts.append(len(caught) - before)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return counts


def interleaved(
    variants: dict[str, Callable[[], Any]], rounds: int, seed: int, device: str, block: int | None
) -> dict[str, list[float]]:
    """Nanoseconds per step of every variant: one sample of each per round, in a shuffled order.

    ``block``: a sample is that many steps between two waits for the device.
    None: a sample is one step, timed on the host with no wait (on a
    launch-bound step the host's time is the step time); the device's queue
    is drained every 20 rounds, untimed.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(seed)
    clock = time.perf_counter_ns
    steps = block or 1
    gc.collect()
    gc.disable()
    try:
        for round_ in range(rounds):
            if block is None and round_ % 20 == 0:
                synchronize(device)
            rng.shuffle(names)
            for name in names:
                call = variants[name]
                if block is not None:
                    synchronize(device)
                start = clock()
                for _ in range(steps):
                    call()
                if block is not None:
                    synchronize(device)
                samples[name].append((clock() - start) / steps)
    finally:
        gc.enable()
    return samples


def overhead_rows(samples: dict[str, list[float]], seed: int) -> list[dict[str, Any]]:
    """Each variant's median, and its overhead over the bare median with a 90% bootstrap interval."""
    bare_median = statistics.median(samples["bare"])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        low, high = bootstrap_difference(
            [round(v) for v in values], [round(v) for v in samples["bare"]], seed
        )
        rows.append(
            {
                "variant": name,
                "per_step_us": median / 1e3,
                "overhead_us": (median - bare_median) / 1e3,
                "overhead_interval_us": [low / 1e3, high / 1e3],
                "overhead_ratio": (median - bare_median) / bare_median,
            }
        )
    return rows


def run_model(label: str, spec: dict[str, Any], args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    device = args.device
    train_step, state, batches = build(spec["sizes"], spec["batch"], device)
    stream: Iterator[Any] = itertools.cycle(batches)
    backend = TorchBackend(device=device)

    def program() -> Any:
        # One program per session over the same model: each session counts its own steps.
        return looprt.wrap(
            train_step, state=state, inputs=stream, outputs=("loss",), backend=backend, name=f"bench_{label}"
        )

    step, monitored_step = program(), program()
    monitored_step.program.summary("loss", monitored_step.loss)  # written every 100 steps: a fetch
    directory = stack.enter_context(tempfile.TemporaryDirectory())
    raw = looprt.ChiefSessionCreator(looprt.Scaffold(program=step.program)).create_session()
    monitored = stack.enter_context(
        looprt.MonitoredTrainingSession(
            checkpoint_dir=directory, scaffold=looprt.Scaffold(program=monitored_step.program)
        )
    )

    def bare() -> None:
        train_step(next(stream))

    def bare_again() -> None:
        train_step(next(stream))

    variants: dict[str, Callable[[], Any]] = {
        "bare": bare,
        "bare, again (A/A control)": bare_again,
        "raw session": lambda: raw.run(step),
        "MonitoredTrainingSession": lambda: monitored.run(monitored_step),
    }
    warm = 20
    for _ in range(warm):  # CUDA libraries load and pick their kernels on the first steps
        for call in variants.values():
            call()
    synchronize(device)

    report: dict[str, Any] = {"model": label, "sizes": spec["sizes"], "batch": spec["batch"]}
    if device.startswith("cuda"):
        sync_steps = 20 if args.quick else SYNC_STEPS
        def fetching() -> None:  # a control that must count: fetching the loss waits for it
            train_step(next(stream))["loss"].item()

        counts = {
            "bare, fetching the loss": syncs_per_step(fetching, 5),
            "bare": syncs_per_step(bare, sync_steps),
            "MonitoredTrainingSession": syncs_per_step(lambda: monitored.run(monitored_step), sync_steps),
        }
        # The monitored session has run `warm` steps: its i-th step here trains global step warm + i.
        report["syncs"] = {
            name: {
                "steps": len(per_step),
                "syncs": sum(per_step),
                "global_steps_that_synced": [warm + i for i, n in enumerate(per_step) if n]
                if name == "MonitoredTrainingSession"
                else [i for i, n in enumerate(per_step) if n],
            }
            for name, per_step in counts.items()
        }

    rounds, block = (3, 5) if args.quick else (spec["rounds"], spec["block"])
    samples = interleaved(variants, rounds, args.seed, device, block)
    report.update(rounds=rounds, block=block, rows=overhead_rows(samples, args.seed))
    if spec["steps"]:
        steps = 20 if args.quick else spec["steps"]
        single = interleaved(variants, steps, args.seed, device, None)
        report.update(steps=steps, step_rows=overhead_rows(single, args.seed))
    return report


def print_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        low, high = row["overhead_interval_us"]
        interval = f"[{low:.1f}, {high:.1f}]"
        print(
            f"  {row['variant']:<27} {row['per_step_us']:>12.1f} {row['overhead_us']:>12.2f} "
            f"{interval:>17} {row['overhead_ratio']:>9.2%}"
        )


def print_report(report: dict[str, Any], device: str) -> None:
    sizes = "-".join(map(str, report["sizes"]))
    print(f"\n{report['model']}: MLP {sizes}, batch {report['batch']}, on {device}")
    if "syncs" in report:
        for name, sync in report["syncs"].items():
            synced = sync["global_steps_that_synced"]
            print(f"  syncs, {name:<25} {sync['syncs']:>4} in {sync['steps']} steps; synced on: {synced}")
    print(
        f"  {report['rounds']} rounds of {report['block']}-step blocks per variant\n"
        f"  {'variant':<27} {'per-step us':>12} {'overhead us':>12} {'90% interval us':>17} {'overhead':>9}"
    )
    print_rows(report["rows"])
    if "step_rows" in report:
        print(f"  {report['steps']} single steps per variant, interleaved: the host's time (no wait)")
        print_rows(report["step_rows"])
    for key, how in (("rows", "blocks"), ("step_rows", "single steps")):
        if key in report:
            measured = report[key][-1]["overhead_ratio"]
            verdict = "met" if measured < TARGET else "NOT met"
            print(
                f"  target: MonitoredTrainingSession within {TARGET:.0%} of the step ({how}): "
                f"{verdict} ({measured:.2%})"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: a few short blocks, a smaller large model"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random orders (default 0)")
    parser.add_argument("--device", help="the device (default: cuda, when there is one)")
    parser.add_argument("--models", default="small,large", help="which models, comma-separated")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("bench_cuda: no CUDA device; nothing measured (--device cpu runs a smoke test)")
            return {"skipped": "no CUDA device"}
        args.device = "cuda"
    labels = args.models.split(",")
    unknown = set(labels) - set(MODELS)
    if unknown:
        parser.error(f"unknown models: {sorted(unknown)}; choose from {sorted(MODELS)}")

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    print(f"looprt on a PyTorch step: torch {torch.__version__}, {device_name or args.device}")
    reports = []
    for label in labels:
        spec = MODELS[label] | (QUICK_LARGE if args.quick and label == "large" else {})
        with ExitStack() as stack:
            report = run_model(label, spec, args, stack)
        print_report(report, args.device)
        reports.append(report)
    result = {
        "config": {"device": args.device, "device_name": device_name, "seed": args.seed, "quick": args.quick},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__},
        "models": reports,
    }
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
