"""looprt: a training-loop runtime with TF's MonitoredSession contract, for any framework.

``import looprt`` imports no framework; each backend imports its own when used.
"""

from looprt.coordinator import Coordinator, LooperThread
from looprt.errors import (
    AbortedError,
    CancelledError,
    ClosedSessionError,
    DeadlineExceededError,
    FeedConflictError,
    FeedError,
    FetchError,
    HookRequestError,
    LooprtError,
    OpError,
    OutOfRangeError,
    StopRequestedError,
    UnavailableError,
)
from looprt.hooks import SessionRunArgs, SessionRunContext, SessionRunHook, SessionRunValues
from looprt.monitored_session import MonitoredSession, SingularMonitoredSession
from looprt.program import Input, Output, Program, State, Step, get_default_program, wrap
from looprt.program_session import ProgramSession
from looprt.run_options import RunMetadata, RunOptions
from looprt.scaffold import Scaffold
from looprt.session_creator import ChiefSessionCreator, SessionCreator, WorkerSessionCreator
from looprt.step_context import StepContext

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "CancelledError",
    "ChiefSessionCreator",
    "ClosedSessionError",
    "Coordinator",
    "DeadlineExceededError",
    "FeedConflictError",
    "FeedError",
    "FetchError",
    "HookRequestError",
    "Input",
    "LooperThread",
    "LooprtError",
    "MonitoredSession",
    "OpError",
    "OutOfRangeError",
    "Output",
    "Program",
    "ProgramSession",
    "RunMetadata",
    "RunOptions",
    "Scaffold",
    "SessionCreator",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunHook",
    "SessionRunValues",
    "SingularMonitoredSession",
    "State",
    "Step",
    "StepContext",
    "StopRequestedError",
    "UnavailableError",
    "WorkerSessionCreator",
    "__version__",
    "get_default_program",
    "wrap",
]
