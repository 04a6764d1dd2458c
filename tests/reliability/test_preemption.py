"""Preemption: SIGTERM saves a final checkpoint at the next step boundary and ends cleanly.

The first tests send a real SIGTERM to a real training process
(``preempted_training.py``); the others drive ``PreemptionHook`` in this
process with ``signal.raise_signal``.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.checkpoint import latest_checkpoint
from looprt.hooks.preemption import PreemptionHook, notice

SCRIPT = Path(__file__).with_name("preempted_training.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(autouse=True)
def no_preemption_left_behind() -> Iterator[None]:
    """A test that fails halfway must not leave a handler, a notice or a deadline behind."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)
    notice.clear()
    for thread in threading.enumerate():
        if thread.name == "looprt-preemption-deadline" and isinstance(thread, threading.Timer):
            thread.cancel()


def start(directory: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    stderr = directory.parent / "stderr.txt"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(directory), *args],
        stdout=subprocess.PIPE,
        stderr=stderr.open("w"),
        text=True,
    )
    return proc, stderr


def wait_for_line(proc: subprocess.Popen[str], wanted: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(f"the training process ended before printing {wanted!r}")


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_sigterm_saves_the_step_it_stopped_at_and_ends_cleanly(tmp_path: Path, async_save: bool) -> None:
    directory = tmp_path / "run"
    proc, stderr = start(directory, "--grace", "60", *(["--async-save"] if async_save else []))
    wait_for_line(proc, "step 5")  # training is under way
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    took = time.monotonic() - signalled
    log = stderr.read_text()
    assert proc.returncode == 0, log[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("ended preempted=True step="), last
    final_step = int(last.rpartition("=")[2])
    assert final_step >= 5
    assert f"step {final_step}" in out.splitlines()  # it stopped right after that step's run
    assert latest_checkpoint(str(directory)) == str(directory / f"model.ckpt-{final_step}")
    assert log.count(f"Saving checkpoints for {final_step} into") == 1  # once: end() did not save again
    assert "Received SIGTERM: saving a checkpoint at the next step boundary" in log
    assert took < 60  # well within the grace period

    prog = looprt.Program(name="preempted")
    w = prog.state("w", np.zeros(4))
    looprt.Saver(prog).restore(None, str(directory / f"model.ckpt-{final_step}"))
    np.testing.assert_array_equal(w.value, np.full(4, float(final_step)))


def test_a_step_that_hangs_past_the_grace_period_exits_with_the_signal_status(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    proc, stderr = start(directory, "--grace", "1", "--hang-at", "3")
    wait_for_line(proc, "hanging")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    log = stderr.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert "did not end within the 1s grace period after SIGTERM" in log
    assert f"Exiting now with status {128 + signal.SIGTERM}" in log
    # The checkpoint of step 3 was committed before the hanging step began; it is intact.
    assert latest_checkpoint(str(directory)) == str(directory / "model.ckpt-3")


# -- in this process -------------------------------------------------------------------


def program() -> tuple[looprt.Program, looprt.Step]:
    prog = looprt.Program(name="inproc")
    prog.state("w", np.zeros(2))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w.sum())}

    return prog, train


class SignalAt(looprt.SessionRunHook):
    """Raises a real SIGTERM in this process during the run that ends at ``step``."""

    def __init__(self, prog: looprt.Program, step: int) -> None:
        self.prog, self.step = prog, step

    def before_run(self, run_context: Any) -> None:
        if int(self.prog.global_step.value) + 1 == self.step:
            signal.raise_signal(signal.SIGTERM)


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_the_hook_stops_after_the_current_step_with_one_final_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, async_save: bool
) -> None:
    prog, train = program()
    before = signal.getsignal(signal.SIGTERM)
    saver_hook = looprt.CheckpointSaverHook(str(tmp_path), save_steps=100, async_save=async_save)
    hook = PreemptionHook(grace_secs=600)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    runs = 0
    with caplog.at_level(logging.INFO, logger="looprt"), looprt.MonitoredSession(
        creator, hooks=[SignalAt(prog, 4), saver_hook, hook]
    ) as sess:
        assert signal.getsignal(signal.SIGTERM) == hook._on_signal
        while not sess.should_stop():
            sess.run(train)
            runs += 1
            assert runs < 100
    assert runs == 4 and hook.preempted
    assert notice.signum is None  # handled and cleared by the hook's end
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-4")
    saves = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Saving checkpoints for")]
    assert [s.split()[3] for s in saves] == ["0", "4"]
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def test_without_a_checkpoint_saver_hook_the_stop_is_logged_as_unsaved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prog, train = program()
    hook = PreemptionHook(grace_secs=600)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with caplog.at_level(logging.WARNING, logger="looprt"), looprt.MonitoredSession(
        creator, hooks=[SignalAt(prog, 2), hook]
    ) as sess:
        while not sess.should_stop():
            sess.run(train)
    assert int(prog.global_step.value) == 2
    assert any("without a final checkpoint" in r.getMessage() for r in caplog.records)


def test_the_hook_needs_the_main_thread() -> None:
    prog, _ = program()
    errors: list[BaseException] = []

    def in_a_thread() -> None:
        try:
            looprt.MonitoredSession(
                looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=[PreemptionHook()]
            )
        except RuntimeError as e:
            errors.append(e)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"grace_secs": 0}, ValueError, "grace_secs"),
        ({"grace_secs": float("nan")}, ValueError, "grace_secs"),
        ({"grace_secs": "30"}, ValueError, "grace_secs"),
        ({"signals": ()}, ValueError, "at least one signal"),
        ({"signals": (12345,)}, ValueError, "12345"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        PreemptionHook(**kwargs)
