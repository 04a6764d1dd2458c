"""TensorFlow's errors as looprt sees them, and the mode checks.

Graph mode (the drop-in) keeps TF's own error classes: a raw ``tf.Session``
raises them, TF's hooks and user code catch them, so the drop-in sessions
recover on ``tf.errors.AbortedError`` / ``UnavailableError`` and end a
``with`` block cleanly on ``tf.errors.OutOfRangeError``, besides looprt's
own. Eager programs run under looprt's sessions, whose layers know looprt's
errors only, so ``translate_error`` maps every ``tf.errors.OpError`` to the
looprt class of the same error code.
"""

from __future__ import annotations

import tensorflow as tf

import looprt.errors as lerrors

__all__ = [
    "CLEAN_END_ERRORS",
    "RECOVERABLE_ERRORS",
    "EagerModeRequiredError",
    "GraphModeRequiredError",
    "require_eager_mode",
    "require_graph_mode",
    "translate_error",
]

RECOVERABLE_ERRORS: tuple[type[BaseException], ...] = (
    lerrors.AbortedError,
    lerrors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.UnavailableError,
)
CLEAN_END_ERRORS: tuple[type[BaseException], ...] = (
    lerrors.OutOfRangeError,
    StopIteration,
    tf.errors.OutOfRangeError,
)

_BY_CODE: dict[int, type[lerrors.OpError]] = {
    cls.error_code: cls
    for cls in (
        lerrors.CancelledError,
        lerrors.UnknownError,
        lerrors.InvalidArgumentError,
        lerrors.DeadlineExceededError,
        lerrors.NotFoundError,
        lerrors.AlreadyExistsError,
        lerrors.PermissionDeniedError,
        lerrors.ResourceExhaustedError,
        lerrors.FailedPreconditionError,
        lerrors.AbortedError,
        lerrors.OutOfRangeError,
        lerrors.UnimplementedError,
        lerrors.InternalError,
        lerrors.UnavailableError,
        lerrors.DataLossError,
    )
}


class GraphModeRequiredError(lerrors.LooprtError, RuntimeError):
    """A graph-mode API of the drop-in was used while TF executes eagerly."""


class EagerModeRequiredError(lerrors.LooprtError, RuntimeError):
    """The eager backend was used while a TF graph is being built."""


def require_graph_mode(what: str) -> None:
    """Raise ``GraphModeRequiredError`` naming ``what`` unless a TF graph is being built."""
    if tf.executing_eagerly():
        raise GraphModeRequiredError(
            f"{what} runs a TF graph, but TensorFlow is executing eagerly. Build the graph and "
            "run the session inside `with tf.Graph().as_default():` (or call "
            "tf.compat.v1.disable_eager_execution() at program start). For TF2 eager code "
            "(tf.function, Keras), use looprt.Program(backend='tensorflow') with looprt's sessions."
        )


def require_eager_mode(what: str) -> None:
    """Raise ``EagerModeRequiredError`` naming ``what`` inside a graph context."""
    if not tf.executing_eagerly():
        raise EagerModeRequiredError(
            f"{what} runs TF2 eager programs, but a TF graph is being built here (inside "
            "`with tf.Graph().as_default():` or with eager execution disabled). Create the "
            "program outside the graph context, or use the graph-mode drop-in: "
            "`from looprt.backends import tensorflow as train`."
        )


def translate_error(error: BaseException) -> BaseException | None:
    """The looprt error of the same code for a ``tf.errors.OpError``; None for anything else."""
    if not isinstance(error, tf.errors.OpError):
        return None
    cls = _BY_CODE.get(int(error.error_code), lerrors.UnknownError)
    return cls(error.node_def, error.op, error.message)
