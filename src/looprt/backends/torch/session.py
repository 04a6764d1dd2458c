"""``TorchSession``: the raw session of a torch program.

A ``ProgramSession`` that, until each replayed input has pulled its first
item, records the random generators' states at the start of every run (see
``inputs``): the states from which that input's iterator was created, through
``ProgramSession.run_through``. Once every such input has started, runs go
straight to ``ProgramSession.run``.

``epoch_ends()`` tells ``HookedSession`` which inputs finished an epoch (an
``Epochs`` iterable knows), for hooks that define ``after_epoch``.
"""

from __future__ import annotations

from typing import Any

from looprt.backends.torch.inputs import InputStarts, replayed_inputs
from looprt.hooks.epoch_end import EpochEnd
from looprt.program.program import Program
from looprt.program.session import ProgramSession

__all__ = ["TorchSession"]


class TorchSession(ProgramSession):
    """Runs a torch program; ``starts`` is the program's record of its inputs' starts."""

    def __init__(self, program: Program, starts: InputStarts, target: str = "", config: Any = None) -> None:
        super().__init__(program, target=target, config=config)
        self._starts = starts
        self._unstarted = replayed_inputs(program)
        self._epoch_inputs = [
            handle
            for handle in program.inputs.values()
            if callable(getattr(handle.iterable, "pop_epoch_ends", None))
        ]
        if self._unstarted:
            self.run_through = self._record_starts

    def epoch_ends(self) -> list[EpochEnd]:
        """The epochs each ``Epochs`` input finished since the previous call, in input order."""
        ends: list[EpochEnd] = []
        for handle in self._epoch_inputs:
            epochs = handle.iterable.pop_epoch_ends()
            if epochs:
                step = self.global_step_value()
                at = None if step is None else int(step)
                ends.extend(EpochEnd(handle.name, epoch, at) for epoch in epochs)
        return ends

    def _record_starts(
        self,
        fetches: Any,
        feed_dict: Any = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        """``ProgramSession.run``, after recording the starts of inputs not pulled from yet."""
        pending = [handle for handle in self._unstarted if handle.position == 0]
        if pending:
            self._starts.capture(pending)
        self.run_through = None
        try:
            return self.run(fetches, feed_dict, options, run_metadata)
        finally:
            self._unstarted = [handle for handle in pending if handle.position == 0]
            if self._unstarted:
                self.run_through = self._record_starts
