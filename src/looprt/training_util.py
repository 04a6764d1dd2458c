"""Finding the global step of whatever a session runs.

Hooks are written once for every backend: they look up the global step from
the raw session's ``graph`` — a looprt ``Program`` (its ``global_step``) or a
TF graph (``tf.compat.v1.train.get_global_step``) — in
``after_create_session``, and fetch it like any other leaf.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_global_step"]


def get_global_step(graph: Any) -> Any:
    """The global step fetchable of ``graph``; ``RuntimeError`` if it has none."""
    step = getattr(graph, "global_step", None)
    if step is None and type(graph).__module__.startswith("tensorflow"):
        import tensorflow as tf

        step = tf.compat.v1.train.get_global_step(graph)
    if step is None:
        raise RuntimeError(
            f"Global step should be created to use this hook; {graph!r} has none "
            "(a looprt Program always has one; in TF call tf.compat.v1.train.get_or_create_global_step())"
        )
    return step
