"""Where each iterable input stands, so that a resumed run sees the batches it would have seen.

A checkpoint records, for each input that pulls from an iterable, how many
items were pulled (``Input.position``) and how to get back there:

* a *resumable* iterable (one with ``state_dict()`` and ``load_state_dict()``
  that apply to its next iterator, as ``Epochs`` and torchdata's
  ``StatefulDataLoader`` have) is restored through them: no replay;
* any other iterable is replayed: its iterator is created again and
  ``position`` items are pulled and dropped. Creating an iterator can draw
  random numbers (a shuffling ``DataLoader`` draws its order and its workers'
  seeds), so the random generators' states at the moment the first item was
  pulled are recorded (``InputStarts``), set again around the replay, and put
  back afterwards. The replay costs what loading ``position`` items costs;
  wrap a ``DataLoader`` in ``Epochs`` to bound it by one epoch.

An iterator that cannot be created again (a generator object) can be replayed
only in a fresh process, where it has not been pulled from yet.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from looprt.backends.torch import rng
from looprt.program.handles import Input
from looprt.program.program import Program

__all__ = ["InputStarts", "check_inputs", "input_states", "is_resumable", "restore_inputs"]

logger = logging.getLogger(__name__)


def is_resumable(iterable: Any) -> bool:
    """Whether ``iterable`` saves and restores its own position."""
    return callable(getattr(iterable, "state_dict", None)) and callable(
        getattr(iterable, "load_state_dict", None)
    )


class InputStarts:
    """The random generators' states when each replayed input's iterator was created."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def capture(self, inputs: list[Input]) -> None:
        """Record the states now for ``inputs``, whose first item is about to be pulled."""
        shared = rng.capture()
        for handle in inputs:
            self.states[handle.name] = {
                "global": shared,
                "generators": rng.capture_generators(handle.iterable),
            }


def replayed_inputs(program: Program) -> list[Input]:
    """The inputs that are restored by replay, not by their iterable's own state."""
    return [
        handle
        for handle in program.inputs.values()
        if handle.iterable is not None and not is_resumable(handle.iterable)
    ]


def input_states(program: Program, starts: InputStarts, *, portable: bool = True) -> dict[str, Any]:
    """Where every iterable input stands; ``portable=False`` leaves out what is per process."""
    states: dict[str, Any] = {}
    for name, handle in program.inputs.items():
        if handle.iterable is None:
            continue
        state: dict[str, Any] = {"position": handle.position}
        if portable:
            if is_resumable(handle.iterable):
                state["iterable"] = handle.iterable.state_dict()
            elif handle.position:
                state["start"] = starts.states.get(name)
        states[name] = state
    return states


def check_inputs(program: Program, saved: Any) -> None:
    """Raise, naming the input, if ``saved`` does not fit the program's iterable inputs."""
    if not isinstance(saved, Mapping):
        raise TypeError(f"input positions to restore must be a mapping, got {type(saved).__name__}")
    live = {name for name, handle in program.inputs.items() if handle.iterable is not None}
    missing, unexpected = sorted(live - set(saved)), sorted(set(saved) - live)
    if missing or unexpected:
        raise KeyError(
            f"iterable inputs of {program.name!r} do not match the values to restore: "
            f"missing {missing}, unexpected {unexpected}"
        )
    for name, state in saved.items():
        position = state.get("position") if isinstance(state, Mapping) else None
        if not isinstance(position, int) or position < 0:
            raise ValueError(f"input {name!r}: bad position {position!r} to restore")


def _replay(handle: Input, position: int, start: Mapping[str, Any] | None) -> Iterator[Any]:
    """A new iterator of ``handle``'s iterable, ``position`` items in."""
    iterable = handle.iterable
    if iter(iterable) is iterable and handle.position:
        raise ValueError(
            f"input {handle.name!r} pulls from an iterator that cannot be restarted (a generator?) "
            f"and has been pulled from already ({handle.position} items); pass a re-iterable "
            "(a list, a DataLoader, Epochs(...)) to resume it in this process"
        )
    if start is not None:
        rng.restore(start["global"])
        rng.restore_generators(iterable, start["generators"])
    iterator: Iterator[Any] = iter(iterable)
    skipped = sum(1 for _ in itertools.islice(iterator, position))
    if skipped < position:
        raise ValueError(
            f"input {handle.name!r} was at item {position} but its iterable has only {skipped} items"
        )
    return iterator


def restore_inputs(program: Program, saved: Mapping[str, Any], starts: InputStarts) -> None:
    """Put every iterable input where ``saved`` says (already checked).

    Inputs already there are left alone. Replays come first: if one fails,
    no input has moved. The process-wide random generators end as they were;
    a data loader's own generators end where the replay left them, as they
    were when the checkpoint was written. A state without ``"start"`` (what
    a chief broadcasts to its workers) is replayed from this process's own
    record of the input's start.
    """
    moves = [
        (program.inputs[name], state)
        for name, state in saved.items()
        if state["position"] != program.inputs[name].position
    ]
    if not moves:
        return
    replays = [(h, s) for h, s in moves if "iterable" not in s and s["position"]]
    before = rng.capture()
    generators = {handle.name: rng.capture_generators(handle.iterable) for handle, _ in replays}
    restarted: list[tuple[Input, Iterator[Any], int, Any]] = []
    try:
        for handle, state in replays:
            start = state["start"] if "start" in state else starts.states.get(handle.name)
            if start is None:
                # Expected on a worker that just started (the chief sends positions only).
                log = logger.warning if "start" in state else logger.debug
                log(
                    "input %r: no random generator states recorded for its start; replaying "
                    "%d items with the generators as they are",
                    handle.name,
                    state["position"],
                )
            iterator = _replay(handle, state["position"], start)
            restarted.append((handle, iterator, state["position"], start))
    except BaseException:
        for handle, _ in replays:
            rng.restore_generators(handle.iterable, generators[handle.name])
        raise
    finally:
        rng.restore(before)
    for handle, iterator, position, start in restarted:
        handle.restart(iterator, position)
        starts.states[handle.name] = start
    for handle, state in moves:
        if "iterable" in state:
            handle.iterable.load_state_dict(state["iterable"])
            handle.restart(None, state["position"])  # its next pull iterates it afresh
        elif not state["position"]:
            handle.restart(None, 0)
            starts.states.pop(handle.name, None)
