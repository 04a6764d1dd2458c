"""The ``looprt`` command: ``looprt demo`` and ``looprt checkpoints DIR``."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from looprt.demo import run_demo

    result = run_demo(args.dir, steps=args.steps, backend=args.backend, seed=args.seed)
    resumed = "resumed from" if result.first_step > 0 else "started at"
    print(
        f"{resumed} step {result.first_step}, trained to step {result.last_step}; "
        f"test accuracy {result.test_accuracy:.3f}\n"
        f"checkpoints and summaries in {result.directory}; view with: tensorboard --logdir {result.directory}"
    )
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from looprt.checkpoint import CheckpointManager

    infos = CheckpointManager(args.dir, create=False).checkpoints()
    if not infos:
        print(f"no checkpoints in {args.dir}")
        return 1
    print(f"{'step':>10}  {'written':19}  {'size':>10}  {'valid':5}  path")
    for info in infos:
        written = (
            datetime.datetime.fromtimestamp(info.time).strftime("%Y-%m-%d %H:%M:%S") if info.time else "?"
        )
        valid = "yes" if info.valid else "NO"
        line = f"{info.step:>10}  {written:19}  {info.size:>10}  {valid:5}  {info.path}"
        if info.problem:
            line += f"  ({info.problem})"
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="looprt", description="looprt: monitored training loops for any framework"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train a small model with checkpoints, summaries and a progress bar"
    )
    demo.add_argument(
        "--backend", default="numpy", choices=["numpy", "torch"], help="numpy, or torch (needs PyTorch)"
    )
    demo.add_argument("--steps", type=int, default=1000, help="steps to train in this run (default 1000)")
    demo.add_argument(
        "--dir", default="looprt-demo", help="checkpoint and summary directory (default ./looprt-demo)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    listing = commands.add_parser("checkpoints", help="list the checkpoints in a directory")
    listing.add_argument("dir")
    listing.set_defaults(run=_checkpoints)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
