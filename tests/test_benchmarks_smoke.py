"""Smoke test of benchmarks/bench_overhead.py: it runs, prints its tables, writes JSON.

Never asserts speed: the figures from --quick are noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_overhead.py"
HEADER_START = "variant"
HEADER_COLUMNS = ("hooks", "per-step us", "overhead us", "looprt/TF")


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def _header_lines(stdout: str) -> list[str]:
    return [
        line
        for line in stdout.splitlines()
        if line.startswith(HEADER_START) and all(column in line for column in HEADER_COLUMNS)
    ]


@pytest.mark.parametrize("tf_flag", [(), ("--no-tf",)], ids=["tf-if-installed", "no-tf"])
def test_quick_run_prints_table_and_writes_json(tmp_path: Path, tf_flag: tuple[str, ...]) -> None:
    out = tmp_path / "figures.json"
    result = _run("--json", str(out), *tf_flag, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(_header_lines(result.stdout)) == 1, result.stdout
    assert "target: looprt overhead <= 0.25 x TF's" in result.stdout
    assert "NumPy softmax regression step" in result.stdout

    report = json.loads(out.read_text(encoding="utf-8"))
    runtimes = {(row["runtime"], row["hooks"]) for row in report["overhead"]}
    expected = {("bare", 0), ("looprt", 0), ("looprt", 5), ("looprt", 20), ("floor", 5), ("floor", 20)}
    assert expected <= runtimes
    tf_rows = {key for key in runtimes if key[0] == "tf"}
    if tf_flag or report["versions"]["tensorflow"] is None:
        assert not tf_rows
        assert report["target"]["met"] is None
        assert "skipping the TensorFlow column" in result.stdout
    else:
        assert tf_rows == {("tf", 0), ("tf", 5), ("tf", 20)}
        assert isinstance(report["target"]["met"], bool)
    for row in report["overhead"]:
        assert len(row["samples_us"]) == report["config"]["repeats"] == 2
        assert row["per_step_us"] > 0
    assert [row["runtime"] for row in report["softmax"]["rows"]] == ["bare", "raw", "looprt"]


def test_bad_arguments_fail(tmp_path: Path) -> None:
    result = _run("--steps", "0", "--no-tf", tmp_path=tmp_path)
    assert result.returncode == 2
    assert not _header_lines(result.stdout)
