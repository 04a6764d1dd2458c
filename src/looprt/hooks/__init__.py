"""The hook contract and the standard hooks, one implementation for every backend."""

from looprt.hooks.checkpoint_saver import CheckpointSaverHook, CheckpointSaverListener
from looprt.hooks.dispatch import register_hook_base
from looprt.hooks.feed_fn import FeedFnHook
from looprt.hooks.final_ops import FinalOpsHook
from looprt.hooks.global_step_waiter import GlobalStepWaiterHook
from looprt.hooks.logging_tensor import LoggingTensorHook
from looprt.hooks.nan_tensor import NanLossDuringTrainingError, NanTensorHook
from looprt.hooks.preemption import PreemptionHook
from looprt.hooks.profiler import ProfilerHook, register_profiler
from looprt.hooks.progress import ProgressBarHook
from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.hooks.step_counter import StepCounterHook
from looprt.hooks.stop_at_step import StopAtStepHook
from looprt.hooks.summary_saver import SummarySaverHook

__all__ = [
    "CheckpointSaverHook",
    "CheckpointSaverListener",
    "FeedFnHook",
    "FinalOpsHook",
    "GlobalStepWaiterHook",
    "LoggingTensorHook",
    "NanLossDuringTrainingError",
    "NanTensorHook",
    "PreemptionHook",
    "ProfilerHook",
    "ProgressBarHook",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunHook",
    "SessionRunValues",
    "StepCounterHook",
    "StopAtStepHook",
    "SummarySaverHook",
    "register_hook_base",
    "register_profiler",
]
