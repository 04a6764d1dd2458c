"""The sidecar evaluator: ``looprt evaluate DIR`` evaluates each checkpoint a trainer commits.

It runs beside a training process (another terminal, another machine on the
same storage), restores every new checkpoint of ``DIR`` in order, runs the
program's evaluation step over its input, writes each output's mean to
``DIR/eval`` at the checkpoint's step (TensorBoard shows it beside the
training curves) and prints one line per checkpoint. It ends after
``timeout`` seconds without a new checkpoint, or once it has evaluated a
checkpoint at ``last_step`` or later; without either it waits until
interrupted.

The program is the demo's (``looprt demo``, by backend) or a user's:
``module:function`` names a function of no arguments that returns the
evaluation ``Step`` (or a tuple whose last item is it, as the demo's
builders do).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from looprt.checkpoint.format import read_manifest
from looprt.checkpoint.latest import latest_checkpoint, resolve_checkpoint
from looprt.checkpoint.storage import Location, is_url, split
from looprt.errors import FailedPreconditionError
from looprt.evaluation.evaluate import evaluations
from looprt.evaluation.hooks import StopAfterNEvalsHook
from looprt.metrics import Mean
from looprt.program.handles import Input, Step

__all__ = ["load_evaluation_step", "run_sidecar"]


def load_evaluation_step(program: str | None, backend: str, seed: int = 0) -> Step:
    """The evaluation step of ``program`` ("module:function"), or of the demo on ``backend``."""
    if program is None:
        from looprt import demo

        builders = {
            "numpy": demo.build_numpy_program,
            "torch": demo.build_torch_program,
            "jax": demo.build_jax_program,
        }
        if backend not in builders:
            raise ValueError(f"the demo runs on {', '.join(builders)}, not {backend!r}")
        built: Any = builders[backend](seed)
    else:
        module_name, colon, function = program.partition(":")
        if not colon or not module_name or not function:
            raise ValueError(f"--program must be MODULE:FUNCTION, got {program!r}")
        built = getattr(importlib.import_module(module_name), function)()
    step = built[-1] if isinstance(built, tuple) else built
    if not isinstance(step, Step):
        raise TypeError(f"{program or 'the demo'} gave a {type(step).__name__}, not an evaluation Step")
    if step.declared is None:
        raise ValueError(f"evaluation step {step.name!r} must declare its outputs (outputs=(...))")
    return step


def run_sidecar(
    directory: str,
    step: Step,
    *,
    timeout: float | None = None,
    last_step: int | None = None,
    interval: float = 0,
    summary_dir: str | None = "eval",
    poll_secs: float = 1,
    report: Callable[[str], None] = print,
) -> int:
    """Evaluate each new checkpoint of ``directory`` with ``step``; the number evaluated.

    Every output of ``step`` is averaged over the pass (one run when the step
    pulls no input; else until its input ends).
    """
    metrics = {key: Mean(step[key]) for key in step.declared or ()}
    pulls = any(isinstance(h, Input) and h.iterable is not None for _, h in step.bindings)
    hooks = [] if pulls else [StopAfterNEvalsHook(1, log_progress=False)]
    _check_backend(directory, step.program.backend.name)
    count = 0
    for path, values in evaluations(
        directory,
        scaffold=step,
        metrics=metrics,
        hooks=hooks,
        eval_interval_secs=interval,
        timeout=timeout,
        summary_dir=summary_dir,
        poll_secs=poll_secs,
    ):
        count += 1
        checkpoint_step = int(path.rpartition("-")[2])
        shown = ", ".join(f"{name} {value:.4f}" for name, value in values.items())
        report(f"step {checkpoint_step}: {shown} ({path})")
        if last_step is not None and checkpoint_step >= last_step:
            break
    return count


def _check_backend(directory: str, backend: str) -> None:
    """``FailedPreconditionError`` if the newest checkpoint already in ``directory`` is another backend's."""
    path = latest_checkpoint(directory, start_fresh_if_damaged=True)
    if path is None:
        return
    if is_url(path):
        from looprt.checkpoint import remote

        folder, name = split(path)
        manifest, _, _ = remote.read_manifest(Location(folder), name)
    else:
        manifest, _ = read_manifest(resolve_checkpoint(path))
    written_by = (manifest or {}).get("backend")
    if written_by and written_by != backend:
        raise FailedPreconditionError(
            f"the checkpoints in {directory} belong to the {written_by!r} backend, not {backend!r}: "
            f"evaluate them with --backend {written_by}"
        )
