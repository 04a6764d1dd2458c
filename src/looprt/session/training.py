"""``MonitoredTrainingSession``: a ``MonitoredSession`` with TF's default hooks.

Same arguments and defaults as ``tf.compat.v1.train.MonitoredTrainingSession``.
On the chief it restores or initializes the state and adds, in TF's order:
the ``chief_only_hooks``, a ``StepCounterHook`` and a ``SummarySaverHook``
(when there is a summary or checkpoint directory), a ``CheckpointSaverHook``
(when there is a checkpoint directory), then ``hooks``. A worker waits for
the chief and gets only ``hooks``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from looprt.session.creator import ChiefSessionCreator, WorkerSessionCreator
from looprt.session.monitored import MonitoredSession
from looprt.session.scaffold import Scaffold

__all__ = [
    "USE_DEFAULT",
    "MonitoredTrainingSession",
    "TrainingSessionParts",
    "default_parts",
    "training_session",
]


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


def _job_defaults(scaffold: Any) -> Mapping[str, Any]:
    """What the program's backend says of this process's job (see ``training_session_defaults``)."""
    try:
        program = scaffold.program if scaffold is not None else None
    except ValueError:  # no program given and no default program: the creator will say so
        return {}
    defaults = getattr(getattr(program, "backend", None), "training_session_defaults", None)
    return dict(defaults()) if defaults is not None else {}


def _with_storage_options(parts: TrainingSessionParts, scaffold: Any, options: Mapping[str, Any]) -> Any:
    """``scaffold``, or a copy of it whose default saver writes with ``options``."""
    if scaffold.saver is not None:
        return scaffold
    try:
        program = scaffold.program
    except ValueError:  # no program given and no default program: the creator will say so
        return scaffold
    saver = program.backend.default_saver(program, storage_options=options)
    return parts.scaffold(saver=saver, copy_from_scaffold=scaffold)


def MonitoredTrainingSession(
    master: str = "",
    is_chief: bool | None = None,
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
    storage_options: Mapping[str, Any] | None = None,
) -> MonitoredSession:
    """A ``MonitoredSession`` for training, with checkpoints, summaries and step counts.

    Summaries default to every 100 steps and checkpoints to every 600
    seconds; giving either period of a pair turns the other off, as in TF.
    ``max_recoveries`` and ``recovery_backoff_secs`` are looprt extensions
    (see ``MonitoredSession``).

    ``checkpoint_dir`` and ``summary_dir`` may be URLs (``s3://bucket/run``;
    see ``looprt.checkpoint.storage``). ``storage_options`` (a looprt
    extension: the fsspec filesystem's keyword arguments, such as
    ``{"client_kwargs": {"endpoint_url": ...}}`` for s3fs) go to the saver
    made for a scaffold without one (which also restores), and to the
    summary writers of ``summary_dir``; a saver given in the scaffold keeps
    its own.

    The program's backend may know this process's part in a distributed job
    (``training_session_defaults``; the torch backend under ``torchrun``):
    ``is_chief=None`` (the default) then takes its answer (True outside a
    job, as TF's default), the hooks it adds (the torch backend's
    ``StopSyncHook``) go after ``hooks``, and its chief-only hooks before
    ``chief_only_hooks``.
    """
    if scaffold is not None and not isinstance(scaffold, Scaffold):
        hint = " (write scaffold=looprt.Scaffold(program=prog))" if hasattr(scaffold, "steps") else ""
        raise TypeError(
            f"MonitoredTrainingSession scaffold must be a Scaffold, got {type(scaffold).__name__}{hint}"
        )
    return training_session(  # type: ignore[no-any-return]
        default_parts(),
        master,
        is_chief,
        checkpoint_dir,
        scaffold,
        hooks,
        chief_only_hooks,
        save_checkpoint_secs,
        save_summaries_steps,
        save_summaries_secs,
        config,
        stop_grace_period_secs,
        log_step_count_steps,
        max_wait_secs,
        save_checkpoint_steps,
        summary_dir,
        save_graph_def,
        max_recoveries=max_recoveries,
        recovery_backoff_secs=recovery_backoff_secs,
        job=_job_defaults(scaffold),
        storage_options=storage_options,
    )


@dataclasses.dataclass(frozen=True)
class TrainingSessionParts:
    """The classes ``training_session`` builds from; a backend's drop-in supplies its own."""

    monitored_session: Callable[..., Any]
    chief_session_creator: Callable[..., Any]
    worker_session_creator: Callable[..., Any]
    scaffold: Callable[..., Any]
    checkpoint_saver_hook: Callable[..., Any]
    step_counter_hook: Callable[..., Any]
    summary_saver_hook: Callable[..., Any]


