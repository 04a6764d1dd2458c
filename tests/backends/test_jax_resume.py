"""A JAX training process killed with SIGKILL resumes in a new one and ends bit for bit as an uninterrupted run.

Run as a script (``python test_jax_resume.py DIR LAST_STEP KILL_AT``) it
trains with checkpoints every 3 steps, printing the losses so far, and
sends itself SIGKILL right after step ``KILL_AT``: no cleanup, no ``end``.
The batches come from a list input (its position is checkpointed) and the
noise from a PRNG key in state, so both must be restored for the runs to match.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import looprt  # noqa: E402

pytestmark = pytest.mark.jax

SAVE_EVERY = 3


def build() -> looprt.Step:
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(16, 4)).astype(np.float32) for _ in range(40)]
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    opt = optax.adamw(0.05)

    @jax.jit
    def train_step(params: Any, opt_state: Any, key: Any, batch: Any) -> Any:
        key, sub = jax.random.split(key)
        target = jnp.stack([batch.sum(1), batch[:, 0]], 1) + 0.1 * jax.random.normal(sub, (16, 2))

        def loss_fn(p: Any) -> Any:
            return jnp.mean((batch @ p["w"] + p["b"] - target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss

    return looprt.wrap(
        train_step,
        state={"params": params, "opt_state": opt.init(params), "key": jax.random.key(7)},
        inputs=batches,
        updates=("params", "opt_state", "key"),
        outputs=("loss",),
        backend="jax",
    )


def train(directory: str, last_step: int, kill_at: int | None = None) -> tuple[list[float], Any]:
    step = build()
    losses: list[float] = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=directory,
        scaffold=looprt.Scaffold(program=step.program),
        hooks=[looprt.StopAtStepHook(last_step=last_step)],
        save_checkpoint_steps=SAVE_EVERY,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            out = sess.run({"loss": step.loss, "step": step.program.global_step})
            losses.append(float(out["loss"]))
            if kill_at is not None and out["step"] + 1 == kill_at:
                print(json.dumps(losses), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
    states = step.program.states
    final = {name: jax.device_get(states[name].value) for name in ("params", "opt_state")}
    final["key"] = jax.random.key_data(states["key"].value)
    return losses, final


def test_a_sigkilled_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    full, expected = train(str(tmp_path / "full"), 14)
    assert len(set(full)) == 14
    killed = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "run"), "14", "8"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert json.loads(killed.stdout.splitlines()[-1]) == full[:8]
    assert looprt.latest_checkpoint(str(tmp_path / "run")).endswith("model.ckpt-6")  # type: ignore[union-attr]
    resumed, final = train(str(tmp_path / "run"), 14)
    assert resumed == full[6:]
    same = jax.tree_util.tree_map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), final, expected)
    assert jax.tree_util.tree_all(same)


if __name__ == "__main__":
    directory, last, kill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    train(directory, last, kill)
    sys.exit("was not killed")
