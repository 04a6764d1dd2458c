"""Interrupted and resumed torch training matches the uninterrupted run, bit for bit.

Run as a script (``python test_torch_resume.py DIR LAST_STEP CRASH_AT``) it
trains with checkpoints every 3 steps, printing one loss per line, and dies
(``os._exit``, no cleanup) right after step ``CRASH_AT``: a killed process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import looprt  # noqa: E402
from looprt.backends.torch import Epochs  # noqa: E402

pytestmark = pytest.mark.torch

SAVE_EVERY = 3


def build(epochs: bool = False, generator: bool = True, size: int = 200) -> Any:
    """A program whose losses depend on every kind of saved state.

    Shuffled batches (the loader's own generator, or the global one), dropout
    (the global torch generator), NumPy's and Python's global generators, Adam
    and a step-wise LR schedule.
    """
    import random

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    data = torch.Generator().manual_seed(1)
    dataset = torch.utils.data.TensorDataset(
        torch.randn(size, 6, generator=data), torch.randint(0, 3, (size,), generator=data)
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(2) if generator else None,
    )

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        noise = float(np.random.random()) + random.random()
        loss = torch.nn.functional.cross_entropy(model(x + 0.01 * noise), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss}

    return looprt.wrap(
        train_step,
        state={"model": model, "opt": opt, "sched": sched},
        inputs=Epochs(loader) if epochs else loader,
        outputs=("loss",),
    )


def train(directory: str, last_step: int, crash_at: int | None = None, **options: Any) -> list[float]:
    step = build(**options)
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
            if crash_at is not None and out["step"] + 1 == crash_at:
                print(json.dumps(losses), flush=True)
                os._exit(3)
    return losses


def test_a_killed_process_resumes_in_a_new_one_as_if_never_stopped(tmp_path: Path) -> None:
    full = train(str(tmp_path / "full"), 12)
    assert len(set(full)) == 12
    # Killed at step 8, mid-epoch (200 items: batches of 8), with the last checkpoint at step 6.
    crashed = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "run"), "12", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 3, crashed.stderr
    first = json.loads(crashed.stdout.splitlines()[-1])
    assert first == full[:8]
    assert looprt.latest_checkpoint(str(tmp_path / "run")).endswith("model.ckpt-6")  # type: ignore[union-attr]
    assert train(str(tmp_path / "run"), 12) == full[6:]


def test_resuming_across_epochs_with_new_objects_and_the_global_generator_shuffling(tmp_path: Path) -> None:
    # No loader generator: each epoch's order comes from the global generator, which
    # dropout draws from too; Epochs records it at each epoch's start.
    options = {"epochs": True, "generator": False, "size": 48}  # 6 batches an epoch
    full = train(str(tmp_path / "full"), 20, **options)
    step = build(**options)
    with pytest.raises(RuntimeError, match="interrupted"), looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path / "run"),
        scaffold=looprt.Scaffold(program=step.program),
        save_checkpoint_steps=SAVE_EVERY,
        log_step_count_steps=None,
    ) as sess:
        while True:
            if sess.run({"s": step.program.global_step, "t": step})["s"] == 10:  # in the second epoch
                raise RuntimeError("interrupted")
    assert looprt.latest_checkpoint(str(tmp_path / "run")).endswith("model.ckpt-9")  # type: ignore[union-attr]
    torch.rand(7)  # the new process-wide state is whatever it is
    assert train(str(tmp_path / "run"), 20, **options) == full[9:]


class AbortOnce(looprt.SessionRunHook):
    """Makes one run fail as if a peer had been lost."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step
        self.fired = False

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.step_handle = session.graph.global_step

    def before_run(self, run_context: Any) -> Any:
        return looprt.SessionRunArgs(self.step_handle)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_values.results == self.at_step and not self.fired:
            self.fired = True
            raise looprt.AbortedError("peer lost")


def test_recovery_in_the_same_process_replays_the_loader_from_its_start(tmp_path: Path) -> None:
    full = train(str(tmp_path / "full"), 10)
    step = build()
    seen: list[tuple[int, float]] = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path / "run"),
        scaffold=looprt.Scaffold(program=step.program),
        hooks=[looprt.StopAtStepHook(last_step=10), AbortOnce(at_step=7)],
        save_checkpoint_steps=SAVE_EVERY,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            out = sess.run({"loss": step.loss, "step": step.program.global_step})
            seen.append((int(out["step"]), float(out["loss"])))
    # The run that trained step 8 failed after it ran; the session restored step 6 and
    # the retried run trained step 7 again, on the same batch, with the same dropout.
    assert [s for s, _ in seen] == [0, 1, 2, 3, 4, 5, 6, 6, 7, 8, 9]
    assert [loss for _, loss in seen] == full[:7] + full[6:]


def compiled_amp_program(directory: str, last_step: int) -> list[float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=2)
    batches = [(torch.randn(8, 4, generator=torch.Generator().manual_seed(i)), torch.arange(8) % 2) for i in range(20)]

    @torch.compile(backend="aot_eager")  # inductor's C++ build takes ~20 s; the tracing is the same
    def forward(x: Any, y: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.functional.cross_entropy(model(x), y)

    def train_step(batch: Any) -> dict[str, Any]:
        loss = forward(*batch)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return {"loss": loss, "scale": scaler.get_scale()}

    step = looprt.wrap(
        train_step,
        state={"model": model, "opt": opt, "scaler": scaler},
        inputs=batches,
        outputs=("loss", "scale"),
    )
    losses = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=directory,
        scaffold=looprt.Scaffold(program=step.program),
        hooks=[looprt.StopAtStepHook(last_step=last_step)],
        save_checkpoint_steps=SAVE_EVERY,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            out = sess.run({"loss": step.loss, "scale": step.scale})
            losses.append((float(out["loss"]), out["scale"]))
    return losses


def test_a_compiled_mixed_precision_step_checkpoints_its_scaler_and_resumes(tmp_path: Path) -> None:
    full = compiled_amp_program(str(tmp_path / "full"), 8)
    assert full[-1][1] > full[0][1]  # the scaler grew: its state matters
    first = compiled_amp_program(str(tmp_path / "run"), 5)
    assert first + compiled_amp_program(str(tmp_path / "run"), 8) == full


if __name__ == "__main__":
    directory, last, crash = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    train(directory, last, crash)
    sys.exit("did not crash")
