"""``MonitoredTrainingSession`` bound to TF graph mode.

TF's arguments, defaults and default hooks, in TF's order: on the chief the
``chief_only_hooks``, a ``StepCounterHook`` and a ``SummarySaverHook`` (the
scaffold's summary op: the graph's merged summaries) when there is a summary
or checkpoint directory, a ``CheckpointSaverHook`` when there is a checkpoint
directory, then ``hooks``; a worker waits for the chief and gets only
``hooks``. The hooks are looprt's, writing TensorBoard files and TF-format
checkpoints kept by looprt's manager.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from looprt.backends.tensorflow.hooks import CheckpointSaverHook
from looprt.backends.tensorflow.monitored_session import MonitoredSession
from looprt.backends.tensorflow.scaffold import Scaffold
from looprt.backends.tensorflow.session_creator import ChiefSessionCreator, WorkerSessionCreator
from looprt.hooks.step_counter import StepCounterHook
from looprt.hooks.summary_saver import SummarySaverHook
from looprt.training_session import USE_DEFAULT

__all__ = ["USE_DEFAULT", "MonitoredTrainingSession"]


def _periods(steps: Any, secs: Any, default_steps: Any, default_secs: Any) -> tuple[Any, Any]:
    """TF's rule: both defaulted -> the defaults; one given -> the other is None."""
    if steps is USE_DEFAULT and secs is USE_DEFAULT:
        return default_steps, default_secs
    return (None if steps is USE_DEFAULT else steps), (None if secs is USE_DEFAULT else secs)


def _positive(value: Any) -> bool:
    return bool(value) and value > 0


def MonitoredTrainingSession(
    master: str = "",
    is_chief: bool = True,
    checkpoint_dir: str | None = None,
    scaffold: Any = None,
    hooks: Iterable[Any] | None = None,
    chief_only_hooks: Iterable[Any] | None = None,
    save_checkpoint_secs: Any = USE_DEFAULT,
    save_summaries_steps: Any = USE_DEFAULT,
    save_summaries_secs: Any = USE_DEFAULT,
    config: Any = None,
    stop_grace_period_secs: float = 120,
    log_step_count_steps: int | None = 100,
    max_wait_secs: float = 7200,
    save_checkpoint_steps: Any = USE_DEFAULT,
    summary_dir: str | None = None,
    save_graph_def: bool = True,
    *,
    max_recoveries: int | None = None,
    recovery_backoff_secs: float = 0.0,
) -> MonitoredSession:
    """``tf.compat.v1.train.MonitoredTrainingSession`` on looprt, for TF graphs.

    Summaries default to every 100 steps and checkpoints to every 600
    seconds; giving either period of a pair turns the other off, as in TF.
    """
    save_summaries_steps, save_summaries_secs = _periods(save_summaries_steps, save_summaries_secs, 100, None)
    save_checkpoint_steps, save_checkpoint_secs = _periods(
        save_checkpoint_steps, save_checkpoint_secs, None, 600
    )
    scaffold = scaffold or Scaffold()

    def monitored(creator: Any, all_hooks: list[Any]) -> MonitoredSession:
        return MonitoredSession(
            creator,
            all_hooks,
            stop_grace_period_secs,
            max_recoveries=max_recoveries,
            recovery_backoff_secs=recovery_backoff_secs,
        )

    if not is_chief:
        worker = WorkerSessionCreator(
            scaffold=scaffold, master=master, config=config, max_wait_secs=max_wait_secs
        )
        return monitored(worker, list(hooks or []))

    all_hooks: list[Any] = list(chief_only_hooks or [])
    chief = ChiefSessionCreator(
        scaffold=scaffold, checkpoint_dir=checkpoint_dir, master=master, config=config
    )
    summary_dir = summary_dir or checkpoint_dir
    if summary_dir:
        if _positive(log_step_count_steps):
            all_hooks.append(StepCounterHook(output_dir=summary_dir, every_n_steps=log_step_count_steps))
        if _positive(save_summaries_steps) or _positive(save_summaries_secs):
            all_hooks.append(
                SummarySaverHook(
                    scaffold=scaffold,
                    save_steps=save_summaries_steps,
                    save_secs=save_summaries_secs,
                    output_dir=summary_dir,
                )
            )
    if checkpoint_dir and (_positive(save_checkpoint_secs) or _positive(save_checkpoint_steps)):
        all_hooks.append(
            CheckpointSaverHook(
                checkpoint_dir,
                save_steps=save_checkpoint_steps,
                save_secs=save_checkpoint_secs,
                scaffold=scaffold,
                save_graph_def=save_graph_def,
            )
        )
    all_hooks.extend(hooks or [])
    return monitored(chief, all_hooks)
