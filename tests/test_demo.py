"""``looprt demo`` trains, writes readable summaries and checkpoints, and resumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator

from looprt.checkpoint import CheckpointManager
from looprt.cli import main
from looprt.demo import run_demo


def test_demo_trains_then_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    first = run_demo(str(tmp_path), steps=200, progress=False)
    assert (first.first_step, first.last_step) == (0, 200)
    assert first.test_accuracy > 0.9  # a real model that learned
    second = run_demo(str(tmp_path), steps=100, progress=False)
    assert (second.first_step, second.last_step) == (200, 300)

    steps = [info.step for info in CheckpointManager(str(tmp_path)).checkpoints() if info.valid]
    assert steps[-1] == 300 and len(steps) == 5  # max_to_keep

    events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss", "accuracy", "global_step/sec"} <= set(tags["scalars"])
    assert "w1" in tags["histograms"]
    loss = events.Scalars("loss")
    assert loss[0].value > loss[-1].value  # the curve goes down
    assert max(e.step for e in loss) >= 200


def test_the_command_line(tmp_path: Path, capsys: object) -> None:
    directory = tmp_path / "run"
    assert main(["demo", "--steps", "50", "--dir", str(directory)]) == 0
    assert main(["checkpoints", str(directory)]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "started at step 0, trained to step 50" in out
    assert "model.ckpt-50" in out and "yes" in out
    assert main(["checkpoints", str(tmp_path / "missing")]) == 2  # see tests/test_cli.py


def test_python_dash_m_looprt_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "looprt", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout and "checkpoints" in out.stdout
