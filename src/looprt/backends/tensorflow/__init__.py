"""TensorFlow for looprt: a drop-in for ``tf.compat.v1.train``, and TF2 eager programs.

Graph mode, with no edit to a script: ``python -m looprt.tf script.py
args...``, or ``install()`` before the script's training code, routes
``tf.compat.v1.train``'s MonitoredSession family (sessions, creators,
``Scaffold``, the standard hooks) to this module for the process, so
``tf.train.MonitoredTrainingSession(...)`` written inline runs on looprt's
sessions and hooks (see ``adoption.py``). Or use the names here directly::

    from looprt.backends import tensorflow as looprt_train

    with looprt_train.MonitoredTrainingSession(
            checkpoint_dir=ckpt_dir, hooks=[looprt_train.StopAtStepHook(last_step=1000)]) as sess:
        while not sess.should_stop():
            sess.run(train_op)

Everything here is bound to TF graph mode and the default graph: fetches and
feeds are graph elements, as ``tf.compat.v1.Session.run`` takes them;
``Scaffold`` is TF's (its saver writing TF-format checkpoints through looprt's
crash-safe manager); the global step is TF's global-step variable; TF's errors
trigger recovery and clean ends; TF's own ``SessionRunHook``s (TF's
``LoggingTensorHook``, ``ProfilerHook``, a user's subclass) run unchanged.
Build the graph inside ``with tf.Graph().as_default():`` in TF2.

Eager mode: ``TensorFlowBackend`` (``looprt.Program(backend="tensorflow")``)
runs ``tf.function`` steps over variables, Keras models and optimizers under
looprt's own sessions and hooks (see ``looprt.backends.tensorflow.eager``).

Every other name of ``tf.compat.v1.train`` (``GradientDescentOptimizer``,
``Saver``, ``get_or_create_global_step``, ...) is looked up there, so the
whole ``train`` namespace of a script can be swapped at once. Importing this
package imports TensorFlow; ``import looprt`` does not.
"""

from importlib.util import find_spec as _find_spec
from typing import Any as _Any

import tensorflow as _tf

from looprt.backends.tensorflow.adoption import install, installed, uninstall
from looprt.backends.tensorflow.eager import TensorFlowBackend
from looprt.backends.tensorflow.errors import EagerModeRequiredError, GraphModeRequiredError
from looprt.backends.tensorflow.graph_saver import GraphSaver
from looprt.backends.tensorflow.hooks import (
    CheckpointSaverHook,
    GlobalStepWaiterHook,
    LoggingTensorHook,
    NanTensorHook,
    ProfilerHook,
    StepCounterHook,
    StopAtStepHook,
    SummarySaverHook,
)
from looprt.backends.tensorflow.monitored_session import (
    Coordinator,
    MonitoredSession,
    SingularMonitoredSession,
)
from looprt.backends.tensorflow.object_saver import ObjectSaver
from looprt.backends.tensorflow.scaffold import Scaffold
from looprt.backends.tensorflow.session_creator import (
    ChiefSessionCreator,
    SessionCreator,
    WorkerSessionCreator,
)
from looprt.backends.tensorflow.session_manager import SessionManager
from looprt.backends.tensorflow.training_session import USE_DEFAULT, MonitoredTrainingSession
from looprt.coordinator import LooperThread
from looprt.evaluation.tf_dropin import checkpoints_iterator
from looprt.hooks import (
    CheckpointSaverListener,
    FeedFnHook,
    FinalOpsHook,
    NanLossDuringTrainingError,
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
    register_hook_base,
)
from looprt.session.step_context import StepContext
from looprt.timer import SecondOrStepTimer

# TF's hook base has no-op methods; looprt skips them as it skips its own.
register_hook_base(_tf.compat.v1.train.SessionRunHook)

# URL schemes TF's file layer serves and no fsspec implementation does (ram://, gs:// without
# gcsfs) are served to looprt's writers through tf.io.gfile (see gfile_fs), where fsspec is installed.
if _find_spec("fsspec") is not None:
    from looprt.backends.tensorflow.gfile_fs import register_tf_schemes as _register_tf_schemes

    _register_tf_schemes()

__all__ = [
    "USE_DEFAULT",
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "ChiefSessionCreator",
    "Coordinator",
    "EagerModeRequiredError",
    "FeedFnHook",
    "FinalOpsHook",
    "GlobalStepWaiterHook",
    "GraphModeRequiredError",
    "GraphSaver",
    "LoggingTensorHook",
    "LooperThread",
    "MonitoredSession",
    "MonitoredTrainingSession",
    "NanLossDuringTrainingError",
    "NanTensorHook",
    "ObjectSaver",
    "ProfilerHook",
    "Scaffold",
    "SecondOrStepTimer",
    "SessionCreator",
    "SessionManager",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunHook",
    "SessionRunValues",
    "SingularMonitoredSession",
    "StepContext",
    "StepCounterHook",
    "StopAtStepHook",
    "SummarySaverHook",
    "TensorFlowBackend",
    "WorkerSessionCreator",
    "checkpoints_iterator",
    "install",
    "installed",
    "uninstall",
]


def __getattr__(name: str) -> _Any:
    """Any other name of ``tf.compat.v1.train`` is TF's own (optimizers, ``Saver``, ...)."""
    if not name.startswith("__"):
        try:
            return getattr(_tf.compat.v1.train, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}, nor has tf.compat.v1.train")
