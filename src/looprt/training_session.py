"""``MonitoredTrainingSession``: a ``MonitoredSession`` with TF's default hooks.

Same arguments and defaults as ``tf.compat.v1.train.MonitoredTrainingSession``.
On the chief it restores or initializes the state and adds, in TF's order:
the ``chief_only_hooks``, a ``StepCounterHook`` and a ``SummarySaverHook``
(when there is a summary or checkpoint directory), a ``CheckpointSaverHook``
(when there is a checkpoint directory), then ``hooks``. A worker waits for
the chief and gets only ``hooks``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from looprt.monitored_session import MonitoredSession
from looprt.scaffold import Scaffold
from looprt.session_creator import ChiefSessionCreator, WorkerSessionCreator

__all__ = ["USE_DEFAULT", "MonitoredTrainingSession"]


class _UseDefault:
    __slots__ = ()

    def __repr__(self) -> str:
        return "USE_DEFAULT"


USE_DEFAULT: Any = _UseDefault()


def _resolve_periods(steps: Any, secs: Any, default_steps: Any, default_secs: Any) -> tuple[Any, Any]:
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
    scaffold: Scaffold | None = None,
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
    """A ``MonitoredSession`` for training, with checkpoints, summaries and step counts.

    Summaries default to every 100 steps and checkpoints to every 600
    seconds; giving either period of a pair turns the other off, as in TF.
    ``max_recoveries`` and ``recovery_backoff_secs`` are looprt extensions
    (see ``MonitoredSession``).
    """
    save_summaries_steps, save_summaries_secs = _resolve_periods(
        save_summaries_steps, save_summaries_secs, 100, None
    )
    save_checkpoint_steps, save_checkpoint_secs = _resolve_periods(
        save_checkpoint_steps, save_checkpoint_secs, None, 600
    )
    for period_name, period in (
        ("save_summaries_steps", save_summaries_steps),
        ("save_summaries_secs", save_summaries_secs),
        ("save_checkpoint_steps", save_checkpoint_steps),
        ("save_checkpoint_secs", save_checkpoint_secs),
    ):
        if period is not None and not isinstance(period, numbers.Real):
            raise ValueError(f"{period_name} must be a number or None, got {period!r}")
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

    from looprt.hooks.checkpoint_saver import CheckpointSaverHook
    from looprt.hooks.step_counter import StepCounterHook
    from looprt.hooks.summary_saver import SummarySaverHook

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
