"""examples/torch_mlp.py reaches its stated accuracy, resumes, and runs under torchrun."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from looprt.checkpoint import CheckpointManager  # noqa: E402
from looprt.summary import SummaryWriterCache  # noqa: E402

pytestmark = pytest.mark.torch

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "torch_mlp.py"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: threads only contend on a busy machine
    yield
    torch.set_num_threads(threads)


def steps(run_dir: Path) -> list[int | None]:
    return [info.step for info in CheckpointManager(str(run_dir), create=False).checkpoints() if info.valid]


def test_the_mlp_reaches_its_stated_accuracy_and_resumes(tmp_path: Path) -> None:
    example = runpy.run_path(str(SCRIPT), run_name="example")
    run_dir = tmp_path / "run"
    try:
        accuracy = example["main"](["--steps", "200", "--dir", str(run_dir)])
        assert accuracy >= example["TARGET_ACCURACY"]
        example["main"](["--steps", "20", "--dir", str(run_dir)])
    finally:
        SummaryWriterCache.clear()
    assert steps(run_dir)[-1] == 220  # restored at 200, trained 20 more


def test_looprt_demo_backend_torch_trains_then_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from looprt.cli import main

    try:
        assert main(["demo", "--backend", "torch", "--steps", "150", "--dir", str(tmp_path)]) == 0
        assert main(["demo", "--backend", "torch", "--steps", "10", "--dir", str(tmp_path)]) == 0
    finally:
        SummaryWriterCache.clear()
    out = capsys.readouterr().out
    assert "started at step 0, trained to step 150" in out and "resumed from step 150, trained to step 160" in out
    accuracy = float(out.split("test accuracy ")[1].split()[0].rstrip(";"))
    assert accuracy > 0.9


@pytest.mark.slow
def test_the_same_script_runs_as_a_two_process_torchrun_job(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
            *(str(SCRIPT), "--steps", "40", "--dir", str(tmp_path / "run")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test accuracy") == 1  # printed by the chief only
    assert steps(tmp_path / "run")[-1] == 40
