"""Chief and workers in a ``jax.distributed`` job: the state broadcast, and stopping together.

In a job of several processes (each called ``jax.distributed.initialize``),
process 0 is the chief. It restores or initializes the state, then sends it
(``send_state``): it tells the workers, through the job's coordination
service (its key-value store), how many bytes the state takes, then
broadcasts them with a collective. A worker waits for that word up to
``max_wait_secs`` (``receive_state``), a real timeout of the key-value
store's, then joins the broadcast and loads the state. The state travels
pickled, as the host copy ``JaxBackend.state_dict`` makes (NumPy arrays
keep their dtypes: an ``int64`` step is not narrowed to ``int32``): the
processes of a job trust each other. JAX keeps no global random state (keys
are part of the state), so nothing else needs gathering.

``StopSyncHook`` makes every process stop at the same step: after each run,
the processes reduce "does any process want to stop?" with a collective on
one CPU device of each (about 2 ms a step on a CPU), so none is left waiting
in a collective for a process that has left. ``MonitoredTrainingSession``
here is ``looprt.MonitoredTrainingSession`` with the chief decided by
process index and that hook added last; ``looprt.MonitoredTrainingSession``
does the same for a JAX program (``JaxBackend.training_session_defaults``).
Workers write no checkpoints (``MonitoredTrainingSession`` gives them no
saver hooks).

A lost process is not an error here: JAX's coordination service stops
receiving its heartbeats and terminates the other processes (SIGABRT,
after ``heartbeat_timeout_seconds`` of ``jax.distributed.initialize``); the
job must be restarted from outside, and resumes from the chief's latest
checkpoint. The key-value store is reached through
``jax._src.distributed.global_state.client``, as JAX's own
``array_serialization`` and Orbax do: JAX has no public name for it.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from looprt.errors import DeadlineExceededError
from looprt.hooks.session_run_hook import SessionRunContext, SessionRunHook, SessionRunValues

if TYPE_CHECKING:
    from looprt.program.program import Program

__all__ = [
    "CHIEF_PROCESS",
    "MonitoredTrainingSession",
    "StopSyncHook",
    "any_process",
    "check_process_local",
    "is_chief",
    "is_distributed",
    "job_defaults",
    "process_index",
    "receive_state",
    "send_state",
]

CHIEF_PROCESS = 0
# A wait with no deadline waits in slices of this many milliseconds (the store wants an int).
_SLICE_MS = 3_600_000
# How many states each program name has sent or received: the key of the next one.
_sequence: dict[str, int] = {}
# The reduction StopSyncHook uses, by the devices it was made for.
_reduction: dict[str, tuple[Any, ...]] = {}


def is_distributed() -> bool:
    """Whether this process is one of several in an initialized ``jax.distributed`` job.

    Asks ``jax.distributed.is_initialized`` first, so a single process's
    backends are not started by asking.
    """
    initialized = getattr(jax.distributed, "is_initialized", None)
    if initialized is not None and not initialized():
        return False
    return bool(jax.process_count() > 1)


def process_index() -> int:
    """This process's index in the job: 0 outside a distributed job."""
    return jax.process_index() if is_distributed() else 0


def is_chief() -> bool:
    """Whether this process is the chief: process 0, or the only process."""
    return process_index() == CHIEF_PROCESS


def check_process_local(program: Program) -> None:
    """Raise ``ValueError`` if, in a distributed job, ``program``'s state spans processes.

    The chief sends its state to the workers, so each process must hold the
    whole state on its own devices. An array whose sharding spans processes
    (a global ``jax.Array``) would deadlock: putting a host array onto such a
    sharding is itself a collective (JAX checks every process passes the
    same value), which the chief, restoring a checkpoint alone, or a worker,
    loading the chief's state alone, would wait in forever. Every process
    checks before its session is made, so every process raises.
    """
    if not is_distributed():
        return
    for name, state in program.states.items():
        for leaf in jax.tree_util.tree_leaves(state.value):
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                raise ValueError(
                    f"state {name!r} of program {program.name!r} holds an array that spans processes "
                    f"({leaf.sharding}); in a jax.distributed job the chief sends the state to the "
                    "workers, so each process must hold it on its own devices "
                    "(e.g. a sharding over jax.local_devices())"
                )


def _client() -> Any:
    from jax._src import distributed as jax_distributed  # no public name for the client

    client = getattr(jax_distributed.global_state, "client", None)
    if client is None:
        raise RuntimeError("jax.distributed is not initialized (call jax.distributed.initialize first)")
    return client


def _key(name: str) -> str:
    """The key of program ``name``'s next state; ``_sent`` moves on to the one after."""
    return f"looprt/state/{name}/{_sequence.get(name, 0)}"


def _sent(name: str) -> None:
    _sequence[name] = _sequence.get(name, 0) + 1


