"""Zero-edit adoption: route ``tf.compat.v1.train``'s MonitoredSession family to the drop-in.

``install()`` replaces, in ``tf.compat.v1.train`` (and in ``tf.train`` where
TF exposes the same names there, as TF 1.x does; TF 2.x's ``tf.train`` has
none of them), the names in ``ROUTED`` with the drop-in's, for this process.
A script that writes ``tf.compat.v1.train.MonitoredTrainingSession`` (or
``tf.train.X`` after ``import tensorflow.compat.v1 as tf``) inline then runs
on looprt without an edit; ``python -m looprt.tf script.py args...`` does it
for a whole script. Names a script bound before ``install()`` (``from
tensorflow.compat.v1.train import MonitoredSession``) keep TF's.

Left as TF's: the hook base and its argument types (``SessionRunHook``,
``SessionRunArgs``, ...; the drop-in runs TF's hooks and accepts TF's
types), ``CheckpointSaverListener``, ``Saver``, optimizers and every other
name.
"""

from __future__ import annotations

import threading
from typing import Any

import tensorflow as tf

import looprt.hooks
from looprt.backends.tensorflow import hooks, monitored_session, scaffold, session_creator, training_session

__all__ = ["ROUTED", "install", "installed", "uninstall"]

#: The names ``install()`` routes to the drop-in: the sessions, their creators and scaffold,
#: and the standard hooks (with the error one of them raises).
ROUTED = (
    "ChiefSessionCreator",
    "CheckpointSaverHook",
    "FeedFnHook",
    "FinalOpsHook",
    "GlobalStepWaiterHook",
    "LoggingTensorHook",
    "MonitoredSession",
    "MonitoredTrainingSession",
    "NanLossDuringTrainingError",
    "NanTensorHook",
    "ProfilerHook",
    "Scaffold",
    "SingularMonitoredSession",
    "StepCounterHook",
    "StopAtStepHook",
    "SummarySaverHook",
    "WorkerSessionCreator",
)

_lock = threading.Lock()
_saved: list[tuple[Any, str, Any]] = []  # (module, name, TF's value), to put back


def _modules() -> list[Any]:
    modules = [tf.compat.v1.train]
    if tf.train is not tf.compat.v1.train:
        modules.append(tf.train)
    return modules


def _dropin(name: str) -> Any:
    """The drop-in's ``name`` (what ``looprt.backends.tensorflow`` exports under it)."""
    for module in (hooks, monitored_session, training_session, session_creator, scaffold, looprt.hooks):
        if name in module.__all__:
            return getattr(module, name)
    raise AssertionError(f"the drop-in has no {name}")


def install() -> None:
    """Route ``tf.compat.v1.train``'s (and ``tf.train``'s) MonitoredSession family to the drop-in.

    Idempotent; ``uninstall()`` puts TF's back.
    """
    with _lock:
        if _saved:
            return
        for module in _modules():
            for name in ROUTED:
                if name in vars(module):
                    _saved.append((module, name, vars(module)[name]))
                    setattr(module, name, _dropin(name))


def uninstall() -> None:
    """Put TF's names back where ``install()`` replaced them."""
    with _lock:
        while _saved:
            module, name, value = _saved.pop()
            setattr(module, name, value)


def installed() -> bool:
    """Whether ``install()`` is in effect."""
    return bool(_saved)
