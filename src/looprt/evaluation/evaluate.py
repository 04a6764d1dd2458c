"""``evaluate_once`` and ``evaluate_repeatedly``: restore a checkpoint, run an evaluation pass, report.

TF's ``tf.compat.v1`` evaluation functions (``_evaluate_once``, and
``evaluate_repeatedly`` of ``tf.contrib.training``) over looprt programs, with
TF's arguments. One pass, written as pseudocode::

    hooks = [MetricsHook(metrics)?, *hooks, SummaryAtEndHook(summary_dir)?, FinalOpsHook(final_ops)]
    with MonitoredSession(ChiefSessionCreator(scaffold,
                                              checkpoint_filename_with_path=checkpoint),
                          hooks) as session:          # restore; inputs of the eval steps restart
        while not session.should_stop():              # until a hook stops it (StopAfterNEvalsHook)
            session.run(eval_ops, feed_dict)          # or the input ends (OutOfRangeError)
    return the final ops' values and the metrics' results

The session restores the checkpoint and never saves one; the eval ops may
not run a step that advances the global step (``ValueError`` up front), so
the global step stays the checkpoint's, and the summaries of the pass go to
``summary_dir`` (default ``<checkpoint dir>/eval``) at that step, beside the
training curves in TensorBoard.
"""

from __future__ import annotations

import logging
import os
import time
from collections import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from looprt.checkpoint.format import MANIFEST
from looprt.checkpoint.latest import warn
from looprt.checkpoint.storage import Location, is_url, split
from looprt.errors import DataLossError, NotFoundError
from looprt.evaluation.hooks import MetricsHook, SummaryAtEndHook
from looprt.evaluation.iterator import checkpoints_iterator
from looprt.hooks.final_ops import FinalOpsHook
from looprt.hooks.session_run_hook import SessionRunHook
from looprt.metrics import Metric
from looprt.program.handles import Handle, Input, Output, Step
from looprt.program.program import Program
from looprt.session.creator import ChiefSessionCreator
from looprt.session.monitored import MonitoredSession
from looprt.session.scaffold import Scaffold
from looprt.structure import flatten

__all__ = ["evaluate_once", "evaluate_repeatedly", "evaluations"]

logger = logging.getLogger(__name__)

DEFAULT_SUMMARY_DIR = "eval"


def _steps_of(structures: Sequence[Any]) -> list[Step]:
    """The program steps that fetching ``structures`` runs, in declaration order."""
    steps: set[Step] = set()
    for structure in structures:
        for leaf in flatten(structure)[1]:
            if isinstance(leaf, Step):
                steps.add(leaf)
            elif isinstance(leaf, Output):
                steps.add(leaf.step)
    return sorted(steps, key=lambda s: s.index)


def _program_of(structures: Sequence[Any]) -> Program | None:
    for structure in structures:
        for leaf in flatten(structure)[1]:
            if isinstance(leaf, Handle):
                return leaf.program
    return None


class _RestartInputs(SessionRunHook):
    """Starts the iterable inputs of the evaluation steps afresh in every new session.

    An evaluation pass reads its whole input: TF's evaluation re-initializes
    its input pipeline with each session in the same way.
    """

    def __init__(self, inputs: list[Input]) -> None:
        self._inputs = inputs
        self._passes = 0

    def after_create_session(self, session: Any, coord: Any) -> None:
        for handle in self._inputs:
            if self._passes and isinstance(handle.iterable, abc.Iterator):
                raise ValueError(
                    f"input {handle.name!r} of {handle.program.name!r} is a one-shot iterator, so a "
                    "second evaluation pass would see no data: give an iterable that can be iterated "
                    "again (a list, a DataLoader, a tf.data.Dataset)"
                )
            handle.restart(None, 0)
        self._passes += 1


