"""Idle runs (``looprt.hooks.idle``): hooks skipped between their triggers, with no visible change.

The central test plays random schedules (train runs, loss fetches, runs that do not advance
the global step, feeds, options, restores to an earlier step, a replaced
counter, wake-ups, stop checks) twice, with idle runs allowed and with every
hook called on every run, and requires the same results, the same summaries,
checkpoints, log records and stop decisions. The others check that hooks are
really skipped, and the protocol's edges: subclasses, catch-up, recovery,
signals.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import looprt
from looprt.hooks import idle
from looprt.hooks.checkpoint_saver import CheckpointSaverHook
from looprt.hooks.preemption import PreemptionHook, notice
from looprt.hooks.step_counter import StepCounterHook
from looprt.hooks.stop_at_step import StopAtStepHook
from looprt.hooks.summary_saver import SummarySaverHook


class Clock:
    """A fake ``time.time``: moves only between runs."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordingWriter:
    """A summary writer that records what the hooks write."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def add_summary(self, summary: Any, step: Any) -> None:
        self.log.append(("summary", sorted(summary), int(step)))

    def add_scalar(self, tag: str, value: Any, step: Any) -> None:
        self.log.append(("scalar", tag, round(float(value), 6), int(step)))

    def add_session_log_start(self, step: Any) -> None:
        self.log.append(("start", int(step)))

    def flush(self) -> None:
        self.log.append(("flush",))


class RecordingListener(looprt.CheckpointSaverListener):
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def before_save(self, session: Any, global_step_value: Any) -> None:
        self.log.append(("save", int(global_step_value)))


class CountingHook(looprt.SessionRunHook):
    """An idle hook of the test's own: idle until ``wake_at``; records every call."""

    def __init__(self, wake_at: float = math.inf) -> None:
        self.wake_at = wake_at
        self.calls: list[Any] = []

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.calls.append("after_create_session")

    def before_run(self, run_context: Any) -> None:
        self.calls.append("before_run")

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.calls.append("after_run")

    def end(self, session: Any) -> None:
        self.calls.append("end")

    def idle_until(self) -> tuple[float, float]:
        return (self.wake_at, math.inf)

    def after_idle_runs(self, global_step: int) -> None:
        self.calls.append(("after_idle_runs", global_step))


def make_program(name: str = "idle") -> tuple[looprt.Program, Any, Any]:
    prog = looprt.Program(backend="numpy", name=name)
    prog.state("w", np.zeros(2))
    prog.input("x", default=np.ones(2))

    @prog.step(outputs=("loss",))
    def train(w: Any, x: Any) -> dict[str, Any]:
        w += 0.5 * x
        return {"loss": float(w.sum())}

    @prog.step(outputs=("total",), advance_global_step=False)
    def probe(w: Any) -> dict[str, Any]:
        return {"total": float(w.sum())}

    prog.summary("total", probe.total)
    return prog, train, probe


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


def hooked_of(sess: Any) -> Any:
    return sess._coordinated_creator.hooked


# ----------------------------------------------------------------------- equivalence

OPS = ("train", "train", "train", "loss", "loss", "probe", "feed", "options", "restore", "replace", "wake", "tick")

configs = st.fixed_dictionaries(
    {
        "counter": st.one_of(
            st.builds(lambda n: {"every_n_steps": n}, st.integers(1, 7)),
            st.builds(lambda s: {"every_n_steps": None, "every_n_secs": s}, st.sampled_from([5.0, 12.5])),
        ),
        "summary": st.one_of(
            st.builds(lambda n: {"save_steps": n}, st.integers(1, 9)),
            st.builds(lambda s: {"save_secs": s}, st.sampled_from([7.0, 20.0])),
        ),
        "checkpoint": st.one_of(
            st.builds(lambda n: {"save_steps": n}, st.integers(1, 12)),
            st.builds(lambda s: {"save_secs": s}, st.sampled_from([9.0, 30.0])),
        ),
        "last_step": st.integers(3, 60),
        # Hooks alone wake at their own bounds; together, at the earliest of them.
        "hooks": st.sets(st.sampled_from(["counter", "summary", "checkpoint", "stop"]), min_size=1),
    }
)


