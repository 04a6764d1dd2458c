"""``Epochs``: a data loader iterated epoch after epoch, that resumes mid-epoch and knows where epochs end.

>>> batches = Epochs([1, 2, 3], count=2)
>>> list(batches)
[1, 2, 3, 1, 2, 3]
>>> batches.pop_epoch_ends()
[0, 1]
>>> state = {"epoch": 1, "position": 2, "start": None}
>>> batches.load_state_dict(state)
>>> list(batches)
[3]

Import it as ``from looprt.backends.torch import Epochs``.

How a resume is made exact. Creating a ``DataLoader``'s iterator draws from
the random generators (the loader's own ``generator``, else the global one):
first the workers' base seed, then the shuffle of the epoch. ``Epochs``
records the generators' states at each epoch's start and, after
``load_state_dict``, sets them again, creates that epoch's iterator and
skips the items already pulled. A loader with ``persistent_workers=True``
creates its iterator once, at its first epoch, and later epochs only reshuffle
it (no base seed): so a resume past the first epoch first re-creates the
iterator from the states recorded at the first epoch (the workers get the
same base seed), then reshuffles from the resumed epoch's states. The
workers' own generators, though, cannot be put back where persistent workers
had taken them over the earlier epochs: random numbers a dataset draws in its
workers (augmentation) differ after such a resume, and ``Epochs`` logs a
warning saying so. A state saved right after an epoch's last item resumes at
the next epoch's start, with no replay.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from looprt.backends.torch import rng

__all__ = ["Epochs"]

logger = logging.getLogger(__name__)

_STATE_KEYS = frozenset({"epoch", "position", "start"})


# Loaders with persistent workers whose iterator ``Epochs`` created in this process.
_kept_iterators: weakref.WeakSet[Any] = weakref.WeakSet()


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell a ``DistributedSampler`` (or any sampler with ``set_epoch``) the epoch."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        sampler = getattr(owner, "sampler", None)
        set_epoch = getattr(sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return


def _length(loader: Any) -> int | None:
    """Items in one epoch of ``loader``, or None when it cannot say."""
    try:
        return len(loader)
    except TypeError:  # no __len__, or an IterableDataset without one
        return None


def _keeps_workers(loader: Any) -> bool:
    """Whether ``loader`` keeps its iterator (and worker processes) from epoch to epoch."""
    return bool(getattr(loader, "persistent_workers", False)) and getattr(loader, "num_workers", 0) > 0


def _states(loader: Any) -> dict[str, Any]:
    return {"global": rng.capture(), "generators": rng.capture_generators(loader)}


def _set_states(loader: Any, states: dict[str, Any]) -> None:
    rng.restore(states["global"])
    rng.restore_generators(loader, states["generators"])


class Epochs:
    """Iterates ``loader`` ``count`` times (None: without end); checkpoints where it is.

    Before each epoch, the loader's sampler is told the epoch (as
    ``DistributedSampler.set_epoch`` needs) and the random generators'
    states are recorded, since creating the loader's iterator draws its
    shuffle from them. ``state_dict()`` is the epoch, the items pulled in it
    and those states; after ``load_state_dict(state)`` the next iterator
    continues exactly where the saved one was (see the module's notes for
    ``persistent_workers``). Resuming replays at most one epoch. As an input
    of a torch program it is checkpointed through these methods.

    Epoch ends: when the last item of an epoch is pulled (the loader has a
    ``len()``; without one, when the next pull finds the epoch over) the
    epoch's index is queued; ``pop_epoch_ends()`` takes the queue. A torch
    session hands them to hooks that define ``after_epoch`` (see
    docs/hooks.md).
    """

    def __init__(self, loader: Iterable[Any], count: int | None = None) -> None:
        if count is not None and count < 0:
            raise ValueError(f"count must be None or >= 0, got {count}")
        self.loader = loader
        self.count = count
        self._epoch = 0
        self._position = 0
        self._start: dict[str, Any] | None = None
        # The states the loader's persistent iterator was created from, with that epoch.
        self._first: dict[str, Any] | None = None
        # The loader's generators right after an epoch's last item: where the next epoch starts.
        self._after: dict[str, Any] | None = None
        self._resume: dict[str, Any] | None = None
        self._ended: list[int] = []

    def __repr__(self) -> str:
        return f"<Epochs of {self.loader!r}, count={self.count}>"

    @property
    def epoch_length(self) -> int | None:
        """Items in one epoch (``len(loader)``), or None when the loader has no length."""
        return _length(self.loader)

    def pop_epoch_ends(self) -> list[int]:
        """The epochs (0-based) whose last item was pulled since the previous call."""
        ended, self._ended = self._ended, []
        return ended

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        return self._iterate(resume)

    def _iterate(self, resume: dict[str, Any] | None) -> Iterator[Any]:
        loader, length = self.loader, _length(self.loader)
        epoch, skip, start, first = 0, 0, None, None
        if resume is not None:
            epoch, skip, start = resume["epoch"], resume["position"], resume["start"]
            first = resume.get("first")
            after = resume.get("after")
            if length is not None and skip >= length and after is not None:
                # Saved right after the epoch's last item: the next epoch starts afresh.
                epoch, skip, start = epoch + 1, 0, None
                rng.restore_generators(loader, after)
        while self.count is None or epoch < self.count:
            _set_epoch(loader, epoch)
            if resume is None:
                start = _states(loader)
                if first is None and _keeps_workers(loader):
                    first = {"epoch": epoch, **start}
                    _kept_iterators.add(loader)
                iterator = iter(loader)
            else:
                iterator, start, first = self._reopen(epoch, skip, start, first)
            resume = None
            self._epoch, self._position, self._start, self._first = epoch, skip, start, first
            self._after = None
            for item in iterator:
                self._position += 1
                if self._position == length:
                    self._end_epoch(epoch)
                yield item
            if length is None or self._position < length:
                self._end_epoch(epoch)
            epoch += 1
        self._epoch, self._position, self._start = epoch, 0, None

    def _end_epoch(self, epoch: int) -> None:
        self._after = rng.capture_generators(self.loader)
        self._ended.append(epoch)

    def _reopen(
        self, epoch: int, skip: int, start: dict[str, Any] | None, first: dict[str, Any] | None
    ) -> tuple[Iterator[Any], dict[str, Any], dict[str, Any] | None]:
        """Epoch ``epoch``'s iterator as the saved run had it, ``skip`` items in; its start and first."""
        loader = self.loader
        now = _states(loader)
        if start is None:
            start = now
        draw_base_seed = False
        if _keeps_workers(loader):
            if first is None:
                first = {"epoch": epoch, **start}
            if first["epoch"] != epoch:
                logger.warning(
                    "%r: resuming in epoch %d a loader with persistent workers, whose iterator was "
                    "created in epoch %d: the batches are the saved run's, but random numbers drawn "
                    "in the workers (augmentation in the dataset) are not, since the workers start "
                    "afresh; use persistent_workers=False for a bit-for-bit resume of such a dataset",
                    self,
                    epoch,
                    first["epoch"],
                )
                # Re-create the iterator as the saved run did (the workers' base seed); the
                # iteration below then reshuffles it from this epoch's states.
                _set_states(loader, first)
                iter(loader)
            else:
                # In the epoch the saved run created its iterator in. In a new process,
                # iter(loader) creates it the same way; in this process (recovery) the
                # iterator lives on and only reshuffles: draw the base seed first, as
                # creating it did (torch's _BaseDataLoaderIter), so the shuffle matches.
                draw_base_seed = loader in _kept_iterators
            _kept_iterators.add(loader)
        restore = now["global"] if skip else None
        try:
            _set_states(loader, start)
            if draw_base_seed:
                torch.empty((), dtype=torch.int64).random_(generator=getattr(loader, "generator", None))
            iterator = iter(loader)
            skipped = sum(1 for _ in itertools.islice(iterator, skip))
        finally:
            if restore is not None:  # the states after a replay are the resumed run's
                rng.restore(restore)
        if skipped < skip:
            raise ValueError(f"epoch {epoch} of {loader!r} has only {skipped} items, not {skip}")
        return iterator, start, first

    def state_dict(self) -> dict[str, Any]:
        """Where the latest iterator is: its epoch, the items pulled in it, the states it started from."""
        return {
            "epoch": self._epoch,
            "position": self._position,
            "start": self._start,
            "first": self._first,
            "after": self._after,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iterator continue from ``state`` (from ``state_dict()``)."""
        if not isinstance(state, dict) or not set(state) >= _STATE_KEYS:
            raise ValueError(f"not an Epochs state: {state!r:.80}")
        self._resume = dict(state)
        self._epoch, self._position, self._start = state["epoch"], state["position"], state["start"]
        self._first, self._after = state.get("first"), state.get("after")
        self._ended = []
