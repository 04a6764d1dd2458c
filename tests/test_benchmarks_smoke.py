"""Smoke tests of benchmarks/: every script runs in its quick mode, prints its tables, writes JSON.

Never asserts speed or memory figures: those from --quick are noise. What is
asserted is what the figures stand on: the variants that ran, the hooks that
got their results, the plan cache's hits and misses, the checkpoints written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
HEADER_COLUMNS = ("hooks", "per-step us", "overhead us", "looprt/TF", "looprt/Ignite")
HAS_TF = find_spec("tensorflow") is not None
HAS_TORCH = find_spec("torch") is not None
HAS_IGNITE = find_spec("ignite") is not None and HAS_TORCH
HAS_LIGHTNING = find_spec("lightning") is not None and HAS_TORCH


def _run(script: str, *args: str, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def _report(result: subprocess.CompletedProcess[str], path: Path) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(path.read_text(encoding="utf-8"))


def _overhead_header_lines(stdout: str) -> list[str]:
    return [
        line
        for line in stdout.splitlines()
        if line.startswith("variant") and all(column in line for column in HEADER_COLUMNS)
    ]


# --- bench_overhead ------------------------------------------------------------------------


def test_overhead_quick_run_without_peers(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    result = _run("bench_overhead.py", "--quick", "--no-tf", "--no-ignite", "--json", str(out), tmp_path=tmp_path)
    report = _report(result, out)

    # Table 1 (trivial session) and table 3 (standard hooks, each runtime's own session).
    assert len(_overhead_header_lines(result.stdout)) == 2, result.stdout
    assert "--no-tf given: skipping the TensorFlow column" in result.stdout
    assert "--no-ignite given: skipping the Ignite column" in result.stdout
    assert "target: looprt overhead <= 0.25 x TF's at 0, 5, 20 hooks (standard hooks): not checked" in result.stdout
    standard = [(row["runtime"], row["role"], row["hooks"]) for row in report["standard"]["rows"]]
    assert standard == [
        ("looprt", "bare", 0), ("looprt", "aa", 0), ("looprt", "hooks", 0), ("looprt", "hooks", 5), ("looprt", "hooks", 20)
    ]
    assert "NumPy softmax regression step" in result.stdout

    runtimes = {(row["runtime"], row["hooks"]) for row in report["overhead"]}
    assert runtimes == {
        ("bare", 0), ("floor", 5), ("floor", 20), ("looprt", 0), ("looprt", 5), ("looprt", 20)
    }
    for row in report["overhead"]:
        assert len(row["samples_us"]) == report["config"]["repeats"] == 2
        assert row["per_step_us"] > 0
    assert {peer: verdict["met"] for peer, verdict in report["targets"].items()} == {"tf": None, "ignite": None}
    assert [row["runtime"] for row in report["softmax"]["rows"]] == ["bare", "raw", "looprt", "training"]

    # The allocation check's counts are exact (they are not timings).
    alloc = report["allocation"]
    assert alloc["quiet_runs"] + alloc["fetch_runs"] == alloc["runs"] == 1000
    assert alloc["fetch_runs"] == 10  # every 100th run
    assert alloc["quiet_runs_passed_through"] == alloc["quiet_runs"]
    assert alloc["quiet_shared_values_objects"] == 1
    assert alloc["fetch_blocks_alive_max"] > 0
    assert set(alloc["peak_bytes_per_run"]) == {"floor", "looprt"}
    assert "target: quiet runs allocate no result structures" in result.stdout


@pytest.mark.parametrize(
    "args", [("--steps", "0"), ("--repeats", "-1")], ids=["zero-steps", "negative-repeats"]
)
def test_overhead_bad_arguments_fail(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = _run("bench_overhead.py", "--quick", "--no-tf", "--no-ignite", *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert not _overhead_header_lines(result.stdout)


# --- bench_merge ---------------------------------------------------------------------------


def test_merge_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "merge.json"
    result = _run("bench_merge.py", "--quick", "--json", str(out), tmp_path=tmp_path)
    report = _report(result, out)

    assert "Table 1: plan cost against the number of leaves" in result.stdout
    assert "Table 2: looprt.MonitoredSession run against the number of hooks" in result.stdout
    assert "Table 3: the plan cache" in result.stdout
    assert [row["leaves"] for row in report["leaves"]] == [1, 10, 100]
    for row in report["leaves"]:
        assert row["cache_misses"] == 1 and row["cache_hits"] > 0
    assert [row["hooks"] for row in report["hooks"]] == [1, 2, 5]
    for row in report["hooks"]:
        # One merged structure per hook count: compiled once, then a hit on every run.
        assert row["runs"] > 0
        assert (row["cache_misses"], row["cache_hits"]) == (1, row["runs"] - 1)
        assert row["unique_leaves"] == 10 + 5 * row["hooks"]
    assert report["cache_hit"] is True
    repeated, changing = report["cache"]
    assert (repeated["misses"], repeated["hits"], repeated["cached_plans"]) == (1, repeated["runs"] - 1, 1)
    assert (changing["hits"], changing["misses"]) == (0, changing["runs"])
    for fit in (*report["leaf_fits"].values(), report["hook_fit"]):
        assert set(fit) == {"slope", "intercept", "r2", "growth"}


def test_merge_bad_arguments_fail(tmp_path: Path) -> None:
    result = _run("bench_merge.py", "--quick", "--repeats", "0", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "Table 1" not in result.stdout


# --- bench_memory --------------------------------------------------------------------------


def test_memory_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    result = _run("bench_memory.py", "--quick", "--json", str(out), tmp_path=tmp_path)
    report = _report(result, out)

    assert (report["steps"], report["every"], report["hooks"]) == (200, 100, 20)
    assert [s["step"] for s in report["samples"]] == [100, 200]
    assert [s["latest_checkpoint"] for s in report["samples"]] == ["model.ckpt-100", "model.ckpt-200"]
    for s in (report["start"], *report["samples"]):
        assert s["peak_rss_mib"] > 0 and s["traced_current_bytes"] > 0
    assert set(report["growth"]) == {"peak_rss_mib", "traced_current_bytes", "allocated_blocks", "gc_objects"}
    assert "target: flat memory" in result.stdout


def test_memory_bad_arguments_fail(tmp_path: Path) -> None:
    result = _run("bench_memory.py", "--steps", "10", "--every", "100", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "peak RSS" not in result.stdout


# --- bench_all -------------------------------------------------------------------------------


def test_all_quick_run_prints_one_table(tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    result = _run("bench_all.py", "--quick", "--verbose", "--json", str(out), tmp_path=tmp_path, timeout=240)
    report = _report(result, out)

    summary_headers = [line for line in result.stdout.splitlines() if line.split()[:2] == ["benchmark", "case"]]
    assert len(summary_headers) == 1, result.stdout
    benchmarks = {row["benchmark"] for row in report["summary"]}
    assert benchmarks == {"overhead", "alloc", "softmax", "merge", "memory"} | ({"torch"} if HAS_TORCH else set())
    assert set(report["reports"]) == {"overhead", "merge", "memory", "torch"}
    assert (report["reports"]["torch"] is not None) == HAS_TORCH
    # --verbose: each benchmark's own tables come first.
    assert len(_overhead_header_lines(result.stdout)) == 2
    assert "Table 2: looprt.MonitoredSession run against the number of hooks" in result.stdout

    cases = [row["case"] for row in report["summary"] if row["benchmark"] == "overhead"]
    expected = []
    for table in ("standard hooks", "overhead/step"):
        if HAS_TF:
            expected += [f"{table}, {n} hooks, vs tf.train.MonitoredSession" for n in (0, 5, 20)]
        if HAS_IGNITE:
            expected += [f"{table}, {n} hooks, vs ignite.engine.Engine" for n in (0, 5, 20)]
    assert cases == expected
    overhead = report["reports"]["overhead"]
    ignite_rows = [row for row in overhead["overhead"] if row["runtime"] == "ignite"]
    assert [row["hooks"] for row in ignite_rows] == ([0, 5, 20] if HAS_IGNITE else [])
    for peer, installed in (("tf", HAS_TF), ("ignite", HAS_IGNITE)):
        verdict = overhead["targets"][peer]
        if installed:
            # Judged, or None where a quick run's peer overhead was too small to divide by.
            assert verdict["ratios"] and verdict["met"] in (True, False, None)
        else:
            assert verdict["met"] is None
    assert report["summary"][-1]["benchmark"] == ("torch" if HAS_TORCH else "memory")
    assert "targets missed:" in result.stdout


# --- bench_torch's options, bench_cuda ----------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_torch_batch_option(tmp_path: Path) -> None:
    out = tmp_path / "torch.json"
    result = _run("bench_torch.py", "--quick", "--no-peers", "--batch", "16", "--json", str(out), tmp_path=tmp_path)
    report = _report(result, out)
    assert report["config"]["batch"] == 16
    assert [row["variant"] for row in report["rows"]][-1] == "MonitoredTrainingSession"
    monitored = report["rows"][-1]
    assert report["target"]["measured"] == monitored["overhead_ratio"]
    assert "batch 16" in result.stdout


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_torch_peers_table(tmp_path: Path) -> None:
    out = tmp_path / "torch.json"
    result = _run("bench_torch.py", "--quick", "--json", str(out), tmp_path=tmp_path)
    report = _report(result, out)
    peers = report["peers"]
    assert (peers["block_steps"], peers["rounds"]) == (10, 2)
    variants = [row["variant"] for row in peers["rows"]]
    assert variants[:3] == ["bare loop", "bare loop, again (A/A control)", "MonitoredTrainingSession loop"]
    assert ("Ignite Engine + handlers" in variants) == HAS_IGNITE
    assert ("Lightning, marginal per step" in variants) == HAS_LIGHTNING
    for name, samples in peers["samples_us"].items():
        assert len(samples) == 2, name
    if not (HAS_IGNITE and HAS_LIGHTNING):
        assert "not installed, skipped:" in result.stdout
    no_peers = _run("bench_torch.py", "--quick", "--no-peers", "--json", str(out), tmp_path=tmp_path)
    assert _report(no_peers, out)["peers"] is None


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_cuda_benchmark_runs_its_timing_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "cuda.json"
    result = _run("bench_cuda.py", "--quick", "--device", "cpu", "--json", str(out), tmp_path=tmp_path)
    report = _report(result, out)
    assert [model["model"] for model in report["models"]] == ["small", "large"]
    for model in report["models"]:
        assert [row["variant"] for row in model["rows"]] == [
            "bare", "bare, again (A/A control)", "raw session", "MonitoredTrainingSession"
        ]
        assert "syncs" not in model  # counting synchronisations needs CUDA
    assert result.stdout.count("target: MonitoredTrainingSession within 1% of the step") == 3
    assert [model.get("steps") for model in report["models"]] == [20, None]  # single steps: the small model


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_cuda_benchmark_without_a_device_measures_nothing(tmp_path: Path) -> None:
    result = _run("bench_cuda.py", "--quick", "--models", "small,huge", "--device", "cpu", tmp_path=tmp_path)
    assert result.returncode == 2 and "unknown models: ['huge']" in result.stderr
    if not __import__("torch").cuda.is_available():
        result = _run("bench_cuda.py", "--quick", tmp_path=tmp_path)
        assert result.returncode == 0 and "no CUDA device; nothing measured" in result.stdout


# --- bench_jax -------------------------------------------------------------------------------


@pytest.mark.skipif(find_spec("jax") is None or find_spec("optax") is None, reason="needs JAX and Optax")
def test_jax_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "jax.json"
    report = _report(_run("bench_jax.py", "--quick", "--json", str(out), tmp_path=tmp_path), out)
    assert [row["variant"] for row in report["rows"]] == ["bare loop", "Optax hand loop", "MonitoredTrainingSession"]
    assert all(len(samples) == 2 for samples in report["samples_us"].values())
    assert set(report["target"]) == {"overhead_vs_hand_loop", "overhead_vs_step"}


# --- bench_storage ---------------------------------------------------------------------------


@pytest.mark.skipif(
    not HAS_TORCH or find_spec("s3fs") is None or find_spec("moto") is None, reason="needs torch, s3fs, moto"
)
def test_storage_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "storage.json"
    result = _run("bench_storage.py", "--quick", "--json", str(out), tmp_path=tmp_path, timeout=300)
    report = _report(result, out)

    assert (report["mib"], report["repeats"]) == (4, 2)
    assert set(report["ratios"]) == {"local save", "local restore", "s3 save", "s3 restore"}
    assert report["async"]["steps measured"] > 0
    assert report["async"]["step during hand upload us"] > 0
    assert "target looprt <= 1.3x by hand:" in result.stdout
    assert "target step time during an upload <= 1.05x:" in result.stdout


# --- bench_versions --------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH or not (ROOT / ".git").exists(), reason="needs torch and a git checkout")
def test_versions_quick_run(tmp_path: Path) -> None:
    result = _run("bench_versions.py", "HEAD", "--rounds", "5", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split(" overhead")[0].strip() for line in result.stdout.splitlines() if " overhead " in line]
    assert rows == [
        "bare, again (A/A control)",
        "MonitoredTrainingSession, this checkout",
        "MonitoredTrainingSession, HEAD",
    ]


@pytest.mark.skipif(not HAS_TORCH or not (ROOT / ".git").exists(), reason="needs torch and a git checkout")
def test_versions_unknown_revision(tmp_path: Path) -> None:
    result = _run("bench_versions.py", "no-such-revision", "--rounds", "5", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "no-such-revision" in result.stderr


# --- bench_cold --------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH, reason="bench_cold needs torch")
def test_cold_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "cold.json"
    report = _report(_run("bench_cold.py", "--quick", "--json", str(out), tmp_path=tmp_path), out)
    assert set(report["overhead_us"]) == {
        "bare, again (A/A control)",
        "raw session",
        "MonitoredSession, no hooks",
        "MonitoredTrainingSession",
        "step + raw run of a no-op step",
        "step + raw run of a no-op step returning a value, not a mapping",
        "step + MonitoredTrainingSession run of a no-op step",
        "step + 40 small functions",
        "step + 40 small functions, each on an object of its own class",
    }
    assert set(report["hot_us"]) == set(report["cold_over_hot"])
    assert all(per_run > 0 for per_run in report["hot_us"].values())
    assert os.listdir(tmp_path) == ["cold.json"]  # the sessions' checkpoints went to a temporary folder
