"""The PyTorch backend: modules, optimizers and data loaders as a looprt program.

An existing step runs unchanged::

    step = looprt.wrap(train_step, state={"model": model, "opt": opt}, inputs=loader)
    with looprt.MonitoredTrainingSession(
        checkpoint_dir="run", scaffold=looprt.Scaffold(program=step.program)
    ) as sess:
        while not sess.should_stop():
            sess.run(step)

``TorchBackend(device=...)`` places fed and pulled values; ``Epochs`` runs a
data loader for several epochs, resumes mid-epoch cheaply, and tells hooks
that define ``after_epoch`` where each epoch ends. In a
``torchrun`` job (``init_process_group`` from here survives
``--max-restarts``), ``MonitoredTrainingSession`` from here makes rank 0 the
chief and stops every rank at the same step (``StopSyncHook``).
"""

from looprt.backends.torch.backend import TorchBackend
from looprt.backends.torch.data import Epochs
from looprt.backends.torch.distributed import (
    MonitoredTrainingSession,
    StopSyncHook,
    init_process_group,
    is_chief,
    is_distributed,
)

__all__ = [
    "Epochs",
    "MonitoredTrainingSession",
    "StopSyncHook",
    "TorchBackend",
    "init_process_group",
    "is_chief",
    "is_distributed",
]
