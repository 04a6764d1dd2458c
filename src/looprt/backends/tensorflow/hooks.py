"""Standard hooks where TF graph mode needs more than looprt's neutral hook.

* ``CheckpointSaverHook``: any TF ``Saver`` it is given or finds (the
  ``SAVERS`` collection, a TF scaffold's) writes through looprt's manager
  (``GraphSaver``); with ``save_graph_def`` it writes ``graph.pbtxt`` and the
  graph to the checkpoint directory's event file when the session is created,
  and a ``SessionLog`` CHECKPOINT event after each save, as TF's hook does.
* ``LoggingTensorHook``: tensor names (``"loss"`` or ``"loss:0"``) and tensors
  are resolved against the default graph in ``begin``, with TF's errors.

Every other standard hook is looprt's own, unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tensorflow as tf

import looprt.hooks.checkpoint_saver
import looprt.hooks.logging_tensor
from looprt import event_file
from looprt.backends.tensorflow.graph_saver import GraphSaver
from looprt.summary import SummaryWriterCache

__all__ = ["CheckpointSaverHook", "LoggingTensorHook"]


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
        self._graph_dir = checkpoint_dir if save_graph_def else None

    def after_create_session(self, session: Any, coord: Any) -> None:
        if self._graph_dir is not None:
            # TF does this here, not in begin: other hooks may still add ops in begin.
            graph_def = session.graph.as_graph_def(add_shapes=True)
            tf.io.write_graph(graph_def, self._graph_dir, "graph.pbtxt")
            _add_graph_event(SummaryWriterCache.get(self._graph_dir), graph_def)
        super().after_create_session(session, coord)

    def get_saver(self, session: Any) -> Any:
        """The saver looprt's hook finds, a TF ``Saver`` wrapped in its ``GraphSaver``."""
        return GraphSaver.wrap(super().get_saver(session))


def _add_graph_event(writer: Any, graph_def: Any) -> None:
    writer.add_event(event_file.event(graph_def=graph_def.SerializeToString()))


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
