"""The evaluation hooks: stop after N runs, update metrics on every run, write summaries at the end.

``StopAfterNEvalsHook`` and ``SummaryAtEndHook`` are TF's (from
``tf.compat.v1`` evaluation and ``tf.contrib.training``); ``MetricsHook`` is
how streaming metrics (``looprt.metrics``) see every run. Each
works with every backend, TF graphs included.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from typing import Any

from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.metrics import Metric, results
from looprt.summary import SummaryWriterCache
from looprt.training_util import get_global_step

__all__ = ["MetricsHook", "StopAfterNEvalsHook", "SummaryAtEndHook"]

logger = logging.getLogger(__name__)


class StopAfterNEvalsHook(SessionRunHook):
    """Requests a stop after ``num_evals`` runs of each session (None: run until the input ends).

    The count starts at 0 with every new session (TF counts in a local
    variable that each session initializes). With ``log_progress``, logs
    ``Evaluation [i/N]`` (every run below 20 evaluations, else every tenth).
    """

    def __init__(self, num_evals: int | None, log_progress: bool = True) -> None:
        if num_evals is not None and (isinstance(num_evals, bool) or not isinstance(num_evals, int)):
            raise TypeError(f"num_evals must be an int or None, got {num_evals!r}")
        self._num_evals = num_evals
        self._log_progress = log_progress
        self._log_frequency = 1 if num_evals is None or num_evals < 20 else math.floor(num_evals / 10.0)
        self.evals_completed = 0

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.evals_completed = 0

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        self.evals_completed += 1
        done = self.evals_completed
        if self._log_progress:
            if self._num_evals is None:
                logger.info("Evaluation [%d]", done)
            elif done % self._log_frequency == 0 or done == self._num_evals:
                logger.info("Evaluation [%d/%d]", done, self._num_evals)
        if self._num_evals is not None and done >= self._num_evals:
            run_context.request_stop()


class MetricsHook(SessionRunHook):
    """Feeds streaming ``metrics`` (name -> ``Metric``) with their fetches on every run.

    Each metric is reset when a session is created and updated after every
    run with the host values of its ``fetches``; ``results`` are the values
    so far (final once the session ends).
    """

    def __init__(self, metrics: Mapping[str, Metric]) -> None:
        for name, metric in metrics.items():
            if not isinstance(metric, Metric):
                raise TypeError(f"metric {name!r} is a {type(metric).__name__}, not a looprt Metric")
            if not metric.fetches:
                raise ValueError(
                    f"metric {name!r} fetches nothing: bind it to what it reduces, as in "
                    f"{type(metric).__name__}(evaluate.loss)"
                )
        self.metrics = dict(metrics)
        self._fetches = SessionRunArgs({name: metric.fetches for name, metric in self.metrics.items()})

    def after_create_session(self, session: Any, coord: Any) -> None:
        for metric in self.metrics.values():
            metric.reset_state()

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs:
        return self._fetches

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        for name, values in run_values.results.items():
            self.metrics[name].update_state(**values)

    @property
    def results(self) -> dict[str, Any]:
        """Each metric's result, by name."""
        return results(self.metrics)


def _tf_merged_summary() -> Any:
    """TF's merged summary op of the default graph when TF is loaded and in graph mode, else None."""
    tf = sys.modules.get("tensorflow")
    if tf is None or tf.executing_eagerly():
        return None
    return tf.compat.v1.summary.merge_all()


class SummaryAtEndHook(SessionRunHook):
    """Writes summaries once, when the session ends, at the global step (TF's contrib hook).

    ``summary_op``: what to run in ``end`` (a ``{tag: fetchable}`` dict for
    programs, a TF summary tensor in graph mode; default: TF's merged
    summaries in graph mode, else nothing). ``metrics`` (name -> ``Metric``,
    a looprt extension): their results are written as scalars too. Give
    ``log_dir`` or ``summary_writer``. The global step of a restored
    checkpoint is its step, so an evaluation's summaries line up with the
    training curves.
    """

    def __init__(
        self,
        log_dir: str | None = None,
        summary_writer: Any = None,
        summary_op: Any = None,
        feed_dict: Any = None,
        *,
        metrics: Mapping[str, Metric] | None = None,
    ) -> None:
        if log_dir is None and summary_writer is None:
            raise ValueError("One of log_dir or summary_writer should be used.")
        self._log_dir = log_dir
        self._summary_writer = summary_writer
        self._summary_op = summary_op
        self._replace_summary_op = summary_op is None
        self._feed_dict = feed_dict
        self._metrics = dict(metrics or {})
        self._global_step: Any = None

    def begin(self) -> None:
        if self._replace_summary_op:
            self._summary_op = _tf_merged_summary()

    def after_create_session(self, session: Any, coord: Any) -> None:
        if self._summary_writer is None and self._log_dir:
            self._summary_writer = SummaryWriterCache.get(self._log_dir)
        self._global_step = get_global_step(session.graph)

    def end(self, session: Any) -> None:
        writer = self._summary_writer
        if isinstance(self._summary_op, dict) and not self._summary_op:
            self._summary_op = None  # nothing to run (as evaluate_once asks for programs)
        if self._summary_op is not None or self._metrics:
            global_step = int(session.run(self._global_step))
            if self._summary_op is not None:
                summary = session.run(self._summary_op, feed_dict=self._feed_dict)
                if writer is not None:
                    writer.add_summary(summary, global_step)
            if self._metrics and writer is not None:
                writer.add_summary(results(self._metrics), global_step)
        if writer is not None:
            writer.flush()