def play(config: dict[str, Any], ops: list[str], directory: Path, clock: Clock) -> list[Any]:
    """Run ``ops`` under the standard hooks; everything the hooks and the caller saw."""
    clock.now = 1_000_000.0
    log: list[Any] = []
    prog, train, probe = make_program()
    writer = RecordingWriter(log)
    every_hook = [
        # The fake clock is time.time now, so timers by seconds may be idle.
        StepCounterHook(summary_writer=writer, clock=clock, **config["counter"]),
        SummarySaverHook(
            summary_writer=writer, summary_op=probe.total, clock=clock, **config["summary"]
        ),
        CheckpointSaverHook(
            str(directory), listeners=[RecordingListener(log)], clock=clock, **config["checkpoint"]
        ),
        StopAtStepHook(last_step=config["last_step"]),
    ]
    hooks = [
        hook
        for name, hook in zip(("counter", "summary", "checkpoint", "stop"), every_hook)
        if name in config["hooks"]
    ]
    handler = _ListHandler(log)
    logging.getLogger("looprt").addHandler(handler)
    try:
        creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
        with looprt.MonitoredSession(session_creator=creator, hooks=hooks) as sess:
            for op in ops:
                if sess.should_stop():
                    log.append(("stopped", int(prog.global_step.value)))
                    break
                if op == "train":
                    log.append(("run", sess.run(train)))
                elif op == "loss":
                    log.append(("run", sess.run(train.loss)))
                elif op == "probe":
                    log.append(("run", sess.run(probe.total)))
                elif op == "feed":
                    log.append(("run", sess.run(train, feed_dict={"x": np.full(2, 2.0)})))
                elif op == "options":
                    log.append(("run", sess.run(train, options=looprt.RunOptions())))
                elif op == "restore":
                    prog.global_step.value[...] = max(int(prog.global_step.value) - 3, 0)
                elif op == "replace":
                    prog.global_step.value = np.array(int(prog.global_step.value), dtype=np.int64)
                elif op == "wake":
                    idle.wake()
                elif op == "tick":
                    clock.now += 4.0
                clock.now += 1.0
    finally:
        logging.getLogger("looprt").removeHandler(handler)
    log.append(("final", int(prog.global_step.value)))
    return log


class _ListHandler(logging.Handler):
    def __init__(self, log: list[Any]) -> None:
        super().__init__(logging.DEBUG)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "/sec" not in message:  # rates depend on the clock only through the trigger steps
            self.log.append(("log", record.levelname, message))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs, ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=80))
def test_idle_runs_change_nothing_the_hooks_or_the_caller_see(
    config: dict[str, Any], ops: list[str], tmp_path_factory: pytest.TempPathFactory, clock: Clock
) -> None:
    idle_log = play(config, ops, tmp_path_factory.mktemp("idle"), clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idle, "idle_capable", lambda hook: False)
        called_log = play(config, ops, tmp_path_factory.mktemp("called"), clock)
    assert idle_log == called_log


# ----------------------------------------------------------------------- skipping


def test_standard_hooks_are_skipped_between_their_triggers(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"before": 0}
    original = StepCounterHook.before_run

    def counting(self: Any, run_context: Any) -> Any:
        calls["before"] += 1
        return original(self, run_context)

    # Patched on the class that defines idle_until: still idle.
    monkeypatch.setattr(StepCounterHook, "before_run", counting)
    prog, train, _ = make_program()
    log: list[Any] = []
    hooks = [
        StepCounterHook(every_n_steps=10, summary_writer=RecordingWriter(log)),
        CheckpointSaverHook(str(tmp_path), save_steps=25),
        StopAtStepHook(last_step=100),
    ]
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=hooks) as sess:
        runs = 0
        while not sess.should_stop():
            sess.run(train)
            runs += 1
    assert runs == 100
    assert int(prog.global_step.value) == 100
    # Called around each trigger (every 10 steps, saves every 25, the stop), not every run.
    assert 10 <= calls["before"] <= 40
    assert [e[-1] for e in log if e[0] == "scalar"] == [11, 21, 31, 41, 51, 61, 71, 81, 91]
    assert looprt.latest_checkpoint(str(tmp_path)).endswith("-100")


def test_a_subclass_that_overrides_after_run_is_called_every_run(clock: Clock) -> None:
    seen: list[int] = []

    class Watching(StepCounterHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            seen.append(int(run_values.results))
            super().after_run(run_context, run_values)

    assert not idle.idle_capable(Watching(every_n_steps=10))
    assert idle.idle_capable(StepCounterHook(every_n_steps=10))
    prog, train, _ = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=[Watching(every_n_steps=10)]) as sess:
        for _ in range(30):
            sess.run(train)
    assert seen == list(range(30))


