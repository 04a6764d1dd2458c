"""Recovery: ``AbortedError`` / ``UnavailableError`` from creation, runs and ``should_stop``, repeatedly.

A training loop with real checkpoints is hit by faults on a schedule; every
recovery re-creates the session from the latest checkpoint, and the loop ends
exactly where an undisturbed one does. ``max_recoveries`` turns a permanent
fault into a clear error after exponential backoff (injected, never slept).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.session.recoverable import RecoverableSession

LAST_STEP = 20


class Faults:
    """Which calls fail: ``creation``, ``run`` (by global step) and ``should_stop`` (by session)."""

    def __init__(self, creation: int = 0, runs: dict[int, int] | None = None, stops: int = 0,
                 error: type[Exception] = looprt.AbortedError) -> None:
        self.creation = creation  # the next N session creations fail
        self.runs = dict(runs or {})  # global step -> how many more times its run fails
        self.stops = stops  # the first N sessions have a thread that reports the error
        self.error = error
        self.log: list[str] = []


def make_program(faults: Faults) -> tuple[looprt.Program, looprt.Step]:
    prog = looprt.Program(name="recovering")
    prog.state("w", np.zeros(4))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray, global_step: np.ndarray) -> dict[str, float]:
        step = int(global_step)
        if faults.runs.get(step, 0) > 0:
            faults.runs[step] -= 1
            faults.log.append(f"run {step}")
            raise faults.error(f"peer lost during step {step}")
        w += np.random.default_rng(step).standard_normal(4)
        return {"loss": float(w @ w)}

    return prog, train


class FlakyCreator(looprt.SessionCreator):
    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner, self.faults, self.attempts = inner, faults, 0

    def create_session(self) -> Any:
        self.attempts += 1
        if self.faults.creation > 0:
            self.faults.creation -= 1
            self.faults.log.append("creation")
            raise self.faults.error("master unavailable")
        return self.inner.create_session()


class ThreadFault(looprt.SessionRunHook):
    """In the first ``faults.stops`` sessions, a background thread reports the error to the coordinator."""

    def __init__(self, faults: Faults) -> None:
        self.faults, self.sessions = faults, 0

    def after_create_session(self, session: Any, coord: looprt.Coordinator) -> None:
        self.sessions += 1
        if self.faults.stops > 0:
            self.faults.stops -= 1
            self.faults.log.append("should_stop")

            def lose_peer() -> None:
                with coord.stop_on_exception():
                    raise self.faults.error("queue runner lost its peer")

            thread = threading.Thread(target=lose_peer)
            coord.register_thread(thread)
            thread.start()
            thread.join()  # reported before the loop asks should_stop


def train_to_the_end(directory: Path, faults: Faults, **session_kwargs: Any) -> tuple[np.ndarray, int, ThreadFault]:
    prog, train = make_program(faults)
    creator = FlakyCreator(
        looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_dir=str(directory)), faults
    )
    thread_fault = ThreadFault(faults)
    hooks = [looprt.CheckpointSaverHook(str(directory), save_steps=3), thread_fault]
    with looprt.MonitoredSession(creator, hooks=hooks, **session_kwargs) as sess:
        while not sess.should_stop() and sess.run(prog.global_step) < LAST_STEP:
            sess.run(train)
    return prog.states["w"].value.copy(), creator.attempts, thread_fault


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    w, attempts, _ = train_to_the_end(tmp_path_factory.mktemp("undisturbed"), Faults())
    assert attempts == 1
    return w


@pytest.mark.parametrize("error", [looprt.AbortedError, looprt.UnavailableError])
def test_faults_everywhere_repeatedly_end_where_an_undisturbed_run_ends(
    tmp_path: Path, undisturbed: np.ndarray, error: type[Exception]
) -> None:
    faults = Faults(creation=3, runs={4: 2, 7: 1, 13: 3, 19: 1}, stops=2, error=error)
    w, attempts, thread_fault = train_to_the_end(tmp_path, faults)
    assert w.tobytes() == undisturbed.tobytes()  # bit-identical: recovery lost nothing
    assert faults.log.count("creation") == 3 and faults.log.count("should_stop") == 2
    assert [e for e in faults.log if e.startswith("run")] == ["run 4"] * 2 + ["run 7", *["run 13"] * 3, "run 19"]
    # one session per recovery (7 runs + 2 thread faults), plus the first; 3 failed creations
    assert thread_fault.sessions == 1 + 7 + 2
    assert attempts == thread_fault.sessions + 3


def test_a_recovered_session_restores_the_latest_checkpoint(tmp_path: Path) -> None:
    faults = Faults(runs={8: 1})
    prog, train = make_program(faults)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_dir=str(tmp_path))
    steps_seen = []
    with looprt.MonitoredSession(creator, hooks=[looprt.CheckpointSaverHook(str(tmp_path), save_steps=3)]) as sess:
        while int(prog.global_step.value) < 10:
            sess.run(train)
            steps_seen.append(int(prog.global_step.value))
    # The run of step 8 failed: the session came back at checkpoint 6, and steps 7.. ran again.
    assert steps_seen == [1, 2, 3, 4, 5, 6, 7, 8, 7, 8, 9, 10]


def test_by_default_recovery_has_no_bound_as_in_tf(tmp_path: Path, undisturbed: np.ndarray) -> None:
    faults = Faults(creation=25, runs={5: 40})
    w, attempts, _ = train_to_the_end(tmp_path, faults)
    assert w.tobytes() == undisturbed.tobytes()
    assert attempts == 25 + 1 + 40


@pytest.mark.parametrize("where", ["creation", "run", "should_stop"])
def test_max_recoveries_ends_a_permanent_fault_with_a_clear_error(tmp_path: Path, where: str) -> None:
    faults = Faults(
        creation=10**6 if where == "creation" else 0,
        runs={2: 10**6} if where == "run" else None,
        stops=10**6 if where == "should_stop" else 0,
        error=looprt.UnavailableError,
    )
    with pytest.raises(looprt.UnavailableError) as info:
        train_to_the_end(tmp_path, faults, max_recoveries=4)
    # 4 recoveries after the last progress, then it gave up (a should_stop fault at step 0 is
    # got past once: the step after it completes before the next check).
    assert len(faults.log) == (7 if where == "should_stop" else 5)
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "gave up after 4 consecutive recoveries (max_recoveries=4)" in notes


def test_successful_runs_reset_the_count(tmp_path: Path, undisturbed: np.ndarray) -> None:
    # Every step fails once, then succeeds: 20 recoveries in all, never two in a row.
    faults = Faults(runs={step: 1 for step in range(LAST_STEP)})
    w, _, _ = train_to_the_end(tmp_path, faults, max_recoveries=1)
    assert w.tobytes() == undisturbed.tobytes()


class AlwaysUnavailable(looprt.SessionCreator):
    def __init__(self) -> None:
        self.attempts = 0

    def create_session(self) -> Any:
        self.attempts += 1
        raise looprt.UnavailableError("no master")


def test_backoff_doubles_up_to_its_cap() -> None:
    sleeps: list[float] = []
    creator = AlwaysUnavailable()
    with pytest.raises(looprt.UnavailableError):
        RecoverableSession(
            creator, (looprt.UnavailableError,), max_recoveries=6, backoff_secs=0.5, max_backoff_secs=5.0,
            sleep=sleeps.append,
        )
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert creator.attempts == 7


def test_monitored_session_passes_the_backoff_on(tmp_path: Path) -> None:
    faults = Faults(runs={0: 10**6})
    prog, train = make_program(faults)
    sess = looprt.MonitoredSession(
        looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), max_recoveries=3, recovery_backoff_secs=2.0
    )
    sleeps: list[float] = []
    sess._sess._sleep = sleeps.append  # the recoverable layer's injectable sleep
    with pytest.raises(looprt.AbortedError):
        sess.run(train)
    assert sleeps == [2.0, 4.0, 8.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_recoveries": -1}, "max_recoveries"),
        ({"max_recoveries": 2.5}, "max_recoveries"),
        ({"max_recoveries": True}, "max_recoveries"),
        ({"recovery_backoff_secs": -1.0}, "recovery_backoff_secs"),
        ({"recovery_backoff_secs": float("nan")}, "recovery_backoff_secs"),
        ({"recovery_backoff_secs": float("inf")}, "recovery_backoff_secs"),
    ],
)
def test_bad_recovery_options_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    prog, _ = make_program(Faults())
    with pytest.raises(ValueError, match=match):
        looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), **kwargs)
