"""Summaries survive SIGKILL: every summary up to the restored step is in TensorBoard, none twice.

Real processes (``summary_training.py``) killed with SIGKILL at random steps,
read back with TensorBoard's own ``EventAccumulator`` (which, as TensorBoard
does, drops what a resumed run's ``SessionLog`` START supersedes).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from looprt.checkpoint import latest_checkpoint

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SCRIPT = Path(__file__).with_name("summary_training.py")
LAST_STEP = 40


def loss_steps(directory: Path) -> list[int]:
    """The steps of the ``loss`` scalar as TensorBoard shows them, in order."""
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    if "loss" not in accumulator.Tags()["scalars"]:
        return []
    events = accumulator.Scalars("loss")
    assert all(e.value == e.step for e in events)  # the value written at that step, not another run's
    return [e.step for e in events]


def start(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(directory), str(LAST_STEP)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def run_until_step(directory: Path, kill_at: int) -> None:
    """Start a (resumed) run, and SIGKILL it once it printed step ``kill_at`` (or let it end)."""
    process = start(directory)
    assert process.stdout is not None
    for line in process.stdout:
        if int(line.split()[1]) >= kill_at:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)


def restored_step(directory: Path) -> int:
    path = latest_checkpoint(str(directory))
    return 0 if path is None else int(path.rsplit("-", 1)[1])


@pytest.mark.parametrize("seed", range(3))
def test_a_kill_at_a_random_step_loses_no_summary_up_to_the_restored_step(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    kill_points = sorted(rng.sample(range(2, LAST_STEP - 2), 3))
    for kill_at in kill_points:
        run_until_step(tmp_path, kill_at)
        restored = restored_step(tmp_path)
        assert restored >= 5 * ((kill_at - 4) // 5)  # checkpoints every 5 steps
        shown = loss_steps(tmp_path)
        assert set(range(1, restored + 1)) <= set(shown), (kill_at, restored, shown)
    process = start(tmp_path)
    process.communicate(timeout=120)
    assert process.returncode == 0
    # After the resumes, TensorBoard shows each step once, in order: the resumed runs'
    # START events purge what the killed runs wrote past their checkpoints.
    assert loss_steps(tmp_path) == list(range(1, LAST_STEP + 1))


def test_a_graceful_end_flushes_everything(tmp_path: Path) -> None:
    process = start(tmp_path)
    process.communicate(timeout=120)
    assert process.returncode == 0
    assert loss_steps(tmp_path) == list(range(1, LAST_STEP + 1))
    assert os.listdir(tmp_path)
