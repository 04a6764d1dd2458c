"""``MonitoredTrainingSession`` bound to TF graph mode.

TF's arguments, defaults and default hooks, in TF's order: on the chief the
``chief_only_hooks``, a ``StepCounterHook`` and a ``SummarySaverHook`` (the
scaffold's summary op: the graph's merged summaries) when there is a summary
or checkpoint directory, a ``CheckpointSaverHook`` when there is a checkpoint
directory, then ``hooks``; a worker waits for the chief and gets only
``hooks``. The hooks are the drop-in's (``hooks.py``): looprt's, reading the
global step, writing graphs and logging as TF's, writing TensorBoard files
and TF-format checkpoints kept by looprt's manager.
"""

from __future__ import annotations

import inspect
from typing import Any

from looprt.backends.tensorflow.checkpoints import require_tf_filesystem
from looprt.backends.tensorflow.hooks import CheckpointSaverHook, StepCounterHook, SummarySaverHook
from looprt.backends.tensorflow.monitored_session import MonitoredSession
from looprt.backends.tensorflow.scaffold import Scaffold
from looprt.backends.tensorflow.session_creator import ChiefSessionCreator, WorkerSessionCreator
from looprt.session.training import USE_DEFAULT, TrainingSessionParts, training_session

__all__ = ["USE_DEFAULT", "MonitoredTrainingSession"]

_PARTS = TrainingSessionParts(
    MonitoredSession,
    ChiefSessionCreator,
    WorkerSessionCreator,
    Scaffold,
    CheckpointSaverHook,
    StepCounterHook,
    SummarySaverHook,
)


def MonitoredTrainingSession(*args: Any, **kwargs: Any) -> MonitoredSession:
    """``tf.compat.v1.train.MonitoredTrainingSession`` on looprt, for TF graphs.

    TF's arguments and defaults (see ``looprt.MonitoredTrainingSession``):
    summaries every 100 steps and checkpoints every 600 seconds by default;
    giving either period of a pair turns the other off, as in TF. A
    ``checkpoint_dir`` or ``summary_dir`` URL that TF's file system cannot
    reach raises ``UnimplementedError`` before anything is made.
    """
    arguments = _SIGNATURE.bind(_PARTS, *args, **kwargs).arguments
    for directory in (arguments.get("checkpoint_dir"), arguments.get("summary_dir")):
        if directory is not None:
            require_tf_filesystem(directory)
    return training_session(_PARTS, *args, **kwargs)  # type: ignore[no-any-return]


_SIGNATURE = inspect.signature(training_session)
