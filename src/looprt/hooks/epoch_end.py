"""``EpochEnd``: what a hook's ``after_epoch`` learns when an input finishes an epoch.

``after_epoch(run_context, epoch_end)`` is a looprt extension of TF's hook
contract, called only for hooks that define it. ``HookedSession`` calls it
after the run that pulled an epoch's last item and before every hook's
``after_run`` of that run: epoch-end work (an LR scheduler's ``step()``, a
test pass) is done before ``CheckpointSaverHook`` saves at that run, so a
checkpoint at an epoch boundary holds it. The raw session says which epochs
ended (``epoch_ends()``; the torch backend's, for inputs that are
``looprt.backends.torch.Epochs``).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["EpochEnd"]


class EpochEnd(NamedTuple):
    """Input ``input`` pulled epoch ``epoch``'s last item (0-based) in the run that made ``global_step``."""

    input: str
    epoch: int
    global_step: int | None
