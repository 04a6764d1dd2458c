"""The JAX backend: functional training steps under looprt's sessions and hooks.

A jitted step that returns new state runs unchanged::

    step = looprt.wrap(train_step, state={"params": params, "opt_state": opt_state},
                       inputs=batches, updates=("params", "opt_state"), outputs=("loss",),
                       backend="jax")
    with looprt.MonitoredTrainingSession(
        checkpoint_dir="run", scaffold=looprt.Scaffold(program=step.program)
    ) as sess:
        while not sess.should_stop():
            sess.run(step)

State is any pytree (Optax states, PRNG keys included); it stays on the
device and is brought to the host only when fetched or checkpointed. See
``backend`` for the contract, ``checkpoint`` for the file format and
``load_tree`` to read a checkpoint outside a session, and ``distributed`` for
``jax.distributed`` jobs (process 0 is the chief; every process stops at the
same step).
"""

from looprt.backends.jax.backend import JaxBackend
from looprt.backends.jax.checkpoint import load_tree
from looprt.backends.jax.distributed import MonitoredTrainingSession, StopSyncHook, is_chief, is_distributed
from looprt.backends.jax.trees import KeyData, SavedTree

__all__ = [
    "JaxBackend",
    "KeyData",
    "MonitoredTrainingSession",
    "SavedTree",
    "StopSyncHook",
    "is_chief",
    "is_distributed",
    "load_tree",
]