def _plan(
    scaffold: Any,
    eval_ops: Any,
    final_ops: Any,
    final_ops_feed_dict: Any,
    hooks: Sequence[Any] | None,
    metrics: Mapping[str, Metric] | None,
    summary_dir: str | None,
) -> tuple[Scaffold, Any, list[Any], FinalOpsHook, MetricsHook | None]:
    """The scaffold, the ops to run each time, and the hooks of an evaluation; checked."""
    metric_hook = MetricsHook(metrics) if metrics else None
    metric_fetches = [m.fetches for m in (metrics or {}).values()]
    if metrics and final_ops is not None and not isinstance(final_ops, Mapping):
        raise TypeError("with metrics, final_ops must be a dict (the result holds both, by name)")
    clash = sorted(set(metrics or ()) & set(final_ops or ())) if isinstance(final_ops, Mapping) else []
    if clash:
        raise ValueError(f"{clash} name both a metric and a final op")
    if eval_ops is None and metric_fetches:
        eval_ops = metric_fetches  # the metrics' fetches are the evaluation
    for step in _steps_of([eval_ops, *metric_fetches]):
        if step.advance_global_step:
            raise ValueError(
                f"evaluation would run step {step.name!r}, which advances the global step (a training "
                "step); evaluate with a step declared with advance_global_step=False"
            )
    if isinstance(scaffold, Scaffold):
        pass
    elif isinstance(scaffold, (Program, Step)):
        scaffold = Scaffold(program=scaffold)
    elif scaffold is None:
        program = _program_of([eval_ops, *metric_fetches])
        scaffold = Scaffold(program=program)
    else:
        raise TypeError(f"scaffold must be a Scaffold, Program or Step, got {type(scaffold).__name__}")
    inputs = [
        handle
        for step in _steps_of([eval_ops, *metric_fetches])
        for _, handle in step.bindings
        if isinstance(handle, Input) and handle.iterable is not None
    ]
    final_hook = FinalOpsHook(final_ops, final_ops_feed_dict)
    all_hooks: list[Any] = [_RestartInputs(list(dict.fromkeys(inputs)))]
    if metric_hook is not None:
        all_hooks.append(metric_hook)
    all_hooks += list(hooks or ())
    if summary_dir is not None and metrics:
        all_hooks.append(SummaryAtEndHook(log_dir=summary_dir, summary_op={}, metrics=metrics))
    all_hooks.append(final_hook)
    return scaffold, eval_ops, all_hooks, final_hook, metric_hook


def _values(final_hook: FinalOpsHook, metric_hook: MetricsHook | None) -> Any:
    if metric_hook is None:
        return final_hook.final_ops_values
    return {**metric_hook.results, **(final_hook.final_ops_values or {})}


def _summary_dir(summary_dir: str | None, checkpoint_dir: str) -> str | None:
    return None if summary_dir is None else os.path.join(checkpoint_dir, os.fspath(summary_dir))


def _still_there(path: str) -> bool:
    """Whether checkpoint ``path`` (local, or at a URL) still has its manifest."""
    if is_url(path):
        directory, name = split(path)
        return bool(Location(directory).listing(name).get(f"{name}/{MANIFEST}") is not None)
    return os.path.lexists(os.path.join(path, MANIFEST))


def _run_pass(
    checkpoint_path: str,
    master: str,
    scaffold: Scaffold,
    eval_ops: Any,
    feed_dict: Any,
    hooks: list[Any],
    config: Any,
) -> None:
    logger.info("Starting evaluation of %s", checkpoint_path)
    start = time.monotonic()
    creator = ChiefSessionCreator(
        scaffold=scaffold, master=master, config=config, checkpoint_filename_with_path=checkpoint_path
    )
    with MonitoredSession(session_creator=creator, hooks=hooks) as session:
        if eval_ops is not None:
            while not session.should_stop():
                session.run(eval_ops, feed_dict)
    logger.info("Inference Time : %.5fs", time.monotonic() - start)
    logger.info("Finished evaluation of %s", checkpoint_path)


def evaluate_once(
    checkpoint_path: str,
    master: str = "",
    scaffold: Scaffold | Program | Step | None = None,
    eval_ops: Any = None,
    feed_dict: Any = None,
    final_ops: Any = None,
    final_ops_feed_dict: Any = None,
    hooks: Sequence[Any] | None = None,
    config: Any = None,
    *,
    metrics: Mapping[str, Metric] | None = None,
    summary_dir: str | None = DEFAULT_SUMMARY_DIR,
) -> Any:
    """Restore ``checkpoint_path``, run ``eval_ops`` until a hook stops or the input ends; the final values.

    Args:
        checkpoint_path: the checkpoint to restore (a path
            ``checkpoints_iterator`` or ``latest_checkpoint`` gives).
        scaffold: a ``Scaffold``, or the ``Program`` (or a step of it); by
            default the program of ``eval_ops`` or the metrics.
        eval_ops: fetched on every run (default: what the metrics fetch);
            no step they run may advance the global step.
        feed_dict, master, config: as in ``MonitoredSession.run`` and
            ``ChiefSessionCreator``.
        final_ops, final_ops_feed_dict: fetched once at the end
            (``FinalOpsHook``).
        hooks: more hooks, e.g. ``StopAfterNEvalsHook(n)``.
        metrics: name -> ``Metric``, updated on every run (a looprt
            extension).
        summary_dir: where the metrics' results are written, at the
            checkpoint's global step; a relative path is under the
            checkpoint's directory (default ``eval``); None writes none.

    Returns:
        TF's result: the values of ``final_ops`` (None without them); with
        ``metrics``, a dict of each metric's result, plus the ``final_ops``
        dict's values.
    """
    checkpoint_path = os.fspath(checkpoint_path)
    directory = (
        split(checkpoint_path.rstrip("/"))[0]
        if is_url(checkpoint_path)
        else (os.path.dirname(os.path.normpath(checkpoint_path)))
    )
    summaries = _summary_dir(summary_dir, directory)
    scaffold, eval_ops, all_hooks, final_hook, metric_hook = _plan(
        scaffold, eval_ops, final_ops, final_ops_feed_dict, hooks, metrics, summaries
    )
    _run_pass(os.fspath(checkpoint_path), master, scaffold, eval_ops, feed_dict, all_hooks, config)
    return _values(final_hook, metric_hook)


