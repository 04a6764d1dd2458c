"""``Epochs``: a data loader iterated epoch after epoch, that resumes mid-epoch.

>>> batches = Epochs([1, 2, 3], count=2)
>>> list(batches)
[1, 2, 3, 1, 2, 3]
>>> state = {"epoch": 1, "position": 2, "start": None}
>>> batches.load_state_dict(state)
>>> list(batches)
[3]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from looprt.backends.torch import rng

__all__ = ["Epochs"]


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell a ``DistributedSampler`` (or any sampler with ``set_epoch``) the epoch."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        sampler = getattr(owner, "sampler", None)
        set_epoch = getattr(sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return


class Epochs:
    """Iterates ``loader`` ``count`` times (None: without end); checkpoints where it is.

    Before each epoch, the loader's sampler is told the epoch (as
    ``DistributedSampler.set_epoch`` needs) and the random generators'
    states are recorded, since creating the loader's iterator draws its
    shuffle from them. ``state_dict()`` is the epoch, the items pulled in it
    and those states; after ``load_state_dict(state)`` the next iterator sets
    the states again, re-creates that epoch's iterator and skips the pulled
    items, so it yields exactly what the saved one would have yielded next.
    Resuming replays at most one epoch. As an input of a torch program it is
    checkpointed through these methods.
    """

    def __init__(self, loader: Iterable[Any], count: int | None = None) -> None:
        if count is not None and count < 0:
            raise ValueError(f"count must be None or >= 0, got {count}")
        self.loader = loader
        self.count = count
        self._epoch = 0
        self._position = 0
        self._start: dict[str, Any] | None = None
        self._resume: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Epochs of {self.loader!r}, count={self.count}>"

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        return self._iterate(resume)

    def _iterate(self, resume: dict[str, Any] | None) -> Iterator[Any]:
        epoch = 0 if resume is None else resume["epoch"]
        while self.count is None or epoch < self.count:
            _set_epoch(self.loader, epoch)
            skip = 0 if resume is None else resume["position"]
            start = None if resume is None else resume["start"]
            if skip:
                before = rng.capture()
                if start is not None:
                    rng.restore(start["global"])
                    rng.restore_generators(self.loader, start["generators"])
                iterator = iter(self.loader)
                skipped = sum(1 for _ in itertools.islice(iterator, skip))
                rng.restore(before)
                if skipped < skip:
                    raise ValueError(f"epoch {epoch} of {self.loader!r} has only {skipped} items, not {skip}")
            else:
                start = {"global": rng.capture(), "generators": rng.capture_generators(self.loader)}
                iterator = iter(self.loader)
            resume = None
            self._epoch, self._position, self._start = epoch, skip, start
            for item in iterator:
                self._position += 1
                yield item
            epoch += 1
        self._epoch, self._position, self._start = epoch, 0, None

    def state_dict(self) -> dict[str, Any]:
        """Where the latest iterator is: its epoch, the items pulled in it, the epoch's start."""
        return {"epoch": self._epoch, "position": self._position, "start": self._start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iterator continue from ``state`` (from ``state_dict()``)."""
        if not isinstance(state, dict) or not {"epoch", "position", "start"} <= set(state):
            raise ValueError(f"not an Epochs state: {state!r:.80}")
        self._resume = dict(state)
        self._epoch, self._position, self._start = state["epoch"], state["position"], state["start"]
