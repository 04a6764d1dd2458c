"""Chief and workers on ``torch.distributed``: the state broadcast, and stopping together.

In a job of several processes (``torchrun``, after
``torch.distributed.init_process_group``), rank 0 is the chief. It restores
or initializes the state, then broadcasts it (``send_state``); the other
ranks wait for it up to ``max_wait_secs`` (``receive_state``). Every
collective of looprt's goes through a Gloo group on the CPU (the default
group when it is Gloo, else one made on first use), so a NCCL job's GPUs are
never synchronized for it.

``StopSyncHook`` makes every rank stop at the same step: after each run, the
ranks all-reduce "does any rank want to stop?", so none is left waiting in a
collective for a rank that has left. ``MonitoredTrainingSession`` here is
``looprt.MonitoredTrainingSession`` with the chief decided by rank and that
hook added last.

Checkpoints hold every rank's random generator states. When the chief saves
after a run, its save makes that step's collective first, with a "saving"
flag; the workers, in ``StopSyncHook``, answer by sending their states
(``gather_rng_states``), which go into the checkpoint before it is written;
then the ranks agree on stopping once more. When the ranks agree to stop,
each sends its states once more, for the save in ``end``. On a restore each
worker gets its own states with the chief's broadcast, and a save at the
creation of that session holds them again. Other saves hold the chief's
states only: at the creation of a session that initialized the state (or
restored a checkpoint without the workers' states), and in the ``end`` of a
session that ended with no agreed stop (its input ran out, the loop ended on
its own count, or a ``step_fn`` asked to stop).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from looprt.backends.torch import rng
from looprt.backends.torch.errors import translate
from looprt.errors import DeadlineExceededError
from looprt.hooks.session_run_hook import SessionRunContext, SessionRunHook, SessionRunValues

__all__ = [
    "GatherWindowHook",
    "MonitoredTrainingSession",
    "StopSyncHook",
    "close_save_window",
    "gather_rng_states",
    "init_process_group",
    "is_chief",
    "is_distributed",
    "job_defaults",
    "rank",
    "receive_state",
    "send_state",
]

CHIEF_RANK = 0

# The Gloo group of looprt's collectives, by the default group it was made for.
_control: dict[str, tuple[Any, Any]] = {}


def init_process_group(backend: str | None = None, **kwargs: Any) -> None:
    """``torch.distributed.init_process_group`` for a ``torchrun`` job that may be restarted.

    Under ``torchrun``, the group's rendezvous goes through the agent's store,
    which (in torch 2.x, 2.13 at least) outlives a ``--max-restarts``
    restart: the restarted workers would read the dead ones' addresses and
    fail to connect. Here the keys are prefixed with the restart count.
    Elsewhere (no agent store, or ``store=`` given) this is
    ``torch.distributed.init_process_group(backend, **kwargs)``.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and "store" not in kwargs:
        timeout = kwargs.get("timeout") or datetime.timedelta(minutes=30)
        agent_store = dist.TCPStore(  # type: ignore[attr-defined]  # public, but not in torch's stubs
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
        )
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        kwargs.update(
            store=dist.PrefixStore(f"looprt/attempt-{restart}", agent_store),  # type: ignore[attr-defined]
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
        )
    dist.init_process_group(backend, **kwargs)


def is_distributed() -> bool:
    """Whether this process is one of several in an initialized ``torch.distributed`` job."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: 0 outside a distributed job."""
    return dist.get_rank() if is_distributed() else 0


def is_chief() -> bool:
    """Whether this process is the chief: rank 0, or the only process."""
    return not is_distributed() or dist.get_rank() == CHIEF_RANK


def _control_group() -> Any:
    """The Gloo group looprt's collectives use (None: the default group, when it is Gloo)."""
    world = dist.group.WORLD
    made = _control.get("group")
    if made is None or made[0] is not world:
        backend = str(dist.get_backend())
        # "gloo", or a default group that sends CPU tensors through Gloo ("cpu:gloo,cuda:nccl").
        cpu_is_gloo = backend == "gloo" or "cpu:gloo" in backend
        made = _control["group"] = (world, None if cpu_is_gloo else dist.new_group(backend="gloo"))
    return made[1]


def _note_lost_peer(error: RuntimeError, doing: str) -> None:
    """Add a note to ``error`` when it means a lost peer; it is raised untranslated on purpose.

    A process group that lost a peer cannot be used again in this process: a
    recoverable error here would make ``MonitoredSession`` re-create the
    session against it forever. Raised as it is, it ends the process, and
    ``torchrun --max-restarts`` restarts the job from the latest checkpoint.
    """
    if translate(error) is not None and hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(
            f"while {doing}: the distributed job lost a peer; restart it "
            "(torchrun --max-restarts) to resume from the latest checkpoint"
        )