def evaluations(
    checkpoint_dir: str,
    master: str = "",
    scaffold: Scaffold | Program | Step | None = None,
    eval_ops: Any = None,
    feed_dict: Any = None,
    final_ops: Any = None,
    final_ops_feed_dict: Any = None,
    eval_interval_secs: float = 60,
    hooks: Sequence[Any] | None = None,
    config: Any = None,
    max_number_of_evaluations: int | None = None,
    timeout: float | None = None,
    timeout_fn: Callable[[], bool] | None = None,
    *,
    metrics: Mapping[str, Metric] | None = None,
    summary_dir: str | None = DEFAULT_SUMMARY_DIR,
    poll_secs: float = 1,
) -> Iterator[tuple[str, Any]]:
    """Evaluate each new checkpoint of ``checkpoint_dir`` as it commits; yield ``(path, values)``.

    The arguments are ``evaluate_repeatedly``'s. A checkpoint that retention
    deletes (or that turns out damaged) before its pass could restore it is
    skipped with a ``CheckpointWarning``.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    summaries = _summary_dir(summary_dir, checkpoint_dir)
    scaffold, eval_ops, all_hooks, final_hook, metric_hook = _plan(
        scaffold, eval_ops, final_ops, final_ops_feed_dict, hooks, metrics, summaries
    )
    done = 0
    for path in checkpoints_iterator(
        checkpoint_dir, eval_interval_secs, timeout, timeout_fn, poll_secs=poll_secs
    ):
        try:
            _run_pass(path, master, scaffold, eval_ops, feed_dict, all_hooks, config)
        except (NotFoundError, DataLossError) as error:
            if _still_there(path):
                raise
            warn(f"skipping checkpoint {path}: it was deleted before it could be restored ({error})")
            continue
        done += 1
        yield path, _values(final_hook, metric_hook)
        if max_number_of_evaluations is not None and done >= max_number_of_evaluations:
            logger.info("Reached max_number_of_evaluations=%s. Exit", max_number_of_evaluations)
            return


def evaluate_repeatedly(
    checkpoint_dir: str,
    master: str = "",
    scaffold: Scaffold | Program | Step | None = None,
    eval_ops: Any = None,
    feed_dict: Any = None,
    final_ops: Any = None,
    final_ops_feed_dict: Any = None,
    eval_interval_secs: float = 60,
    hooks: Sequence[Any] | None = None,
    config: Any = None,
    max_number_of_evaluations: int | None = None,
    timeout: float | None = None,
    timeout_fn: Callable[[], bool] | None = None,
    *,
    metrics: Mapping[str, Metric] | None = None,
    summary_dir: str | None = DEFAULT_SUMMARY_DIR,
    poll_secs: float = 1,
) -> Any:
    """Evaluate every new checkpoint of ``checkpoint_dir`` until the iterator ends; the last values.

    ``evaluate_once`` for each checkpoint ``checkpoints_iterator`` yields
    (``eval_interval_secs`` apart at least, ending after ``timeout`` seconds
    without one unless ``timeout_fn()`` says to wait on), at most
    ``max_number_of_evaluations`` times. Returns the values of the last
    evaluation (None if there was none); ``evaluations`` yields each.
    """
    last = None
    for _, values in evaluations(
        checkpoint_dir,
        master,
        scaffold,
        eval_ops,
        feed_dict,
        final_ops,
        final_ops_feed_dict,
        eval_interval_secs,
        hooks,
        config,
        max_number_of_evaluations,
        timeout,
        timeout_fn,
        metrics=metrics,
        summary_dir=summary_dir,
        poll_secs=poll_secs,
    ):
        last = values
    return last
