"""``TorchBackend``: runs programs whose state is PyTorch modules, optimizers and tensors.

What it does for the runtime:

* values: a fetched tensor comes back as a NumPy array or scalar, and only a
  fetched one: a run that fetches nothing from the device copies nothing to
  the host and never waits for the device. Fed and pulled NumPy arrays become
  tensors; with ``device`` set, they and fed tensors move there.
* state: fetching state, and the initial values, are CPU copies (see
  ``state``); restoring checks every piece first, then loads it in place.
* checkpoints: one ``state.pt`` (``torch.save`` of tensors and plain values,
  which ``torch.load(weights_only=True)`` reads) holding every state's state
  dict, the global step, the process-wide random generators' states and
  where each iterable input stands (see ``inputs``), so a resumed run
  continues as the uninterrupted one would.
* distributed: in a ``torch.distributed`` job the chief (rank 0) broadcasts
  the state it initialized or restored, and workers wait for it (see
  ``distributed``). Lost peers surface as ``UnavailableError`` /
  ``AbortedError`` (see ``errors``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from looprt.backends.torch import distributed, inputs, rng, state
from looprt.backends.torch.errors import translate
from looprt.backends.torch.session import TorchSession
from looprt.backends.torch.values import feeder, to_device, to_host
from looprt.program.backend import ProgramBackend

if TYPE_CHECKING:
    from looprt.program.handles import State
    from looprt.program.program import Program

__all__ = ["TorchBackend"]

PAYLOAD = "state.pt"
FORMAT = 1
# Keys of a state dict that are not program state; a "/" never appears in a state's name
# that steps can bind to, since state is bound by parameter name.
RNG_KEY = "looprt/rng"
INPUTS_KEY = "looprt/inputs"
# Every rank's generator states, by rank, in a distributed job's checkpoints.
RNG_RANKS_KEY = "looprt/rng_ranks"
_EXTRA_KEYS = (RNG_KEY, INPUTS_KEY, RNG_RANKS_KEY)


class TorchBackend(ProgramBackend):
    """Runs torch programs; ``device`` is where fed and pulled values go.

    ``device=None`` (what ``Program(backend="torch")`` and ``looprt.wrap``
    use) leaves tensors where they are and makes NumPy arrays CPU tensors:
    a step that moves its batch itself (``x.to(device)``) runs unchanged.
    ``Program(backend=TorchBackend(device="cuda"))`` moves every fed and
    pulled value to the GPU, without waiting (pin the loader's memory,
    ``DataLoader(..., pin_memory=True)``, to make that copy asynchronous).
    The state stays where the caller put it (``model.to(device)`` before
    declaring it); restoring loads values into it in place, on its device.
    """

    name = "torch"

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = None if device is None else torch.device(device)
        self._starts: weakref.WeakKeyDictionary[Program, inputs.InputStarts] = weakref.WeakKeyDictionary()
        # On the chief: the ranks' generator states of the checkpoint just restored, for the workers.
        self._rng_ranks: weakref.WeakKeyDictionary[Program, dict[int, Any]] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"TorchBackend(device={None if self.device is None else str(self.device)!r})"

    def _input_starts(self, program: Program) -> inputs.InputStarts:
        starts = self._starts.get(program)
        if starts is None:
            starts = self._starts[program] = inputs.InputStarts()
        return starts

    # -- running ---------------------------------------------------------------------

    def create_session(self, program: Program, target: str = "", config: Any = None) -> TorchSession:
        return TorchSession(program, self._input_starts(program), target=target, config=config)

    def to_host(self, value: Any) -> Any:
        return to_host(value)

    def from_feed(self, value: Any) -> Any:
        """A fed or pulled value on the device."""
        return to_device(value, self.device)

    def feed_converter(self) -> Callable[[Any], Any]:
        """``from_feed`` as one frame a pulled batch (``values.feeder``), not two through the method."""
        return feeder(self.device)

    def translate_error(self, error: BaseException) -> BaseException | None:
        return translate(error)

    # -- state -----------------------------------------------------------------------

    def snapshot(self, value: Any) -> Any:
        return state.snapshot(value)

    def check_assign(self, handle: State, value: Any) -> None:
        """Raise if ``value`` cannot be restored into ``handle``'s live object; change nothing."""
        state.check(handle.name, handle.value, value)

    def assign(self, handle: State, value: Any) -> None:
        self.check_assign(handle, value)
        handle.value = state.load(handle.value, value)

    def state_view(self, program: Program) -> dict[str, Any]:
        """``state_dict`` whose tensors are the live ones: a synchronous save copies nothing."""
        return self.state_dict(program, copy_tensors=False)

    def state_dict(self, program: Program, *, copy_tensors: bool = True) -> dict[str, Any]:
        """Every state's saved value, plus the random generators and the inputs' positions."""
        values = {
            name: state.saved_value(handle.value, copy_tensors=copy_tensors)
            for name, handle in program.states.items()
        }
        values[RNG_KEY] = rng.capture()
        values[INPUTS_KEY] = inputs.input_states(program, self._input_starts(program))
        ranks = distributed.gather_rng_states()  # the workers' too, when they can answer
        if ranks is not None:
            values[RNG_RANKS_KEY] = ranks
            # The chief's own, taken with the workers': one moment for every rank (at a
            # stop, that is after the last run, before whatever the script did since).
            values[RNG_KEY] = ranks[distributed.CHIEF_RANK]
        return values

    def load_state_dict(self, program: Program, values: Mapping[str, Any]) -> None:
        """Restore from ``state_dict``'s result: every part checked first, then set.

        The random generators and input positions are optional (a value
        without them leaves them as they are); the state's keys must match.
        """
        names = [key for key in values if key not in _EXTRA_KEYS]
        missing = sorted(set(program.states) - set(names))
        unexpected = sorted(set(names) - set(program.states))
        if missing or unexpected:
            raise KeyError(
                f"state of {program.name!r} does not match the values to restore: "
                f"missing {missing}, unexpected {unexpected}"
            )
        for name, handle in program.states.items():
            self.check_assign(handle, values[name])
        if INPUTS_KEY in values:
            inputs.check_inputs(program, values[INPUTS_KEY])
            inputs.restore_inputs(program, values[INPUTS_KEY], self._input_starts(program))
        for name, handle in program.states.items():
            handle.value = state.load(handle.value, values[name])
        ranks = values.get(RNG_RANKS_KEY)
        if distributed.is_chief():
            if RNG_KEY in values:
                rng.restore(values[RNG_KEY])
            if ranks is not None:  # the workers' states, sent with the state in mark_ready
                self._rng_ranks[program] = dict(ranks)
        elif ranks is not None and distributed.rank() in ranks:
            rng.restore(ranks[distributed.rank()])  # a worker: its own, as the checkpoint kept them

    # -- checkpoints -----------------------------------------------------------------

    def save_payload(self, values: Mapping[str, Any], directory: str) -> list[str]:
        """Write ``values`` (from ``state_dict``) to ``state.pt``; only tensors and plain values."""
        path = os.path.join(directory, PAYLOAD)
        torch.save({"format": FORMAT, "values": dict(values)}, path)
        _check_loadable(path, values)
        return [PAYLOAD]

    def load_payload(self, directory: str) -> dict[str, Any]:
        # Memory-mapped: restoring copies each tensor from the file's pages into the live
        # state once, with no intermediate copy of the whole checkpoint.
        path = os.path.join(directory, PAYLOAD)
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{PAYLOAD} is not a looprt torch checkpoint of format {FORMAT}")
        values: dict[str, Any] = payload["values"]
        return values

    # -- chief and workers -----------------------------------------------------------

    def mark_ready(self, program: Program) -> None:
        """Tell waiting workers the state is ready; in a distributed job, broadcast it."""
        ranks = self._rng_ranks.pop(program, None)
        # The workers are in no step's collective now; after a restore, every rank's
        # states are the restored ones, which a save at creation keeps again.
        distributed.close_save_window(known=ranks)
        super().mark_ready(program)
        if distributed.is_distributed():
            values = {name: state.saved_value(h.value) for name, h in program.states.items()}
            values[INPUTS_KEY] = inputs.input_states(program, self._input_starts(program), portable=False)
            if ranks is not None:
                values[RNG_RANKS_KEY] = ranks
            distributed.send_state(values)

    def training_session_defaults(self) -> dict[str, Any]:
        """In a ``torch.distributed`` job: rank 0 is the chief, and ranks stop together."""
        return distributed.job_defaults()

    def wait_until_ready(self, program: Program, timeout: float | None) -> None:
        """Wait for the chief; in a distributed job, receive its state and load it."""
        if not distributed.is_distributed():
            super().wait_until_ready(program, timeout)
            return
        self.load_state_dict(program, distributed.receive_state(timeout, program.name))


def _check_loadable(path: str, values: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` if ``torch.load(weights_only=True)`` would refuse ``path``."""
    unsafe_globals = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if unsafe_globals is None:  # torch < 2.5: nothing to ask
        return
    unsafe = unsafe_globals(path)
    if unsafe:
        where = _first_unplain(values)
        raise TypeError(
            f"the checkpoint would hold objects that torch.load(weights_only=True) refuses "
            f"({', '.join(unsafe)}){f', at {where}' if where else ''}; torch checkpoints hold "
            "tensors, containers and plain values only"
        )


def _first_unplain(value: Any, path: str = "") -> str | None:
    """The path of the first value in ``value`` that is not a tensor, container or plain value."""
    if isinstance(value, (torch.Tensor, int, float, bool, str, bytes, type(None), torch.dtype)):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _first_unplain(item, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)) and not isinstance(value, np.ndarray):
        for index, item in enumerate(value):
            found = _first_unplain(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return f"{path or 'the top'} (a {type(value).__name__})"