def test_one_hook_that_is_not_idle_keeps_every_hook_called(clock: Clock) -> None:
    counting = CountingHook()

    class Plain(looprt.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            pass

    prog, train, _ = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=[counting, Plain()]) as sess:
        for _ in range(5):
            sess.run(train)
    assert counting.calls.count("before_run") == 5


def test_skipped_runs_are_caught_up_before_the_next_call(clock: Clock) -> None:
    hook = CountingHook(wake_at=6)
    prog, train, probe = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=[hook]) as sess:
        for _ in range(8):
            sess.run(train)
        sess.run(probe.total)  # does not advance: the hooks are called
    # Run 0 calls the hook; runs with global step 1..5 skip it; step 6 and 7 call it again.
    assert hook.calls == [
        "after_create_session",
        "before_run", "after_run",
        ("after_idle_runs", 5),
        "before_run", "after_run",
        "before_run", "after_run",
        "before_run", "after_run",
        "end",
    ]


def test_runs_skipped_before_the_end_are_caught_up_before_end(clock: Clock) -> None:
    hook = CountingHook()
    prog, train, _ = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=[hook]) as sess:
        for _ in range(4):
            sess.run(train)
    assert hook.calls == [
        "after_create_session", "before_run", "after_run", ("after_idle_runs", 3), "end"
    ]


def test_runs_skipped_before_a_recovery_are_caught_up_before_after_create_session(
    clock: Clock,
) -> None:
    hook = CountingHook()
    prog, train, _ = make_program()
    failures = iter([False, False, False, True])

    def fail_sometimes(w: Any) -> dict[str, Any]:
        if next(failures, False):
            raise looprt.AbortedError("a peer was lost")
        return {}

    flaky = prog.step(fail_sometimes, advance_global_step=False)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=[hook]) as sess:
        for _ in range(3):
            sess.run(train)
        for _ in range(4):
            sess.run(flaky)
    assert hook.calls[:6] == [
        "after_create_session", "before_run", "after_run", ("after_idle_runs", 2),
        "before_run", "after_run",
    ]
    assert hook.calls.count("after_create_session") == 2
    assert hook.calls.index(("after_idle_runs", 2)) < hook.calls.index("after_create_session", 1)


def test_only_runs_of_one_train_op_or_one_of_its_outputs_are_idle(clock: Clock) -> None:
    hook = CountingHook()
    prog, train, probe = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=[hook]) as sess:
        for _ in range(3):
            sess.run([train])  # a structure: the raw session does not vouch for it
        for _ in range(3):
            sess.run(probe.total)  # a step that does not advance the global step
        assert hook.calls.count("before_run") == 6
        losses = [sess.run(train.loss) for _ in range(4)]  # the step's output: idle after the first
        assert hook.calls.count("before_run") == 7
    assert losses == [4.0, 5.0, 6.0, 7.0]


def test_a_preemption_signal_wakes_idle_sessions(tmp_path: Path, clock: Clock) -> None:
    prog, train, _ = make_program()
    log: list[Any] = []
    saver_hook = CheckpointSaverHook(str(tmp_path), save_steps=1000, listeners=[RecordingListener(log)])
    preemption = PreemptionHook(grace_secs=60)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    try:
        with looprt.MonitoredSession(session_creator=creator, hooks=[saver_hook, preemption]) as sess:
            for _ in range(5):
                sess.run(train)
            assert hooked_of(sess)._idle.fetch is train  # in an idle span
            os.kill(os.getpid(), signal.SIGTERM)
            sess.run(train)  # the signal arrived before this run: hooks run after it
            assert sess.should_stop()
    finally:
        notice.clear()
    assert preemption.preempted
    assert ("save", 6) in log


def test_timers_on_another_clock_are_never_idle() -> None:
    hook = StepCounterHook(every_n_steps=None, every_n_secs=5, clock=lambda: 0.0)
    hook._timer.update_last_triggered_step(0)
    assert hook.idle_until() is None
    by_steps = StepCounterHook(every_n_steps=5, clock=lambda: 0.0)
    by_steps._timer.update_last_triggered_step(10)
    assert by_steps.idle_until() == (14, math.inf)