def send_state(state: Any) -> None:
    """On the chief: tell the workers the state is ready and broadcast ``state`` to them."""
    rank = dist.get_rank()
    if rank != CHIEF_RANK:
        raise ValueError(
            f"rank {rank} initialized the state as chief; in a torch.distributed job the chief "
            f"is rank {CHIEF_RANK} (pass is_chief=torch.distributed.get_rank() == 0)"
        )
    group = _control_group()
    try:
        dist.broadcast(torch.ones(1, dtype=torch.int64), src=CHIEF_RANK, group=group)
        dist.broadcast_object_list([state], src=CHIEF_RANK, group=group)
    except RuntimeError as error:
        _note_lost_peer(error, "broadcasting the state to the workers")
        raise


def receive_state(timeout: float | None, name: str) -> Any:
    """On a worker: wait up to ``timeout`` seconds for the chief, then receive its state.

    ``DeadlineExceededError`` if the chief has not sent it in time. The state
    travels pickled (``broadcast_object_list``): the ranks of a job trust
    each other.
    """
    group = _control_group()
    flag = torch.zeros(1, dtype=torch.int64)
    try:
        work = dist.broadcast(flag, src=CHIEF_RANK, group=group, async_op=True)
        if timeout is None:
            work.wait()
        else:
            work.wait(timeout=datetime.timedelta(seconds=timeout))
    except RuntimeError as error:
        if timeout is None or "timed out" not in str(error).lower():
            _note_lost_peer(error, "waiting for the chief")
            raise
        raise DeadlineExceededError(
            f"Session was not ready after waiting {timeout:g} secs: the chief (rank {CHIEF_RANK}) "
            f"did not initialize program {name!r}. Check the chief's log, or raise max_wait_secs."
        ) from None
    received: list[Any] = [None]
    try:
        dist.broadcast_object_list(received, src=CHIEF_RANK, group=group)
    except RuntimeError as error:
        _note_lost_peer(error, "receiving the state from the chief")
        raise
    return received[0]


class _SaveWindow:
    """On the chief: whether a save now would find the workers in ``StopSyncHook``'s collective.

    Open from the first chief hook's ``after_run`` of a run that succeeded
    (``GatherWindowHook``) until ``StopSyncHook.after_run`` ends; closed
    everywhere else (session creation, ``end``). ``early`` says that a save
    in this window already made the step's first collective and gathered
    ``rng_ranks``. ``known``: every rank's states as they are now, when
    known with no collective: those a restore gave each rank (until a run),
    or those each rank sent when the ranks agreed to stop (for the save in
    ``end``).
    """

    __slots__ = ("open", "early", "rng_ranks", "known")

    def __init__(self) -> None:
        self.open = False
        self.early = False
        self.rng_ranks: dict[int, Any] | None = None
        self.known: dict[int, Any] | None = None

    def close(self) -> None:
        self.open = self.early = False
        self.rng_ranks = None


_window = _SaveWindow()


