"""The TF drop-in's ``checkpoints_iterator``: looprt's iterator, yielding TF checkpoint prefixes.

``from looprt.backends import tensorflow as train`` exports this one: it
yields what ``tf.compat.v1.train.checkpoints_iterator`` yields over the same
directory (``<dir>/model.ckpt-100/model.ckpt-100``, the TF prefix inside each
looprt checkpoint folder), which TF's own ``Saver.restore``, readers and the
drop-in's sessions all take, with looprt's guarantees: every committed
checkpoint once, in order, verified first. Imports TensorFlow; ``import
looprt`` never imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from looprt.backends.tensorflow.checkpoints import tf_prefix
from looprt.evaluation import iterator

__all__ = ["checkpoints_iterator"]


def checkpoints_iterator(
    checkpoint_dir: str,
    min_interval_secs: float = 0,
    timeout: float | None = None,
    timeout_fn: Callable[[], bool] | None = None,
    *,
    latest_only: bool = False,
    poll_secs: float = 1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """``looprt.checkpoints_iterator`` (same arguments), yielding the TF prefix of each checkpoint."""
    for folder in iterator.checkpoints_iterator(
        checkpoint_dir,
        min_interval_secs,
        timeout,
        timeout_fn,
        latest_only=latest_only,
        poll_secs=poll_secs,
        clock=clock,
        sleep=sleep,
    ):
        yield tf_prefix(folder)
