"""Finding the global step of whatever a session runs.

Hooks are written once for every backend: they look up the global step from
the raw session's ``graph`` — a looprt ``Program`` (its ``global_step``) or a
TF graph — in ``after_create_session``, and fetch it like any other leaf.

On a TF graph the fetchable is what TF's own hooks fetch: the global step's
read tensor (``global_step/add:0``, which TF's hooks, and the drop-in's,
create in ``begin``) when the graph has one. It holds the value before the
run's increment for reference variables too, where fetching the variable in
the run that increments it gives the new value. Without a read tensor it is
the variable (``tf.compat.v1.train.get_global_step``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_global_step", "global_step_name"]

# TF's collection of the global step's read tensor (training_util.GLOBAL_STEP_READ_KEY).
_TF_GLOBAL_STEP_READ_KEY = "global_step_read_op_cache"


def get_global_step(graph: Any) -> Any:
    """The global step fetchable of ``graph``; ``RuntimeError`` if it has none."""
    step = getattr(graph, "global_step", None)
    if step is None and type(graph).__module__.startswith("tensorflow"):
        import tensorflow as tf

        reads = graph.get_collection(_TF_GLOBAL_STEP_READ_KEY)
        step = reads[0] if len(reads) == 1 else tf.compat.v1.train.get_global_step(graph)
    if step is None:
        raise RuntimeError(
            f"Global step should be created to use this hook; {graph!r} has none "
            "(a looprt Program always has one; in TF call tf.compat.v1.train.get_or_create_global_step())"
        )
    return step


def global_step_name(graph: Any) -> str:
    """The global step's name: a TF variable's op name (``"global_step"``), a program handle's name."""
    step = getattr(graph, "global_step", None)
    if step is None and type(graph).__module__.startswith("tensorflow"):
        import tensorflow as tf

        step = tf.compat.v1.train.get_global_step(graph)
    op = getattr(step, "op", None)
    return getattr(op, "name", None) or getattr(step, "name", None) or "global_step"
