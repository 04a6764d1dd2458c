"""``Scaffold``: TF's ``tf.compat.v1.train.Scaffold``, with checkpoints kept by looprt.

``finalize()`` is TF's own: it takes the init, ready, ready-for-local-init,
local-init and summary ops from the graph's collections or builds TF's
defaults (the summary op is ``tf.compat.v1.summary.merge_all()``), takes the
saver from the ``SAVERS`` collection or builds TF's default
``Saver(sharded=True, allow_empty=True)``, and finalizes the default graph.
The one change is ``saver``: it is the ``GraphSaver`` of TF's saver, which
writes TF-format checkpoints through looprt's crash-safe manager. It is a
subclass, so TF code that checks ``isinstance(s, tf.compat.v1.train.Scaffold)``
(or copies one with ``copy_from_scaffold``) works either way.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from looprt.backends.tensorflow.errors import require_graph_mode
from looprt.backends.tensorflow.graph_saver import GraphSaver

__all__ = ["Scaffold"]


class Scaffold(tf.compat.v1.train.Scaffold):  # type: ignore[misc]
    """TF's ``Scaffold``; its ``saver`` writes through looprt's checkpoint manager.

    ``finalize()`` raises ``GraphModeRequiredError`` (a ``RuntimeError``)
    when TF executes eagerly, where TF fails with an unrelated summary error.
    """

    def finalize(self) -> Scaffold:
        require_graph_mode("Scaffold.finalize()")
        super().finalize()
        return self

    @property
    def saver(self) -> Any:
        """The ``GraphSaver`` of the TF saver (None before ``finalize`` if none was given)."""
        return GraphSaver.wrap(super().saver)
