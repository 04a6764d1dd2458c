"""Standard hooks where TF graph mode needs more than looprt's neutral hook.

Every hook here does what TF's does at the same point, so that what a user
sees (the global steps hooks act at, the graph in TensorBoard, the log lines)
is TF's:

* The hooks that read the global step (``StopAtStepHook``,
  ``CheckpointSaverHook``, ``StepCounterHook``, ``SummarySaverHook``,
  ``GlobalStepWaiterHook``, ``ProfilerHook``) create TF's global step read
  tensor in ``begin`` (``global_step/add``, as TF's hooks do) and fetch it:
  the value before the run's increment, with reference variables too.
* The first time a hook takes the summary writer of a directory, the graph
  and its meta graph are written to it, as TF's ``FileWriterCache`` does when
  it creates a writer; ``CheckpointSaverHook`` writes both again when the
  session is created (the meta graph with the saver's ``saver_def``), and,
  with ``save_graph_def``, ``graph.pbtxt``; and a ``SessionLog`` CHECKPOINT
  event after each save. Its saver (given, found in the ``SAVERS``
  collection or a TF scaffold's) writes through looprt's manager
  (``GraphSaver``).
* Every hook logs on TF's ``"tensorflow"`` logger, so
  ``tf.compat.v1.logging.set_verbosity`` governs its lines as TF's.
* ``StopAtStepHook``: TF's behaviour (``stop_at_start=False``): a session
  that starts at or past ``last_step`` runs one step before it stops.
* ``LoggingTensorHook``: tensor names (``"loss"`` or ``"loss:0"``) and tensors
  are resolved against the default graph in ``begin``, with TF's errors.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tensorflow as tf
from tensorflow.python.framework import meta_graph
from tensorflow.python.training import training_util

import looprt.hooks.checkpoint_saver
import looprt.hooks.global_step_waiter
import looprt.hooks.logging_tensor
import looprt.hooks.nan_tensor
import looprt.hooks.profiler
import looprt.hooks.step_counter
import looprt.hooks.stop_at_step
import looprt.hooks.summary_saver
from looprt.backends.tensorflow.graph_saver import GraphSaver
from looprt.summary import SummaryWriter, SummaryWriterCache

__all__ = [
    "TF_LOGGER",
    "CheckpointSaverHook",
    "GlobalStepWaiterHook",
    "LoggingTensorHook",
    "NanTensorHook",
    "ProfilerHook",
    "StepCounterHook",
    "StopAtStepHook",
    "SummarySaverHook",
    "cached_writer",
]

#: TF's logger, where every drop-in hook logs (``tf.compat.v1.logging`` configures it).
TF_LOGGER = tf.get_logger()

# The cached writers the graph has been written to: a writer is new to the drop-in once.
_graphed: weakref.WeakSet[SummaryWriter] = weakref.WeakSet()
_graphed_lock = threading.Lock()


def _add_graph(writer: Any, graph: Any, saver_def: Any = None) -> None:
    """TF's ``add_graph`` then ``add_meta_graph``: the graph (with shapes) and its meta graph."""
    graph_def = graph.as_graph_def(add_shapes=True)
    writer.add_event(tf.compat.v1.Event(graph_def=graph_def.SerializeToString()))
    meta = meta_graph.create_meta_graph_def(graph_def=graph_def, saver_def=saver_def, graph=graph)
    writer.add_event(tf.compat.v1.Event(meta_graph_def=meta.SerializeToString()))


def cached_writer(logdir: str) -> SummaryWriter:
    """The cached writer of ``logdir``; the first time it is handed out here, with the default graph.

    TF's ``FileWriterCache`` writes the graph and its meta graph when it
    creates a writer; this does the same for looprt's cache.
    """
    writer = SummaryWriterCache.get(logdir)
    with _graphed_lock:
        new = writer not in _graphed
        _graphed.add(writer)
    if new:
        _add_graph(writer, tf.compat.v1.get_default_graph())
    return writer


def _create_global_step_read() -> None:
    # What TF's hooks do in begin; looprt.get_global_step then finds (and the hook fetches) it.
    training_util._get_or_create_global_step_read()


class _CheckpointEvents(looprt.hooks.checkpoint_saver.CheckpointSaverListener):
    """Writes TF's ``SessionLog`` CHECKPOINT event after each save (placed before the user's listeners)."""

    def __init__(self, checkpoint_dir: str, save_path: str) -> None:
        self._checkpoint_dir = checkpoint_dir
        self._save_path = save_path

    def after_save(self, session: Any, global_step_value: Any) -> None:
        SummaryWriterCache.get(self._checkpoint_dir).add_session_log_checkpoint(
            self._save_path, global_step_value
        )


