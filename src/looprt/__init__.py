"""looprt: a training-loop runtime with TF's MonitoredSession contract, for any framework.

``import looprt`` imports no framework; each backend imports its own when used.
"""

import logging

from looprt import metrics
from looprt.checkpoint import CheckpointManager, CheckpointWarning, Saver, latest_checkpoint
from looprt.coordinator import Coordinator, LooperThread
from looprt.errors import (
    AbortedError,
    CancelledError,
    ClosedSessionError,
    DataLossError,
    DeadlineExceededError,
    FeedConflictError,
    FeedError,
    FetchError,
    HookRequestError,
    LooprtError,
    OpError,
    OutOfRangeError,
    StateUpdateError,
    StopRequestedError,
    TrainingEndedError,
    UnavailableError,
)
from looprt.evaluation import (
    MetricsHook,
    StopAfterNEvalsHook,
    SummaryAtEndHook,
    checkpoints_iterator,
    evaluate_once,
    evaluate_repeatedly,
)
from looprt.hooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    FeedFnHook,
    FinalOpsHook,
    GlobalStepWaiterHook,
    LoggingTensorHook,
    NanLossDuringTrainingError,
    NanTensorHook,
    PreemptionHook,
    ProfilerHook,
    ProgressBarHook,
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
    StepCounterHook,
    StopAtStepHook,
    SummarySaverHook,
)
from looprt.program import Input, Output, Program, State, Step, get_default_program, wrap
from looprt.program.session import ProgramSession
from looprt.session.creator import ChiefSessionCreator, SessionCreator, WorkerSessionCreator
from looprt.session.monitored import MonitoredSession, SingularMonitoredSession
from looprt.session.run_options import RunMetadata, RunOptions
from looprt.session.scaffold import Scaffold
from looprt.session.step_context import StepContext
from looprt.session.training import MonitoredTrainingSession
from looprt.summary import SummaryWriter, SummaryWriterCache
from looprt.timer import NeverTriggerTimer, SecondOrStepTimer
from looprt.training_util import get_global_step

__version__ = "0.1.0"

# Quiet by default: the application decides where looprt's log records go.
logging.getLogger("looprt").addHandler(logging.NullHandler())

__all__ = [
    "AbortedError",
    "CancelledError",
    "CheckpointManager",
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "CheckpointWarning",
    "ChiefSessionCreator",
    "ClosedSessionError",
    "Coordinator",
    "DataLossError",
    "DeadlineExceededError",
    "FeedConflictError",
    "FeedError",
    "FeedFnHook",
    "FetchError",
    "FinalOpsHook",
    "GlobalStepWaiterHook",
    "HookRequestError",
    "Input",
    "LoggingTensorHook",
    "LooperThread",
    "LooprtError",
    "MetricsHook",
    "MonitoredSession",
    "MonitoredTrainingSession",
    "NanLossDuringTrainingError",
    "NanTensorHook",
    "NeverTriggerTimer",
    "OpError",
    "OutOfRangeError",
    "Output",
    "PreemptionHook",
    "ProfilerHook",
    "Program",
    "ProgramSession",
    "ProgressBarHook",
    "RunMetadata",
    "RunOptions",
    "Saver",
    "Scaffold",
    "SecondOrStepTimer",
    "SessionCreator",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunHook",
    "SessionRunValues",
    "SingularMonitoredSession",
    "State",
    "StateUpdateError",
    "Step",
    "StepContext",
    "StepCounterHook",
    "StopAfterNEvalsHook",
    "StopAtStepHook",
    "StopRequestedError",
    "SummaryAtEndHook",
    "SummarySaverHook",
    "SummaryWriter",
    "SummaryWriterCache",
    "TrainingEndedError",
    "UnavailableError",
    "WorkerSessionCreator",
    "__version__",
    "checkpoints_iterator",
    "evaluate_once",
    "evaluate_repeatedly",
    "get_default_program",
    "get_global_step",
    "latest_checkpoint",
    "metrics",
    "wrap",
]
