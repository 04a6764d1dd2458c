"""``CheckpointSaverHook``: save a checkpoint every N steps or seconds, and at the end.

Mirrors ``tf.compat.v1.train.CheckpointSaverHook`` (same arguments, errors,
trigger steps, listener calls and log messages): it saves when the session is
created, whenever its timer fires after a run, and at the end unless the last
save was already at the final step. Each ``CheckpointSaverListener`` hears
about each save; one whose ``after_save`` returns True stops the training.

Extensions (opt-in): ``async_save=True`` writes each checkpoint in the
background through ``Saver.save_async`` (the state is copied to host memory
first, at most one save is in flight, a failure is raised by the next save or
by ``end``, which also waits for the last save); listeners' ``after_save`` is
then called once the save is under way, not committed. With a
``PreemptionHook`` in the session, the hook saves at the step boundary after a
preemption signal, waits until that checkpoint is committed and requests a
stop; ``end`` then does not save the same step again.

Before each save the hook flushes and fsyncs every cached summary writer
(``SummaryWriterCache.flush_all``; the ``SummarySaverHook`` and
``StepCounterHook`` of ``MonitoredTrainingSession`` write through them), so
that every summary written before a checkpoint of step N (those of step N
and earlier, in ``MonitoredTrainingSession``'s hook order) is on disk when
that checkpoint commits: a process killed at any moment leaves TensorBoard
every summary up to the step it resumes from.

Differences from TF: the global step is resolved in ``after_create_session``
(a looprt program does not exist before the session); the saver is ``saver``,
else ``scaffold.saver``, else the program's default saver (a TF graph's
``SAVERS`` collection for a TF session); graph.pbtxt, the meta graph and the
checkpoint ``SessionLog`` event are not written (summaries are another
module's job); ``clock`` (seconds) can be injected for the timer.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from looprt.hooks.preemption import notice as preemption
from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.summary import SummaryWriterCache
from looprt.timer import SecondOrStepTimer
from looprt.training_util import get_global_step

__all__ = ["CheckpointSaverHook", "CheckpointSaverListener"]

logger = logging.getLogger(__name__)


class CheckpointSaverListener:
    """Told about every save of a ``CheckpointSaverHook``; subclass and override.

    Calls: ``begin()`` once; ``before_save`` and ``after_save`` around each
    save (``after_save`` returning True requests a stop); ``end`` after the
    final save.
    """

    def begin(self) -> None:
        pass

    def before_save(self, session: Any, global_step_value: Any) -> None:
        pass

    def after_save(self, session: Any, global_step_value: Any) -> bool | None:
        pass

    def end(self, session: Any, global_step_value: Any) -> None:
        pass


class CheckpointSaverHook(SessionRunHook):
    """Saves checkpoints every ``save_steps`` steps or ``save_secs`` seconds (give exactly one)."""

    #: Where the hook logs: this module's logger; the TF drop-in's hooks log on TF's "tensorflow".
    logger: logging.Logger = logger

    def __init__(
        self,
        checkpoint_dir: str,
        save_secs: float | None = None,
        save_steps: int | None = None,
        saver: Any = None,
        checkpoint_basename: str = "model.ckpt",
        scaffold: Any = None,
        listeners: Iterable[Any] | None = None,
        save_graph_def: bool = True,
        *,
        async_save: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.logger.info("Create CheckpointSaverHook.")
        if saver is not None and scaffold is not None:
            raise ValueError("You cannot provide both saver and scaffold.")
        if not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path, got {type(checkpoint_dir).__name__}")
        if save_steps is not None and (
            isinstance(save_steps, bool) or not isinstance(save_steps, numbers.Integral) or save_steps < 1
        ):
            raise ValueError(f"save_steps must be an int >= 1, got {save_steps!r}")
        if save_secs is not None and (
            isinstance(save_secs, bool)
            or not isinstance(save_secs, numbers.Real)
            or not 0 < float(save_secs) < math.inf  # NaN fails too
        ):
            raise ValueError(f"save_secs must be a finite number of seconds > 0, got {save_secs!r}")
        self._async_save = bool(async_save)
        self._saver = saver
        self._checkpoint_dir = checkpoint_dir
        self._save_path = os.path.join(checkpoint_dir, checkpoint_basename)
        self._scaffold = scaffold
        self._timer = SecondOrStepTimer(every_secs=save_secs, every_steps=save_steps, clock=clock)
        self._clock = clock
        self._due_step, self._due_time = self._timer.due()
        self._listeners = list(listeners or [])
        # TF's value: after every run the global step is re-read and the timer asked.
        self._steps_per_run = 1000000
        self._save_graph_def = save_graph_def
        self._global_step_tensor: Any = None

    def _set_steps_per_run(self, steps_per_run: int) -> None:
        self._steps_per_run = steps_per_run

    def begin(self) -> None:
        # TF's summary writer creates the directory here; savers (TF's among them) expect it.
        if "://" not in self._checkpoint_dir:  # a URL has no folders to make (see checkpoint.storage)
            os.makedirs(self._checkpoint_dir, exist_ok=True)
        for listener in self._listeners:
            listener.begin()

    def after_create_session(self, session: Any, coord: Any) -> None:
        self._global_step_tensor = get_global_step(session.graph)
        global_step = session.run(self._global_step_tensor)
        # TF writes graph.pbtxt and the meta graph here; summaries are another module's job.
        self._save(session, global_step)
        self._triggered(global_step)

    def _triggered(self, global_step: Any) -> None:
        """Record a save at ``global_step`` with the timer."""
        self._timer.update_last_triggered_step(global_step)
        self._due_step, self._due_time = self._timer.due()

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        try:
            if run_context.global_step is not None:
                return None
        except AttributeError:  # TF's own run context has none
            pass
        return SessionRunArgs(self._global_step_tensor)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if preemption.signum is not None:
            self._save_for_preemption(run_context)
            return
        try:
            stale_global_step = run_context.global_step
        except AttributeError:  # TF's own run context has none
            stale_global_step = None
        if stale_global_step is None:
            stale_global_step = run_values.results
        # Ask the timer only when it may trigger (SecondOrStepTimer.due): most runs end here.
        due_time = self._due_time
        if stale_global_step + self._steps_per_run < self._due_step and (
            due_time is None or self._clock() < due_time
        ):
            return
        if self._timer.should_trigger_for_step(stale_global_step + self._steps_per_run):
            # Get the real value after the train op.
            global_step = run_context.session.run(self._global_step_tensor)
            if self._timer.should_trigger_for_step(global_step):
                self._triggered(global_step)
                if self._save(run_context.session, global_step):
                    run_context.request_stop()

    def _save_for_preemption(self, run_context: SessionRunContext) -> None:
        """Save this step now, unless just saved; wait until it is committed; stop."""
        session = run_context.session
        global_step = session.run(self._global_step_tensor)
        if global_step != self._timer.last_triggered_step():
            self._triggered(global_step)
            self._save(session, global_step)
        self._wait(session)
        preemption.saved_step = int(global_step)
        run_context.request_stop()

    def end(self, session: Any) -> None:
        last_step = session.run(self._global_step_tensor)
        if last_step != self._timer.last_triggered_step():
            self._save(session, last_step)
        self._wait(session)
        if preemption.signum is not None:
            preemption.saved_step = int(last_step)
        for listener in self._listeners:
            listener.end(session, last_step)

    def _wait(self, session: Any) -> None:
        """Wait for an asynchronous save to be committed; raise its error."""
        if self._async_save:
            self.get_saver(session).wait_until_finished()

    def _save(self, session: Any, step: Any) -> bool:
        """Save for ``step``; whether a listener asked to stop."""
        self.logger.info("Calling checkpoint listeners before saving checkpoint %d...", step)
        for listener in self._listeners:
            listener.before_save(session, step)
        self.logger.info("Saving checkpoints for %d into %s.", step, self._save_path)
        saver = self.get_saver(session)
        SummaryWriterCache.flush_all()  # the summaries of this step and before commit no later than it
        if self._async_save:
            saver.save_async(session, self._save_path, global_step=step)
        else:
            saver.save(session, self._save_path, global_step=step, write_meta_graph=self._save_graph_def)
        # TF adds a SessionLog.CHECKPOINT event here; summaries are another module's job.
        self.logger.info("Calling checkpoint listeners after saving checkpoint %d...", step)
        should_stop = False
        for listener in self._listeners:
            if listener.after_save(session, step):
                self.logger.info(
                    "A CheckpointSaverListener requested that training be stopped. listener: %s", listener
                )
                should_stop = True
        return should_stop

    def get_saver(self, session: Any) -> Any:
        """The saver each save of this hook goes through; an extension point for subclasses.

        The default: ``saver``, else ``scaffold.saver``, else the program's
        default saver (a TF graph's one ``SAVERS`` collection entry), found on
        the first call and kept. A subclass may override this to wrap or
        replace the saver (the TF drop-in wraps a TF ``Saver`` so that it
        writes through looprt's checkpoint manager); call
        ``super().get_saver(session)`` for the default. The result must have
        ``save``, and ``save_async`` and ``wait_until_finished`` with
        ``async_save=True``.

        Raises:
            RuntimeError: no saver was given and none can be found.
            TypeError: ``async_save=True`` and the saver cannot save asynchronously.
        """
        saver = self._find_saver(session)
        if self._async_save and not hasattr(saver, "save_async"):
            raise TypeError(
                f"async_save=True needs a saver with save_async and wait_until_finished "
                f"(a looprt.checkpoint.Saver); got {saver!r}"
            )
        return saver

    def _find_saver(self, session: Any) -> Any:
        if self._saver is not None:
            return self._saver
        if self._scaffold is not None and self._scaffold.saver is not None:
            return self._scaffold.saver
        graph = session.graph
        backend = getattr(graph, "backend", None)
        if backend is not None:
            saver = backend.default_saver(graph)
            if saver is None:
                raise RuntimeError(
                    f"backend {backend.name!r} gives program {graph.name!r} no default saver; "
                    "provide a saver or scaffold."
                )
        else:  # a TF graph: TF's rule, its one saver in the SAVERS collection
            savers = graph.get_collection("savers")
            if not savers:
                raise RuntimeError(
                    "No items in collection savers. Please add a saver to the collection "
                    "or provide a saver or scaffold."
                )
            if len(savers) > 1:
                raise RuntimeError(
                    "More than one item in collection savers. Please indicate which one to use "
                    "by passing it to the constructor."
                )
            saver = savers[0]
        self._saver = saver
        return saver
