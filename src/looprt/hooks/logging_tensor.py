"""``LoggingTensorHook``: log the values of some fetchables every N runs, N seconds, or at the end.

Mirrors ``tf.compat.v1.train.LoggingTensorHook``. ``tensors`` is a dict of
tag to fetchable (a program handle or its name, a TF tensor, ...) or a list
of fetchables, each its own tag. A dict is logged in sorted tag order, a list
in its own order, as ``"tag = value"`` joined by ``", "``, followed by
``" (%.3f sec)"`` (the seconds since the previous log) from the second log
on; ``formatter(values_by_tag)`` replaces that text. NumPy values are printed
with ``suppress=True``. Messages go to this module's logger at INFO.

The count is of runs through this session (not the global step): the first
run logs, then every ``every_n_iter``-th run or the first run after
``every_n_secs`` seconds (measured with ``clock``). ``at_end`` logs once more
in ``end`` with a separate run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.program.handles import Handle
from looprt.program.program import Program
from looprt.timer import NeverTriggerTimer, SecondOrStepTimer

__all__ = ["LoggingTensorHook"]

logger = logging.getLogger(__name__)


class LoggingTensorHook(SessionRunHook):
    """Logs the given fetchables every ``every_n_iter`` runs or ``every_n_secs`` seconds, and/or at end."""

    #: Where the hook logs: this module's logger; the TF drop-in's hooks log on TF's "tensorflow".
    logger: logging.Logger = logger

    def __init__(
        self,
        tensors: Mapping[Any, Any] | Iterable[Any],
        every_n_iter: int | None = None,
        every_n_secs: float | None = None,
        at_end: bool = False,
        formatter: Callable[[dict[Any, Any]], str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        only_log_at_end = at_end and every_n_iter is None and every_n_secs is None
        if not only_log_at_end and (every_n_iter is None) == (every_n_secs is None):
            raise ValueError(
                "either at_end and/or exactly one of every_n_iter and every_n_secs must be provided."
            )
        if every_n_iter is not None and every_n_iter <= 0:
            raise ValueError(f"invalid every_n_iter={every_n_iter}.")
        if isinstance(tensors, Mapping):
            self._tag_order: list[Any] = sorted(tensors.keys())
            self._tensors: dict[Any, Any] = dict(tensors)
        else:
            self._tag_order = list(tensors)
            self._tensors = {item: item for item in self._tag_order}
        self._formatter = formatter
        self._timer: SecondOrStepTimer | NeverTriggerTimer = (
            NeverTriggerTimer()
            if only_log_at_end
            else SecondOrStepTimer(every_secs=every_n_secs, every_steps=every_n_iter, clock=clock)
        )
        self._log_at_end = at_end
        self._iter_count = 0
        self._should_trigger = False

    @property
    def tensors(self) -> dict[Any, Any]:
        """The fetchables this hook logs, by tag (a copy); an extension point for subclasses.

        A subclass may assign a new dict with the same tags, for instance in
        ``begin`` after ``super().begin()``, to resolve what it was given
        against a graph (the TF drop-in turns tensor names into tensors of the
        default graph). The tags, and with them the logged order, stay those
        given to the constructor.

        Raises:
            ValueError: on assignment, if the tags differ from the constructor's.
        """
        return dict(self._tensors)

    @tensors.setter
    def tensors(self, tensors: Mapping[Any, Any]) -> None:
        if set(tensors) != set(self._tensors):
            missing = [tag for tag in self._tag_order if tag not in tensors]
            extra = [tag for tag in tensors if tag not in self._tensors]
            raise ValueError(
                f"LoggingTensorHook.tensors must keep the tags {self._tag_order!r}; "
                f"missing {missing!r}, unknown {extra!r}"
            )
        self._tensors = dict(tensors)

    def begin(self) -> None:
        self._timer.reset()
        self._iter_count = 0

    def after_create_session(self, session: Any, coord: Any) -> None:
        graph = session.graph
        if isinstance(graph, Program):
            for fetchable in self._tensors.values():
                _check_fetchable(fetchable, graph)

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        self._should_trigger = self._timer.should_trigger_for_step(self._iter_count)
        if self._should_trigger:
            return SessionRunArgs(self._tensors)
        return None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if self._should_trigger:
            self._log_tensors(run_values.results)
        self._iter_count += 1

    def end(self, session: Any) -> None:
        if self._log_at_end:
            self._log_tensors(session.run(self._tensors))

    def _log_tensors(self, values: dict[Any, Any]) -> None:
        elapsed_secs, _ = self._timer.update_last_triggered_step(self._iter_count)
        with np.printoptions(suppress=True):
            if self._formatter is not None:
                self.logger.info("%s", self._formatter(values))
                return
            stats = ", ".join(f"{tag!s} = {values[tag]!s}" for tag in self._tag_order)
        if elapsed_secs is not None:
            self.logger.info("%s (%.3f sec)", stats, elapsed_secs)
        else:
            self.logger.info("%s", stats)


def _check_fetchable(fetchable: Any, program: Program) -> None:
    """TF's ``begin`` checks: a handle of this program, or a name it has."""
    if isinstance(fetchable, str):
        if program.lookup(fetchable) is None:
            raise KeyError(
                f"The name {fetchable!r} refers to nothing in program {program.name!r} "
                f"(it has {', '.join(map(repr, program.handles))})."
            )
    elif not isinstance(fetchable, Handle) or fetchable.program is not program:
        raise ValueError(
            f"Passed {fetchable} should have graph attribute that is equal to current graph {program}."
        )