def _collective(doing: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a collective; a lost peer becomes ``UnavailableError`` / ``AbortedError``."""
    try:
        return call(*args, **kwargs)
    except RuntimeError as error:
        translated = translate(error)
        if translated is None:
            raise
        if hasattr(translated, "add_note"):
            translated.add_note(f"while {doing}")
        raise translated from error


def close_save_window(known: dict[int, Any] | None = None) -> None:
    """Close the window of ``gather_rng_states`` (a session is being created).

    ``known``: every rank's states as a restore just set them, or None.
    """
    _window.close()
    _window.known = known


def gather_rng_states() -> dict[int, Any] | None:
    """On the chief, while saving: every rank's generator states, by rank.

    After a run, the chief's save makes the step's first collective, with
    its "saving" flag set, which the workers' ``StopSyncHook`` answers with
    their states. Outside a run, the states known without a collective:
    those a restore gave each rank (a save at the creation of the session),
    or those every rank sent when the ranks agreed to stop (a save in
    ``end``). None outside a distributed job, on a worker, and when no
    states are known (a save at the creation of a session that initialized
    the state, or in the ``end`` of one that ended with no agreed stop).
    """
    if not is_distributed() or not is_chief():
        return None
    if not _window.open:
        return _window.known
    if not _window.early:
        group = _control_group()
        flag = torch.tensor([0, 1], dtype=torch.int64)
        _collective("telling the workers a checkpoint is being saved", dist.all_reduce, flag,
                    op=dist.ReduceOp.MAX, group=group)
        states: list[Any] = [None] * dist.get_world_size()
        _collective("gathering the workers' random generator states", dist.gather_object,
                    rng.capture(), states, dst=CHIEF_RANK, group=group)
        _window.early = True
        _window.rng_ranks = dict(enumerate(states))
    return _window.rng_ranks


class GatherWindowHook(SessionRunHook):
    """The chief's first hook in a distributed job: opens the window for ``gather_rng_states``.

    ``MonitoredTrainingSession`` puts it before every other hook of the
    chief (with ``StopSyncHook`` last), so that a checkpoint saved after a
    run holds every rank's random generator states.
    """

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        _window.open = is_distributed()
        _window.known = None  # a step ran: every rank's generators moved on


class StopSyncHook(SessionRunHook):
    """Stops every rank at the same step: after each run, any rank's stop is every rank's.

    Put it after every other hook (``MonitoredTrainingSession`` here does), so
    it sees their stop requests. A stop counts when a hook asked for one in
    this run or the coordinator was asked (a thread failed or stopped). A
    lost peer raises ``UnavailableError`` / ``AbortedError``. Does nothing
    outside a distributed job.

    The same collective tells the workers when the chief saved a checkpoint
    after this run (``gather_rng_states``): they then send the chief their
    random generator states, and the ranks agree on stopping once more. When
    the ranks agree to stop, every rank sends the chief its states once more,
    for the checkpoint saved in ``end``.
    """

    def __init__(self) -> None:
        self._coord: Any = None
        self._flags = torch.zeros(2, dtype=torch.int64)  # [stop, the chief is saving]
        self._final = torch.zeros(1, dtype=torch.int64)
        self._group: Any = None
        self._active = False

    def after_create_session(self, session: Any, coord: Any) -> None:
        _window.close()
        self._coord = coord
        self._active = is_distributed()
        if self._active:
            self._group = _control_group()

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if not self._active:
            return
        _window.known = None  # a step ran: every rank's generators moved on
        coord = self._coord
        stop = int(run_context.stop_requested or (coord is not None and coord.should_stop()))
        try:
            if _window.early:
                # The chief's save already made this step's first collective and the gather.
                stop = self._agree(stop)
            else:
                flags = self._flags
                flags[0], flags[1] = stop, 0
                _collective("agreeing on a stop", dist.all_reduce, flags, op=dist.ReduceOp.MAX,
                            group=self._group)
                if flags[1]:  # a worker: the chief is saving; send it this rank's states
                    _collective("sending the random generator states to the chief", dist.gather_object,
                                rng.capture(), None, dst=CHIEF_RANK, group=self._group)
                    stop = self._agree(stop)
                else:
                    stop = int(flags[0])
        finally:
            _window.close()
        if stop:
            # Every rank knows the stop was agreed, so every rank joins this last gather.
            chief = is_chief()
            states: list[Any] | None = [None] * dist.get_world_size() if chief else None
            _collective("sending the random generator states to the chief at the stop", dist.gather_object,
                        rng.capture(), states, dst=CHIEF_RANK, group=self._group)
            if states is not None:
                _window.known = dict(enumerate(states))
            run_context.request_stop()

    def _agree(self, stop: int) -> int:
        final = self._final
        final[0] = stop
        _collective("agreeing on a stop", dist.all_reduce, final, op=dist.ReduceOp.MAX, group=self._group)
        return int(final[0])

    def end(self, session: Any) -> None:
        _window.close()


def job_defaults() -> dict[str, Any]:
    """``is_chief`` (rank 0) and a ``StopSyncHook`` in a distributed job; nothing outside one."""
    if not is_distributed():
        return {}
    return {"is_chief": is_chief(), "chief_only_hooks": [GatherWindowHook()], "hooks": [StopSyncHook()]}


def MonitoredTrainingSession(
    *,
    is_chief: bool | None = None,
    hooks: Iterable[Any] | None = None,
    **kwargs: Any,
) -> Any:
    """``looprt.MonitoredTrainingSession`` for a ``torch.distributed`` job (or a single process).

    ``looprt.MonitoredTrainingSession`` does the same for a torch program
    given in ``scaffold``; this one needs no program to know it is in a torch
    job. ``is_chief`` defaults to "this process is rank 0" (true outside a
    distributed job). In a distributed job a ``StopSyncHook`` is added after
    ``hooks``, so the ranks stop together. Every other argument is passed on
    (by keyword).
    """
    from looprt.session.training import default_parts, training_session

    return training_session(default_parts(), is_chief=is_chief, hooks=hooks, job=job_defaults(), **kwargs)
