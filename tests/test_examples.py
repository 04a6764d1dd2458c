"""Every script in ``examples/`` runs, as a user would run it, with few steps.

The convention every example follows: it accepts ``--steps N`` (steps to
train in this run) and ``--dir DIR`` (its checkpoint and summary folder),
exits 0, and resumes from ``DIR`` when run again. An example whose imports
name a package that is not installed (``torch``, ``tensorflow``) is skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from looprt.checkpoint import CheckpointManager
from looprt.summary import SummaryWriterCache

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def imported_packages(script: Path) -> set[str]:
    """The top-level packages ``script`` imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.partition(".")[0])
    return names


def _missing(script: Path) -> list[str]:
    return sorted(name for name in imported_packages(script) if importlib.util.find_spec(name) is None)


def _run(script: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )


def test_there_is_an_example_per_available_backend() -> None:
    assert ROOT / "examples" / "numpy_regression.py" in EXAMPLES


def _checkpointed_steps(run_dir: Path) -> list[int | None]:
    return [info.step for info in CheckpointManager(str(run_dir), create=False).checkpoints() if info.valid]


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_as_a_script(script: Path, tmp_path: Path) -> None:
    missing = _missing(script)
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)}")
    result = _run(script, tmp_path, "--steps", "5", "--dir", "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _checkpointed_steps(tmp_path / "run")[-1:] == [5], result.stderr[-2000:]


def test_numpy_regression_learns_the_weights_and_resumes(tmp_path: Path) -> None:
    module = runpy.run_path(str(ROOT / "examples" / "numpy_regression.py"), run_name="example")
    run_dir = str(tmp_path / "run")
    try:
        error = module["main"](["--steps", "300", "--dir", run_dir])
        assert error < 0.05
        module["main"](["--steps", "20", "--dir", run_dir])
    finally:
        SummaryWriterCache.clear()
    steps = _checkpointed_steps(tmp_path / "run")
    assert steps[-1] == 320 and 300 in steps  # restored at 300, trained 20 more


def test_jax_mlp_reaches_its_target_and_resumes(tmp_path: Path) -> None:
    if _missing(ROOT / "examples" / "jax_mlp.py"):
        pytest.skip("jax_mlp.py needs jax and optax")
    module = runpy.run_path(str(ROOT / "examples" / "jax_mlp.py"), run_name="example")
    run_dir = str(tmp_path / "run")
    try:
        assert module["main"](["--steps", "200", "--dir", run_dir]) >= module["TARGET_ACCURACY"]
        module["main"](["--steps", "20", "--dir", run_dir])
    finally:
        SummaryWriterCache.clear()
    steps = _checkpointed_steps(tmp_path / "run")
    assert steps == [204, 208, 212, 216, 220]  # restored at 200, trained 20 more (the last 5 kept)
