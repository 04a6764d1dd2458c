"""``SummarySaverHook``: writes summaries every N steps or seconds, like TF's.

The summary op is ``summary_op`` or, with ``scaffold``, ``scaffold.summary_op``
(read at each run, once the scaffold is finalized; for programs it is the
``{tag: handle}`` dict of ``Program.summary``). It may be a dict of
fetchables, a TF summary tensor, or a list of them; a bare looprt handle is
written under its own name. On the first run the hook writes a SessionLog
START; on every run it fetches the global step, and the summary op only on
runs where its timer triggers. Summaries are written at the global step after
the run. With neither ``output_dir`` nor ``summary_writer`` it writes nothing
(as TF's, it then fetches the summary op on every run). The writer is flushed,
not closed, at ``end``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.program.handles import Handle
from looprt.summary import SummaryWriterCache
from looprt.timer import SecondOrStepTimer
from looprt.training_util import get_global_step

__all__ = ["SummarySaverHook"]


class SummarySaverHook(SessionRunHook):
    """Saves summaries every ``save_steps`` steps or ``save_secs`` seconds (exactly one)."""

    def __init__(
        self,
        save_steps: int | None = None,
        save_secs: float | None = None,
        output_dir: str | None = None,
        summary_writer: Any = None,
        scaffold: Any = None,
        summary_op: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (scaffold is None) == (summary_op is None):
            raise ValueError("Exactly one of scaffold or summary_op must be provided.")
        self._summary_op = summary_op
        self._summary_writer = summary_writer
        self._output_dir = output_dir
        self._scaffold = scaffold
        self._timer = SecondOrStepTimer(every_secs=save_secs, every_steps=save_steps, clock=clock)
        self._clock = clock
        self._due_step, self._due_time = self._timer.due()
        self._next_step: Any = None
        self._request_summary = False
        self._global_step: Any = None

    def begin(self) -> None:
        if self._summary_writer is None and self._output_dir:
            self._summary_writer = SummaryWriterCache.get(self._output_dir)
        self._next_step = None

    def after_create_session(self, session: Any, coord: Any) -> None:
        self._global_step = get_global_step(session.graph)

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        try:
            before = run_context.global_step
        except AttributeError:  # TF's own run context has none
            before = None
        next_step, due_time = self._next_step, self._due_time
        # Most runs: the timer cannot trigger (SecondOrStepTimer.due) and the global step is
        # known on the host, so nothing is asked for.
        if (
            before is not None
            and next_step is not None
            and next_step < self._due_step
            and (due_time is None or self._clock() < due_time)
        ):
            self._request_summary = False
            return None
        self._request_summary = next_step is None or self._timer.should_trigger_for_step(next_step)
        requests: dict[str, Any] = {} if before is not None else {"global_step": self._global_step}
        if self._request_summary:
            summary_op = self._get_summary_op()
            if summary_op is not None:
                requests["summary"] = summary_op
        return SessionRunArgs(requests) if requests else None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        writer = self._summary_writer
        if writer is None:
            return
        try:
            before = run_context.global_step
        except AttributeError:  # TF's own run context has none
            before = None
        if before is not None and not self._request_summary and self._next_step is not None:
            self._next_step = before + 2  # the step after this run's
            return
        results = run_values.results or {}
        global_step = (before if before is not None else results["global_step"]) + 1
        if self._next_step is None or self._request_summary:
            global_step = run_context.session.run(self._global_step)
        if self._next_step is None:
            add_start = getattr(writer, "add_session_log_start", None)
            if add_start is not None:
                add_start(global_step)
        if self._request_summary:
            self._timer.update_last_triggered_step(global_step)
            self._due_step, self._due_time = self._timer.due()
            for summary in results.get("summary", ()):
                writer.add_summary(summary, global_step)
        self._next_step = global_step + 1

    def end(self, session: Any = None) -> None:
        if self._summary_writer is not None:
            self._summary_writer.flush()

    def _get_summary_op(self) -> list[Any] | None:
        """The summary op as a list (TF's contract); bare handles become ``{name: handle}``."""
        summary_op = self._summary_op
        if summary_op is None:
            summary_op = self._scaffold.summary_op
        if summary_op is None:
            return None
        if not isinstance(summary_op, list):
            summary_op = [summary_op]
        return [{op.name: op} if isinstance(op, Handle) else op for op in summary_op]