def _broadcast_bytes(blob: bytes | None, length: int) -> bytes:
    """The chief's ``blob`` (``length`` bytes) on every process; ``blob`` is None on a worker."""
    from jax.experimental import multihost_utils

    data = np.zeros(length, dtype=np.uint8) if blob is None else np.frombuffer(blob, dtype=np.uint8)
    # uint8 travels as it is (a wider dtype would be narrowed without jax_enable_x64).
    received = multihost_utils.broadcast_one_to_all(data, is_source=blob is not None)
    return np.asarray(received, dtype=np.uint8).tobytes()


def send_state(state: Any, name: str) -> None:
    """On the chief: tell the workers the state of program ``name`` is ready, and broadcast it."""
    index = jax.process_index()
    if index != CHIEF_PROCESS:
        raise ValueError(
            f"process {index} initialized the state as chief; in a jax.distributed job the chief "
            f"is process {CHIEF_PROCESS} (pass is_chief=jax.process_index() == 0)"
        )
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    _client().key_value_set(_key(name), str(len(blob)))
    _sent(name)
    _broadcast_bytes(blob, len(blob))


def receive_state(timeout: float | None, name: str) -> Any:
    """On a worker: wait up to ``timeout`` seconds for the chief, then receive its state.

    ``DeadlineExceededError`` if the chief has not sent program ``name``'s
    state in time (the wait is the coordination service's key-value store
    wait, which ends at its deadline; no collective was entered yet).
    """
    client = _client()
    key = _key(name)  # a worker that gave up waits for the same state next time
    while True:
        wait_ms = _SLICE_MS if timeout is None else max(1, min(math.ceil(timeout * 1000), 2**31 - 1))
        try:
            length = int(client.blocking_key_value_get(key, wait_ms))
            break
        except RuntimeError as error:  # jax.errors.JaxRuntimeError
            if not str(error).startswith("DEADLINE_EXCEEDED"):
                raise
            if timeout is None:
                continue
            raise DeadlineExceededError(
                f"Session was not ready after waiting {timeout:g} secs: the chief (process "
                f"{CHIEF_PROCESS}) did not initialize program {name!r}. Check the chief's log, "
                "or raise max_wait_secs."
            ) from None
    _sent(name)
    return pickle.loads(_broadcast_bytes(None, length))


def _one_device_per_process() -> list[Any]:
    """One device of each process, by process index: CPU devices where they span the job."""
    count = jax.process_count()
    for devices in (jax.devices("cpu"), jax.devices()):
        first: dict[int, Any] = {}
        for device in sorted(devices, key=lambda d: d.id):
            first.setdefault(device.process_index, device)
        if len(first) == count:
            return [first[index] for index in range(count)]
    raise RuntimeError("no devices span every process of the jax.distributed job")


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process of the job (a collective: every process calls it)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = _one_device_per_process()
    made = _reduction.get("any")
    if made is None or made[0] != devices:
        mesh = Mesh(np.array(devices), ("processes",))
        whole, split = PartitionSpec(), PartitionSpec("processes")  # type: ignore[no-untyped-call]
        reduce = jax.jit(lambda flags: flags.max(), out_shardings=NamedSharding(mesh, whole))
        made = (devices, NamedSharding(mesh, split), reduce)
        _reduction["any"] = made
    _, sharding, reduce = made
    local = jax.device_put(np.array([int(flag)], dtype=np.int32), devices[jax.process_index()])
    flags = jax.make_array_from_single_device_arrays((len(devices),), sharding, [local])
    return bool(np.asarray(reduce(flags).addressable_data(0)))


class StopSyncHook(SessionRunHook):
    """Stops every process at the same step: after each run, any process's stop is every process's.

    Put it after every other hook (``MonitoredTrainingSession`` does), so it
    sees their stop requests. A stop counts when a hook asked for one in
    this run or the coordinator was asked (a thread failed or stopped). Does
    nothing outside a distributed job.
    """

    def __init__(self) -> None:
        self._coord: Any = None
        self._active = False

    def after_create_session(self, session: Any, coord: Any) -> None:
        self._coord = coord
        self._active = is_distributed()

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if not self._active:
            return
        coord = self._coord
        stop = run_context.stop_requested or (coord is not None and coord.should_stop())
        if any_process(stop):
            run_context.request_stop()


def job_defaults() -> dict[str, Any]:
    """``is_chief`` (process 0) and a ``StopSyncHook`` in a distributed job; nothing outside one."""
    if not is_distributed():
        return {}
    return {"is_chief": is_chief(), "hooks": [StopSyncHook()]}


def MonitoredTrainingSession(
    *,
    is_chief: bool | None = None,
    hooks: Iterable[Any] | None = None,
    **kwargs: Any,
) -> Any:
    """``looprt.MonitoredTrainingSession`` for a ``jax.distributed`` job (or a single process).

    ``looprt.MonitoredTrainingSession`` does the same for a JAX program given
    in ``scaffold``; this one needs no program to know it is in a JAX job.
    ``is_chief`` defaults to "this process is process 0" (true outside a
    distributed job). In a distributed job a ``StopSyncHook`` is added after
    ``hooks``, so the processes stop together. Every other argument is
    passed on (by keyword).
    """
    from looprt.session.training import default_parts, training_session

    return training_session(default_parts(), is_chief=is_chief, hooks=hooks, job=job_defaults(), **kwargs)
