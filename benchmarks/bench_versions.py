"""Two versions of looprt side by side on the real PyTorch step: a regression measured in one run.

Usage::

    python benchmarks/bench_versions.py REV [--rounds N] [--seed N]

``REV`` is a git revision of this repository (e.g. ``52440e6``, the last
commit before Core v2). Its ``src/looprt`` is copied into a temporary
folder as the package ``looprt_<rev>`` (every ``looprt`` name in it
renamed), so both versions import into one process. The step of
``bench_torch.py`` (MLP 784-256-256-10, batch 64, SGD with momentum, one
torch thread) is run bare, bare again (the A/A control), and under each
version's ``MonitoredTrainingSession`` with its default hooks, one step of
each per round in a random order, the collector off, as ``bench_torch.py``
does. Prints each variant's median overhead over the bare median.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import logging
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import looprt

sys.path.insert(0, str(Path(__file__).parent))
import bench_torch

REPO = Path(__file__).resolve().parent.parent


def load_version(rev: str, into: Path) -> Any:
    """looprt as of ``rev``, imported as ``looprt_<rev>``."""
    name = "looprt_" + re.sub(r"\W", "_", rev)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src/looprt"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    package = into / name
    (into / "src" / "looprt").rename(package)
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"\blooprt\b", name, path.read_text(encoding="utf-8")), encoding="utf-8")
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=5000, help="steps of each variant (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random order (default 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train_step, model, opt, batches = bench_torch.build()
    stream = itertools.cycle(batches)
    with tempfile.TemporaryDirectory() as work:
        try:
            other = load_version(args.rev, Path(work))
        except subprocess.CalledProcessError as e:
            why = e.stderr.decode(errors="replace").strip()
            parser.error(f"git cannot give src/looprt at {args.rev!r}: {why}")
        for lib in (looprt, other):
            logging.getLogger(lib.__name__).setLevel(logging.WARNING)

        def monitored(lib: Any) -> Any:
            step = lib.wrap(train_step, state={"model": model, "opt": opt}, inputs=stream, name="bench")
            sess = lib.MonitoredTrainingSession(
                checkpoint_dir=tempfile.mkdtemp(dir=work), scaffold=lib.Scaffold(program=step.program)
            )
            return sess, step

        (this_sess, this_step), (that_sess, that_step) = monitored(looprt), monitored(other)

        def bare() -> None:
            train_step(next(stream))

        def bare_again() -> None:
            train_step(next(stream))

        variants = {
            "bare": bare,
            "bare, again (A/A control)": bare_again,
            "MonitoredTrainingSession, this checkout": lambda: this_sess.run(this_step),
            f"MonitoredTrainingSession, {args.rev}": lambda: that_sess.run(that_step),
        }
        with this_sess, that_sess:
            samples = bench_torch.interleaved(variants, args.rounds, args.seed)
    bare_median = statistics.median(samples["bare"])
    print(f"{args.rounds} rounds, seed {args.seed}, medians; the step alone {bare_median / 1e3:.1f} us")
    overheads: dict[str, float] = {}
    for name, values in samples.items():
        overhead = statistics.median(values) - bare_median
        overheads[name] = overhead / 1e3
        if name != "bare":
            print(f"{name:<48} overhead {overhead / 1e3:7.2f} us {overhead / bare_median:7.2%}")
    return overheads


if __name__ == "__main__":
    main()