class CheckpointSaverHook(looprt.hooks.checkpoint_saver.CheckpointSaverHook):
    """looprt's ``CheckpointSaverHook``, saving TF graphs in TF's format through looprt's manager."""

    logger = TF_LOGGER

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        events = _CheckpointEvents(checkpoint_dir, os.path.join(checkpoint_dir, checkpoint_basename))
        super().__init__(
            checkpoint_dir,
            save_secs=save_secs,
            save_steps=save_steps,
            saver=GraphSaver.wrap(saver),
            checkpoint_basename=checkpoint_basename,
            scaffold=scaffold,
            listeners=[events, *(listeners or [])],
            save_graph_def=save_graph_def,
            clock=clock,
        )
        self._checkpoint_dir_of_graph = checkpoint_dir
        self._write_graph_def = save_graph_def

    def begin(self) -> None:
        cached_writer(self._checkpoint_dir_of_graph)
        _create_global_step_read()
        super().begin()

    def after_create_session(self, session: Any, coord: Any) -> None:
        # TF does this here, not in begin: other hooks may still add ops in begin.
        graph = tf.compat.v1.get_default_graph()
        if self._write_graph_def:
            graph_def = graph.as_graph_def(add_shapes=True)
            tf.io.write_graph(graph_def, self._checkpoint_dir_of_graph, "graph.pbtxt")
        saver = self.get_saver(session)
        _add_graph(
            SummaryWriterCache.get(self._checkpoint_dir_of_graph), graph, getattr(saver, "saver_def", None)
        )
        super().after_create_session(session, coord)

    def get_saver(self, session: Any) -> Any:
        """The saver looprt's hook finds, a TF ``Saver`` wrapped in its ``GraphSaver``."""
        return GraphSaver.wrap(super().get_saver(session))


def _as_graph_element(obj: Any) -> Any:
    """TF's rule: a tensor of the default graph, or a tensor name (``"x"`` means ``"x:0"``)."""
    graph = tf.compat.v1.get_default_graph()
    if not isinstance(obj, str):
        if not hasattr(obj, "graph") or obj.graph != graph:
            raise ValueError(
                f"Passed {obj} should have graph attribute that is equal to current graph {graph}."
            )
        return obj
    if ":" in obj:
        return graph.as_graph_element(obj)
    element = graph.as_graph_element(obj + ":0")
    try:
        graph.as_graph_element(obj + ":1")
    except (KeyError, ValueError):
        return element
    raise ValueError(f"Name {obj} is ambiguous, as this `Operation` has multiple outputs (at least 2).")


class LoggingTensorHook(looprt.hooks.logging_tensor.LoggingTensorHook):
    """looprt's ``LoggingTensorHook``; tensor names resolve in the default graph, as in TF."""

    logger = TF_LOGGER

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
        super().__init__(tensors, every_n_iter, every_n_secs, at_end, formatter, clock=clock)
        self._given_tensors = self.tensors

    def begin(self) -> None:
        super().begin()
        self.tensors = {tag: _as_graph_element(t) for tag, t in self._given_tensors.items()}


class StopAtStepHook(looprt.hooks.stop_at_step.StopAtStepHook):
    """TF's ``StopAtStepHook``: started at or past ``last_step``, one step still runs (as in TF)."""

    def __init__(
        self, num_steps: int | None = None, last_step: int | None = None, *, stop_at_start: bool = False
    ) -> None:
        super().__init__(num_steps, last_step, stop_at_start=stop_at_start)

    def begin(self) -> None:
        super().begin()
        _create_global_step_read()


class StepCounterHook(looprt.hooks.step_counter.StepCounterHook):
    """looprt's ``StepCounterHook`` reading the global step as TF's does, writing the graph as TF's cache."""

    logger = TF_LOGGER

    def __init__(
        self,
        every_n_steps: int | None = 100,
        every_n_secs: float | None = None,
        output_dir: str | None = None,
        summary_writer: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(every_n_steps, every_n_secs, output_dir, summary_writer, clock)
        self._graph_dir = output_dir if summary_writer is None else None

    def begin(self) -> None:
        super().begin()
        if self._graph_dir:
            cached_writer(self._graph_dir)
        _create_global_step_read()


class SummarySaverHook(looprt.hooks.summary_saver.SummarySaverHook):
    """looprt's ``SummarySaverHook`` reading the global step as TF's does, writing the graph as TF's cache."""

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
        super().__init__(save_steps, save_secs, output_dir, summary_writer, scaffold, summary_op, clock)
        self._graph_dir = output_dir if summary_writer is None else None

    def begin(self) -> None:
        super().begin()
        if self._graph_dir:
            cached_writer(self._graph_dir)
        _create_global_step_read()


class GlobalStepWaiterHook(looprt.hooks.global_step_waiter.GlobalStepWaiterHook):
    """looprt's ``GlobalStepWaiterHook`` reading the global step as TF's does."""

    logger = TF_LOGGER

    def begin(self) -> None:
        super().begin()
        _create_global_step_read()


class ProfilerHook(looprt.hooks.profiler.ProfilerHook):
    """looprt's ``ProfilerHook`` reading the global step as TF's does."""

    logger = TF_LOGGER

    def begin(self) -> None:
        super().begin()
        _create_global_step_read()


class NanTensorHook(looprt.hooks.nan_tensor.NanTensorHook):
    """looprt's ``NanTensorHook``, logging on TF's logger."""

    logger = TF_LOGGER
