"""The ``looprt`` command: ``demo``, ``checkpoints DIR``, ``evaluate DIR`` and ``--version``.

Errors a user can fix print one line on standard error (``looprt: error:
...``), never a traceback, and exit with a conventional status: 2 for a bad
command line, 1 for a failure, 130 after Ctrl-C (the demo first saves a
checkpoint of the step it reached, so running it again resumes there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

__all__ = ["main"]

USAGE, FAILURE, INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``looprt demo: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of steps, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _fail(message: str, status: int = FAILURE) -> int:
    print(f"looprt: error: {message}", file=sys.stderr)
    return status


def _demo(args: argparse.Namespace) -> int:
    from looprt.demo import run_demo

    if "://" not in args.dir and os.path.exists(args.dir) and not os.path.isdir(args.dir):
        return _fail(f"--dir {args.dir}: is a file, not a directory", USAGE)
    result = run_demo(
        args.dir, steps=args.steps, backend=args.backend, seed=args.seed, handle_interrupts=True
    )
    resumed = "resumed from" if result.first_step > 0 else "started at"
    if result.interrupted:
        # --steps counts the steps of one run: the same command would train that many more.
        left = result.first_step + args.steps - result.last_step
        command = shlex.join(
            ["looprt", "demo", "--backend", args.backend, "--dir", args.dir, "--steps", str(left)]
            + (["--seed", str(args.seed)] if args.seed else [])
        )
        print(
            f"interrupted: {resumed} step {result.first_step}, stopped at step {result.last_step} "
            f"and saved a checkpoint there; to train the {left} steps left: {command}",
            file=sys.stderr,
        )
        return INTERRUPTED
    print(
        f"{resumed} step {result.first_step}, trained to step {result.last_step}; "
        f"test accuracy {result.test_accuracy:.3f}\n"
        f"checkpoints and summaries in {result.directory}; view with: tensorboard --logdir {result.directory}"
    )
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from looprt.checkpoint import CheckpointManager

    remote = "://" in args.dir  # a URL: never a local path (looprt.checkpoint.storage)
    if not remote and not os.path.lexists(args.dir):
        return _fail(f"{args.dir}: no such directory", USAGE)
    if not remote and not os.path.isdir(args.dir):
        return _fail(f"{args.dir}: is a file, not a checkpoint directory", USAGE)
    infos = CheckpointManager(args.dir, create=False).checkpoints()
    if not infos:
        empty = "a URL" if remote else (
            "an empty directory" if not os.listdir(args.dir) else "a directory with other files"
        )
        print(f"no checkpoints in {args.dir} ({empty})")
        return FAILURE
    print(f"{'step':>10}  {'written':19}  {'size':>10}  {'valid':5}  path")
    for info in infos:
        written = (
            datetime.datetime.fromtimestamp(info.time).strftime("%Y-%m-%d %H:%M:%S") if info.time else "?"
        )
        valid = "yes" if info.valid else "NO"
        line = f"{info.step:>10}  {written:19}  {info.size:>10}  {valid:5}  {info.path}"
        if info.set_aside:
            line += f"  (set aside as damaged: {info.problem})"
        elif info.problem:
            line += f"  ({info.problem})"
        print(line)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _evaluate(args: argparse.Namespace) -> int:
    from looprt.checkpoint import latest_checkpoint
    from looprt.evaluation.sidecar import load_evaluation_step, run_sidecar

    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        return _fail(f"{args.dir}: is a file, not a checkpoint directory", USAGE)
    given = (ImportError,) if args.program else ()  # a missing module of --program's, not torch's
    try:
        step = load_evaluation_step(args.program, args.backend, args.seed)
    except (ValueError, TypeError, AttributeError, *given) as e:
        return _fail(f"--program: {_one_line(e)}", USAGE)
    if latest_checkpoint(args.dir) is None:  # say so, or a mistyped directory looks like a hang
        logging.getLogger(__name__).info(
            "no checkpoint in %s yet%s: waiting for one (Ctrl-C to stop)",
            args.dir, "" if os.path.isdir(args.dir) else " (the directory does not exist)",
        )
    try:
        count = run_sidecar(
            args.dir, step, timeout=args.timeout, last_step=args.last_step, interval=args.interval
        )
    except KeyError as e:  # the backends' "state does not match" (program.backend.load_state_dict)
        whose = f"--program {args.program}" if args.program else f"the {args.backend} demo's program"
        return _fail(
            f"{args.dir}: its checkpoints do not fit {whose}: {e.args[0] if e.args else e}"
            + ("" if args.program else "; for your own program, pass --program MODULE:FUNCTION")
        )
    print(f"evaluated {count} checkpoint(s) of {args.dir}; summaries in {os.path.join(args.dir, 'eval')}")
    return 0 if count else FAILURE


@contextlib.contextmanager
def _warnings_as_log_lines() -> Iterator[None]:
    """Show each warning as one log line (``looprt.cli WARNING CheckpointWarning: ...``), no source line."""
    logger = logging.getLogger(__name__)

    def show(
        message: Warning | str, category: type[Warning], filename: str, lineno: int,
        file: TextIO | None = None, line: str | None = None,
    ) -> None:
        logger.warning("%s: %s", category.__name__, message)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _parser() -> _Parser:
    from looprt import __version__

    parser = _Parser(prog="looprt", description="looprt: monitored training loops for any framework")
    parser.add_argument("--version", action="version", version=f"looprt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = commands.add_parser(
        "demo", help="train a small model with checkpoints, summaries and a progress bar"
    )
    demo.add_argument(
        "--backend",
        default="numpy",
        choices=["numpy", "torch", "jax"],
        help="numpy, torch (needs PyTorch) or jax (needs JAX and Optax)",
    )
    demo.add_argument("--steps", type=_steps, default=1000, help="steps to train in this run (default 1000)")
    demo.add_argument(
        "--dir", default="looprt-demo", help="checkpoint and summary directory (default ./looprt-demo)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    listing = commands.add_parser("checkpoints", help="list the checkpoints in a directory")
    listing.add_argument("dir")
    listing.set_defaults(run=_checkpoints)
    evaluate = commands.add_parser(
        "evaluate", help="evaluate each new checkpoint of a directory, beside a training process"
    )
    evaluate.add_argument("dir")
    evaluate.add_argument(
        "--backend",
        default="numpy",
        choices=["numpy", "torch", "jax"],
        help="the demo's backend (default numpy)",
    )
    evaluate.add_argument(
        "--program", metavar="MODULE:FUNCTION",
        help="a function that returns your evaluation step (default: the demo's)",
    )
    evaluate.add_argument(
        "--timeout", type=_seconds, help="end after this many seconds without a new checkpoint"
    )
    evaluate.add_argument(
        "--last-step", type=_steps, help="end after evaluating a checkpoint at this step or later"
    )
    evaluate.add_argument(
        "--interval", type=_seconds, default=0, help="at least this many seconds between evaluations"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="the demo's seed (default 0)")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from looprt.errors import LooprtError, OpError

    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    errors: tuple[type[BaseException], ...] = (LooprtError, OpError, OSError, ImportError)
    try:
        with _warnings_as_log_lines():
            return int(args.run(args))
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    except errors as e:
        return _fail(_one_line(e))


def _one_line(error: Any) -> str:
    from looprt.errors import OpError

    if isinstance(error, ModuleNotFoundError) and error.name in ("torch", "tensorflow"):
        return f"this needs {error.name}, which is not installed (pip install 'looprt[{error.name}]')"
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and not isinstance(error, OpError):
        return text  # "[Errno 13] Permission denied: 'run'" says it all
    return f"{type(error).__name__}: {text}"


if __name__ == "__main__":
    raise SystemExit(main())
