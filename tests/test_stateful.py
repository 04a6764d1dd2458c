"""A state machine test of ``MonitoredSession`` on the NumPy backend against a small model.

Rules: run, a hook asks to stop at the next run, the raw session fails the
next run with ``AbortedError`` / ``UnavailableError``, close. The model
tracks whether the loop should stop, how many sessions were created, the
global step (which ``ChiefSessionCreator`` re-initializes on every
recovery, as TF's chief does without a checkpoint), and what each hook saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import looprt


class FlakyCreator:
    """A chief creator whose sessions fail the next run when told to."""

    def __init__(self, scaffold: looprt.Scaffold) -> None:
        self.inner = looprt.ChiefSessionCreator(scaffold)
        self.created = 0
        self.fail_next: type[looprt.OpError] | None = None
        self.current: FlakySession | None = None

    def create_session(self) -> FlakySession:
        self.current = FlakySession(self.inner.create_session(), self)
        self.created += 1
        return self.current


class FlakySession:
    def __init__(self, inner: Any, owner: FlakyCreator) -> None:
        self.inner = inner
        self.owner = owner
        self.runs = 0
        self.closed = False

    @property
    def graph(self) -> Any:
        return self.inner.graph

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        error = self.owner.fail_next
        if error is not None:
            self.owner.fail_next = None
            raise error("peer lost")
        self.runs += 1
        return self.inner.run(fetches, feed_dict, options, run_metadata)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


class CountingHook(looprt.SessionRunHook):
    """Counts its calls, fetches the global step, and asks to stop when armed."""

    def __init__(self, global_step: Any) -> None:
        self.global_step = global_step
        self.begins = 0
        self.creations: list[Any] = []
        self.ends: list[Any] = []
        self.seen_steps: list[Any] = []
        self.stop_next = False

    def begin(self) -> None:
        self.begins += 1

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.creations.append(session)

    def before_run(self, run_context: looprt.SessionRunContext) -> looprt.SessionRunArgs:
        return looprt.SessionRunArgs({"step": self.global_step})

    def after_run(self, run_context: looprt.SessionRunContext, run_values: looprt.SessionRunValues) -> None:
        self.seen_steps.append(run_values.results["step"])
        if self.stop_next:
            self.stop_next = False
            run_context.request_stop()

    def end(self, session: Any) -> None:
        self.ends.append(session)


class MonitoredSessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        prog = looprt.Program(backend="numpy", name="machine")
        w = prog.state("w", np.zeros(()))
        prog.input("x", default=1.0)

        @prog.step(outputs=("loss",))
        def train(x: Any, w: Any) -> dict[str, Any]:
            w += x
            return {"loss": float(w)}

        self.prog = prog
        self.train = train
        self.w = w
        self.creator = FlakyCreator(looprt.Scaffold(program=prog))
        self.hook = CountingHook(prog.global_step)
        self.sess = looprt.MonitoredSession(session_creator=self.creator, hooks=[self.hook])
        # The model.
        self.created = 1
        self.global_step = 0
        self.stop_armed = False
        self.stopped = False
        self.failure_pending = False
        self.closed = False
        self.ends = 0
        self.successful_runs = 0

    @rule()
    def run(self) -> None:
        fetches = {"step": self.prog.global_step, "loss": self.train.loss}
        if self.closed:
            with pytest.raises(looprt.ClosedSessionError):
                self.sess.run(fetches)
            return
        if self.stopped:
            with pytest.raises(looprt.StopRequestedError):
                self.sess.run(fetches)
            return
        if self.failure_pending:
            # Recovery: a new session, whose chief re-initializes the state.
            self.failure_pending = False
            self.created += 1
            self.global_step = 0
        result = self.sess.run(fetches)
        assert type(result) is dict and list(result) == ["step", "loss"]
        assert result["step"] == self.global_step  # state is read before the step runs
        assert self.hook.seen_steps[-1] == self.global_step
        self.global_step += 1
        assert result["loss"] == float(self.global_step)  # w grows with the step since the last init
        self.successful_runs += 1
        if self.stop_armed:
            self.stop_armed = False
            self.stopped = True

    @precondition(lambda self: not self.closed and not self.stopped)
    @rule()
    def hook_requests_stop(self) -> None:
        self.hook.stop_next = True
        self.stop_armed = True

    @precondition(lambda self: not self.closed)
    @rule(error=st.sampled_from([looprt.AbortedError, looprt.UnavailableError]))
    def raw_session_fails_next_run(self, error: type[looprt.OpError]) -> None:
        self.creator.fail_next = error
        self.failure_pending = True

    @rule()
    def close(self) -> None:
        if self.closed:
            # As TF: a second close calls end() again (with no session), then raises.
            with pytest.raises(looprt.ClosedSessionError):
                self.sess.close()
            self.ends += 1
            assert self.hook.ends[-1] is None
            return
        raw = self.creator.current
        self.sess.close()
        self.closed = True
        self.ends += 1
        assert raw is not None and raw.closed
        assert self.hook.ends[-1] is raw

    @invariant()
    def should_stop_matches(self) -> None:
        assert self.sess.should_stop() == (self.closed or self.stopped)

    @invariant()
    def sessions_and_hooks_match(self) -> None:
        assert self.creator.created == self.created
        assert self.hook.begins == 1
        assert len(self.hook.creations) == self.created
        assert self.hook.creations[-1] is self.creator.current
        assert len(self.hook.ends) == self.ends
        assert len(self.hook.seen_steps) == self.successful_runs

    @invariant()
    def global_step_matches(self) -> None:
        assert int(self.prog.global_step.value) == self.global_step
        assert float(self.w.value) == float(self.global_step)

    def teardown(self) -> None:
        if not self.closed:
            self.sess.close()


MonitoredSessionMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMonitoredSession = MonitoredSessionMachine.TestCase
