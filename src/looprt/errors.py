"""Every error looprt raises, in one place.

Two families:

* ``OpError`` and its subclasses mirror ``tf.errors``: they are what a backend
  raises while running a step (``AbortedError`` and ``UnavailableError``
  trigger recovery in ``MonitoredSession``; ``OutOfRangeError`` means the
  input is exhausted and ends a ``with`` block cleanly).
* Usage errors (a bad fetch, a conflicting feed, a run after close) are
  ``LooprtError`` subclasses that are *also* instances of the builtin that
  ``tf.compat.v1.train`` raised in the same situation, so code that catches
  ``TypeError`` or ``RuntimeError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "ClosedSessionError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FeedConflictError",
    "FeedError",
    "FetchError",
    "HookRequestError",
    "InternalError",
    "InvalidArgumentError",
    "LooprtError",
    "NotFoundError",
    "OpError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "StateUpdateError",
    "StepFnSignatureError",
    "StopRequestedError",
    "TrainingEndedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
]


class LooprtError(Exception):
    """Base class of every error raised by looprt itself."""


class OpError(LooprtError):
    """A step failed while running; mirrors ``tf.errors.OpError``.

    Accepts both ``OpError("message")`` and TF's three-argument form
    ``OpError(node_def, op, message)``, so code migrated from TF that raises
    these errors keeps working.
    """

    error_code: int = 2

    def __init__(self, *args: Any) -> None:
        if len(args) == 3:
            node_def, op, message = args
        elif len(args) <= 1:
            node_def, op = None, None
            message = args[0] if args else ""
        else:
            raise TypeError(
                f"{type(self).__name__} takes (message) or (node_def, op, message), "
                f"got {len(args)} arguments"
            )
        super().__init__(message)
        self.node_def = node_def
        self.op = op
        self.message = str(message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node_def, self.op, self.message))


class CancelledError(OpError):
    error_code = 1


class UnknownError(OpError):
    error_code = 2


class InvalidArgumentError(OpError, ValueError):
    error_code = 3


class DeadlineExceededError(OpError, TimeoutError):
    """Raised when waiting timed out, e.g. a worker waiting for its chief."""

    error_code = 4


class NotFoundError(OpError):
    error_code = 5


class AlreadyExistsError(OpError):
    error_code = 6


class PermissionDeniedError(OpError, PermissionError):
    error_code = 7


class ResourceExhaustedError(OpError):
    error_code = 8


class FailedPreconditionError(OpError):
    error_code = 9


class AbortedError(OpError):
    """The operation was aborted (e.g. a peer restarted); the session recovers."""

    error_code = 10


class OutOfRangeError(OpError):
    """The input is exhausted; leaving a ``with`` block on it is a clean end."""

    error_code = 11


class UnimplementedError(OpError, NotImplementedError):
    error_code = 12


class InternalError(OpError):
    error_code = 13


class UnavailableError(OpError):
    """A peer or service is unavailable; the session recovers."""

    error_code = 14


class DataLossError(OpError):
    error_code = 15


class FetchError(LooprtError, TypeError):
    """A fetch is not something the session can evaluate; names its path."""


class FeedError(LooprtError, TypeError):
    """A feed key names nothing feedable; names the key."""


class FeedConflictError(LooprtError, RuntimeError):
    """Two requesters feed the same key in one run; names the keys."""


class HookRequestError(LooprtError, TypeError, AttributeError):
    """A hook's ``before_run`` returned something other than ``SessionRunArgs`` or None."""


class StopRequestedError(LooprtError, RuntimeError):
    """``run`` was called after a stop was requested."""


class ClosedSessionError(LooprtError, RuntimeError, AttributeError):
    """The session was used after it was closed (TF raised AttributeError here)."""


class StepFnSignatureError(LooprtError, ValueError):
    """``run_step_fn`` was given a function with the wrong arguments."""


class StateUpdateError(LooprtError, TypeError):
    """A step's update of its state would not reach the state; names the step, the state, the fix."""


class TrainingEndedError(LooprtError, RuntimeError):
    """A fetch in ``end()`` would run a step that advances the global step past the end of training."""
