"""SIGKILL at every boundary of the save protocol and at random moments; see ``killer.py``.

The default run kills a NumPy training run once per distinct boundary (and at
a few random moments), a few seconds in all; the ``slow`` tests (``nox -s
faults``) kill at every boundary hit, for every backend, hundreds of times.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from looprt.checkpoint import BOUNDARIES

KILLER = Path(__file__).with_name("killer.py")

# A payload subfolder exists only with a backend that writes one.
NOT_REACHED_BY = {"numpy": {"payload.dir_fsync.after"}, "torch": {"payload.dir_fsync.after"}}


def run_killer(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    report = tmp_path / "report.json"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, str(KILLER), "--report", str(report), "--scratch", str(scratch), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert report.exists(), f"the campaign crashed:\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(report.read_text())
    assert done.returncode == (1 if result["failures"] else 0), done.stderr[-4000:]
    return result


def assert_survived(report: dict[str, Any], backend: str, min_kills: int) -> None:
    assert report["failures"] == [], "\n".join(report["failures"][:10])
    assert report["kills"] >= min_kills
    assert report["chains_completed"] == report["chains"] > 0  # every killed run was resumed to the end
    assert set(report["boundaries_not_covered"]) == NOT_REACHED_BY.get(backend, set())
    assert set(report["boundaries_covered"]) | NOT_REACHED_BY.get(backend, set()) == set(BOUNDARIES)
    assert all(report["phases"][phase] > 0 for phase in ("every", "resumed", "random"))


def test_killed_at_every_boundary_loses_no_checkpoint_quick(tmp_path: Path) -> None:
    report = run_killer(tmp_path, "--backend", "numpy", "--mode", "quick", timeout=300)
    assert_survived(report, "numpy", min_kills=50)


def test_the_campaign_catches_a_protocol_that_loses_a_checkpoint(tmp_path: Path) -> None:
    # Deleting a checkpoint before its replacement is renamed in (instead of moving it
    # aside) loses the newest committed checkpoint to a kill in between.
    report = run_killer(
        tmp_path, "--backend", "numpy", "--mode", "quick", "--chains", "0",
        "--sabotage", "careless-replace", timeout=300,
    )
    failures = "\n".join(report["failures"])
    assert "killed at commit.move_aside.after" in failures
    assert "a damaged checkpoint was in view" in failures and "does not exist" in failures


def _has_torch_backend() -> bool:
    return importlib.util.find_spec("torch") is not None and (
        importlib.util.find_spec("looprt.backends.torch") is not None
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "mode", "chains", "min_kills"),
    [
        ("numpy", "full", 40, 600),
        ("numpy-sharded", "full", 40, 600),
        # A torch run takes ~10x longer (torch.save, and torch.load to verify): the quick
        # boundaries plus random chains.
        pytest.param(
            "torch", "quick", 15, 80,
            marks=[
                pytest.mark.torch,
                pytest.mark.skipif(not _has_torch_backend(), reason="needs torch and looprt.backends.torch"),
            ],
        ),
    ],
)
def test_killed_hundreds_of_times_at_every_hit_and_at_random(
    tmp_path: Path, backend: str, mode: str, chains: int, min_kills: int
) -> None:
    report = run_killer(
        tmp_path, "--backend", backend, "--mode", mode, "--chains", str(chains), "--seed", "1", timeout=1800
    )
    assert_survived(report, backend, min_kills=min_kills)
    print(json.dumps({k: report[k] for k in ("backend", "kills", "completions", "phases", "seconds")}))