def default_parts() -> TrainingSessionParts:
    """looprt's own sessions, creators, scaffold and hooks."""
    from looprt.hooks.checkpoint_saver import CheckpointSaverHook
    from looprt.hooks.step_counter import StepCounterHook
    from looprt.hooks.summary_saver import SummarySaverHook

    return TrainingSessionParts(
        MonitoredSession,
        ChiefSessionCreator,
        WorkerSessionCreator,
        Scaffold,
        CheckpointSaverHook,
        StepCounterHook,
        SummarySaverHook,
    )


def training_session(
    parts: TrainingSessionParts,
    master: str = "",
    is_chief: bool | None = True,
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
    job: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """``MonitoredTrainingSession`` built from ``parts``: TF's defaults and default hooks.

    ``job`` is what a backend says of this process's part in a distributed
    job (``training_session_defaults``): its ``"is_chief"`` answers
    ``is_chief=None`` (True without it), its ``"hooks"`` go after ``hooks`` and
    its ``"chief_only_hooks"`` before ``chief_only_hooks``. ``storage_options``:
    see ``MonitoredTrainingSession``.
    """
    job = job or {}
    if is_chief is None:
        is_chief = bool(job.get("is_chief", True))
    hooks = [*(hooks or []), *job.get("hooks", ())]
    chief_only_hooks = [*job.get("chief_only_hooks", ()), *(chief_only_hooks or [])]
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
    scaffold = scaffold or parts.scaffold()
    if storage_options is not None:
        scaffold = _with_storage_options(parts, scaffold, storage_options)

    def monitored(creator: Any, all_hooks: list[Any]) -> Any:
        return parts.monitored_session(
            creator,
            all_hooks,
            stop_grace_period_secs,
            max_recoveries=max_recoveries,
            recovery_backoff_secs=recovery_backoff_secs,
        )

    if not is_chief:
        worker = parts.worker_session_creator(
            scaffold=scaffold, master=master, config=config, max_wait_secs=max_wait_secs
        )
        return monitored(worker, list(hooks or []))

    all_hooks: list[Any] = list(chief_only_hooks or [])
    chief = parts.chief_session_creator(
        scaffold=scaffold, checkpoint_dir=checkpoint_dir, master=master, config=config
    )
    summary_dir = summary_dir or checkpoint_dir
    if summary_dir and storage_options is not None and "://" in summary_dir:
        from looprt.summary import SummaryWriterCache

        # The hooks find the writer of summary_dir in the cache; it remembers the options.
        SummaryWriterCache.get(summary_dir, storage_options)
    if summary_dir:
        if _positive(log_step_count_steps):
            all_hooks.append(
                parts.step_counter_hook(output_dir=summary_dir, every_n_steps=log_step_count_steps)
            )
        if _positive(save_summaries_steps) or _positive(save_summaries_secs):
            all_hooks.append(
                parts.summary_saver_hook(
                    scaffold=scaffold,
                    save_steps=save_summaries_steps,
                    save_secs=save_summaries_secs,
                    output_dir=summary_dir,
                )
            )
    if checkpoint_dir and (_positive(save_checkpoint_secs) or _positive(save_checkpoint_steps)):
        all_hooks.append(
            parts.checkpoint_saver_hook(
                checkpoint_dir,
                save_steps=save_checkpoint_steps,
                save_secs=save_checkpoint_secs,
                scaffold=scaffold,
                save_graph_def=save_graph_def,
            )
        )
    all_hooks.extend(hooks or [])
    return monitored(chief, all_hooks)
