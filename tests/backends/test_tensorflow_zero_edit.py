"""Zero-edit adoption: an unmodified tf.compat.v1 script under ``python -m looprt.tf`` behaves as under TF.

``tests/scripts/tf1_regression.py`` disables TF2 behaviour (reference
variables), sets TF's log verbosity, writes ``tf.train.X`` inline and defines
its own ``train()``. It runs in a fresh process with ``python`` and with
``python -m looprt.tf`` (and ``-m`` for a module): the looprt run must use
the drop-in's sessions and give TF's losses, TF's log lines on TF's logger,
TF's checkpoint steps and a state file of TF's mode.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

tf = pytest.importorskip("tensorflow")
train = pytest.importorskip("looprt.backends.tensorflow")

import looprt  # noqa: E402

pytestmark = pytest.mark.tensorflow

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SCRIPT = SCRIPTS / "tf1_regression.py"


def run(prefix: list[str], model_dir: Path, cwd: Path | None = None, script: str = str(SCRIPT)) -> dict[str, Any]:
    """Run the script (``prefix`` + script + arguments); its result, log lines and process."""
    done = subprocess.run(
        [sys.executable, *prefix, script, "--model_dir", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    # TF's log lines, with the run's own directory and timings taken out.
    lines = [
        re.sub(r"\(\d+\.\d+ sec\)", "(_ sec)", line.replace(str(model_dir), "<dir>"))
        for line in done.stderr.splitlines()
        if line.startswith("INFO:tensorflow:")
    ]
    return {"result": result, "lines": lines, "dir": model_dir}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("zero-edit")
    return {
        "tf": run([], base / "tf"),
        "looprt": run(["-m", "looprt.tf"], base / "looprt"),
        "module": run(["-m", "looprt.tf", "-m"], base / "module", cwd=SCRIPTS, script=SCRIPT.stem),
    }


def test_the_script_runs_on_the_drop_in_with_tfs_results(runs: dict[str, dict[str, Any]]) -> None:
    theirs = runs["tf"]["result"]
    assert theirs["session"].startswith("tensorflow.") and not theirs["resource"]
    for name in ("looprt", "module"):
        ours = runs[name]["result"]
        assert ours["session"] == "looprt.backends.tensorflow.monitored_session"
        assert ours["losses"] == theirs["losses"]
        assert len(ours["losses"]) == 12


def test_tfs_verbosity_shows_the_same_log_lines(runs: dict[str, dict[str, Any]]) -> None:
    expected = runs["tf"]["lines"]
    assert "INFO:tensorflow:Saving checkpoints for 12 into <dir>/model.ckpt." in expected
    assert sum(line.startswith("INFO:tensorflow:loss = ") for line in expected) == 3
    assert runs["looprt"]["lines"] == expected


def test_checkpoints_and_state_file_as_tfs(runs: dict[str, dict[str, Any]]) -> None:
    ours, theirs = runs["looprt"]["dir"], runs["tf"]["dir"]
    state = tf.train.get_checkpoint_state(str(ours))
    assert state.model_checkpoint_path.endswith("model.ckpt-12")
    assert tf.train.get_checkpoint_state(str(theirs)).model_checkpoint_path.endswith("model.ckpt-12")
    assert [c.step for c in looprt.CheckpointManager(str(ours)).checkpoints()][-1] == 12
    tf_mode = stat.S_IMODE(os.stat(theirs / "checkpoint").st_mode)
    assert stat.S_IMODE(os.stat(ours / "checkpoint").st_mode) == tf_mode
    assert stat.S_IMODE(os.stat(ours / "model.ckpt-12" / "checkpoint").st_mode) == tf_mode


def test_install_routes_the_family_and_uninstall_puts_tfs_back() -> None:
    tf_session = tf.compat.v1.train.MonitoredTrainingSession
    train.install()
    try:
        train.install()  # idempotent
        assert train.installed()
        assert tf.compat.v1.train.MonitoredTrainingSession is train.MonitoredTrainingSession
        assert tf.compat.v1.train.StopAtStepHook is train.StopAtStepHook
        assert tf.compat.v1.train.SessionRunHook is not train.SessionRunHook  # TF's base stays
    finally:
        train.uninstall()
    assert not train.installed()
    assert tf.compat.v1.train.MonitoredTrainingSession is tf_session


def test_usage_without_a_script() -> None:
    done = subprocess.run([sys.executable, "-m", "looprt.tf"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "usage: python -m looprt.tf script.py" in done.stderr
