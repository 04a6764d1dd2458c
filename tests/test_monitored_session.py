"""The exact sequence of hook calls on every path of DESIGN.md section 2."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.hooks.dispatch import overrides


class Recorder(looprt.SessionRunHook):
    """Appends (name, event, detail) to a shared log; scripted per run index."""

    def __init__(self, log: list[tuple[Any, ...]], name: str, **script: Any) -> None:
        self.log, self.name = log, name
        self.fetch = script.get("fetch")          # structure fetched every run
        self.stop_at = script.get("stop_at")      # run index at which to request a stop
        self.raise_before = script.get("raise_before")
        self.raise_after = script.get("raise_after")
        self.feeds = script.get("feeds")
        self.options = script.get("options")
        self.runs = 0

    def begin(self) -> None:
        self.log.append((self.name, "begin"))

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.log.append((self.name, "after_create_session"))

    def before_run(self, run_context: looprt.SessionRunContext) -> Any:
        self.log.append((self.name, "before_run", self.runs))
        if self.raise_before == self.runs:
            raise ValueError(f"{self.name} failed in before_run")
        if self.fetch is None and self.feeds is None and self.options is None:
            return None
        return looprt.SessionRunArgs(self.fetch, self.feeds, self.options)

    def after_run(self, run_context: looprt.SessionRunContext, run_values: looprt.SessionRunValues) -> None:
        self.log.append((self.name, "after_run", self.runs, run_values.results))
        if self.raise_after == self.runs:
            raise ValueError(f"{self.name} failed in after_run")
        if self.stop_at == self.runs:
            run_context.request_stop()
        self.runs += 1

    def end(self, session: Any) -> None:
        self.log.append((self.name, "end"))


def counter_program(items: Any = None, fail_at: int | None = None, abort_at: set[int] | None = None):
    """A program whose step adds x (fed, or pulled from ``items``) to state ``total``."""
    prog = looprt.Program(name="counter")
    prog.state("total", np.zeros((), dtype=np.int64))
    if items is None:
        prog.input("x", default=1)
    else:
        prog.input("x", iterable=items)
    calls = {"n": 0}
    aborts = set(abort_at or ())

    @prog.step(outputs=("total",))
    def add(x: Any, total: np.ndarray) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] - 1 in aborts:
            aborts.discard(calls["n"] - 1)
            raise looprt.AbortedError(None, None, "peer restarted")
        if fail_at is not None and calls["n"] - 1 == fail_at:
            raise ZeroDivisionError("step failed")
        total += x
        return {"total": int(total)}

    return prog, add, calls


def creator_for(prog: looprt.Program) -> looprt.ChiefSessionCreator:
    return looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))


def events(log: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [entry[:3] if entry[1] in ("before_run", "after_run") else entry for entry in log]


def test_normal_run_calls_every_hook_in_order() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program()
    hooks = [Recorder(log, "a"), Recorder(log, "b", stop_at=1)]
    with looprt.MonitoredSession(creator_for(prog), hooks) as sess:
        results = []
        while not sess.should_stop():
            results.append(sess.run(add.total))
    assert results == [1, 2]
    assert events(log) == [
        ("a", "begin"), ("b", "begin"),
        ("a", "after_create_session"), ("b", "after_create_session"),
        ("a", "before_run", 0), ("b", "before_run", 0), ("a", "after_run", 0), ("b", "after_run", 0),
        ("a", "before_run", 1), ("b", "before_run", 1), ("a", "after_run", 1), ("b", "after_run", 1),
        ("a", "end"), ("b", "end"),
    ]


def test_stop_request_takes_effect_after_the_run_and_blocks_further_runs() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program()
    with looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a", stop_at=0)]) as sess:
        assert not sess.should_stop()
        sess.run(add)
        assert sess.should_stop()
        with pytest.raises(looprt.StopRequestedError, match="should_stop") as info:
            sess.run(add)
        assert isinstance(info.value, RuntimeError)
    # the refused run called no hook
    assert events(log)[-2:] == [("a", "after_run", 0), ("a", "end")]


def test_error_in_run_skips_after_run_and_end() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program(fail_at=1)
    with pytest.raises(ZeroDivisionError), looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a")]) as sess:
        while not sess.should_stop():
            sess.run(add)
    assert events(log) == [
        ("a", "begin"), ("a", "after_create_session"),
        ("a", "before_run", 0), ("a", "after_run", 0),
        ("a", "before_run", 1),
    ]


def test_error_in_a_hook_propagates_and_skips_end() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, calls = counter_program()
    hooks = [Recorder(log, "a"), Recorder(log, "b", raise_before=1)]
    with pytest.raises(ValueError, match="b failed"), looprt.MonitoredSession(creator_for(prog), hooks) as sess:
        for _ in range(3):
            sess.run(add)
    assert events(log)[-2:] == [("a", "before_run", 1), ("b", "before_run", 1)]
    assert calls["n"] == 1  # the failing run never reached the backend
    assert not any(e[1] == "end" for e in log)


def test_error_in_after_run_stops_the_remaining_after_runs() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program()
    hooks = [Recorder(log, "a", raise_after=0), Recorder(log, "b")]
    with pytest.raises(ValueError, match="a failed"), looprt.MonitoredSession(creator_for(prog), hooks) as sess:
        sess.run(add)
    assert events(log)[-3:] == [("b", "before_run", 0), ("a", "after_run", 0)] or events(log)[-1] == (
        "a", "after_run", 0
    )
    assert ("b", "after_run", 0) not in events(log)


def test_out_of_range_ends_the_with_block_cleanly_and_calls_end() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program(items=[1, 2, 3])
    seen = []
    with looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a")]) as sess:
        while not sess.should_stop():
            seen.append(sess.run(add.total))
    assert seen == [1, 3, 6]
    assert events(log)[-3:] == [("a", "after_run", 2), ("a", "before_run", 3), ("a", "end")]


def test_stop_iteration_also_ends_cleanly() -> None:
    log: list[tuple[Any, ...]] = []
    prog, _, _ = counter_program()
    with looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a")]):
        raise StopIteration
    assert log[-1] == ("a", "end")


def test_user_exception_in_with_block_skips_end_and_propagates() -> None:
    log: list[tuple[Any, ...]] = []
    prog, _, _ = counter_program()
    with pytest.raises(KeyError), looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a")]):
        raise KeyError("user")
    assert log == [("a", "begin"), ("a", "after_create_session")]


def test_aborted_run_recreates_the_session_and_retries_from_before_run() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program(abort_at={1})
    with looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a")]) as sess:
        assert sess.run(add.total) == 1
        # The retried run starts over from initialized state: no checkpoint was written.
        assert sess.run(add.total) == 1
    assert events(log) == [
        ("a", "begin"), ("a", "after_create_session"),
        ("a", "before_run", 0), ("a", "after_run", 0),
        ("a", "before_run", 1),                # aborted
        ("a", "after_create_session"),         # recovered
        ("a", "before_run", 1), ("a", "after_run", 1),
        ("a", "end"),
    ]


def test_unavailable_from_session_creation_is_retried() -> None:
    prog, add, _ = counter_program()
    real = creator_for(prog)
    attempts = []

    class Flaky:
        def create_session(self) -> Any:
            attempts.append(1)
            if len(attempts) < 3:
                raise looprt.UnavailableError("no master yet")
            return real.create_session()

    with looprt.MonitoredSession(Flaky()) as sess:
        assert sess.run(add.total) == 1
    assert len(attempts) == 3


def test_max_recoveries_bounds_a_permanent_fault_with_backoff() -> None:
    prog, add, _ = counter_program(abort_at=set(range(100)))
    sleeps: list[float] = []
    sess = looprt.MonitoredSession(creator_for(prog), max_recoveries=3, recovery_backoff_secs=0.5)
    sess._sess._sleep = sleeps.append  # injected clock: no test sleeps
    with pytest.raises(looprt.AbortedError, match="peer restarted"):
        sess.run(add)
    assert sleeps == [0.5, 1.0, 2.0]


def test_singular_session_does_not_recover_and_exposes_the_raw_session() -> None:
    prog, add, _ = counter_program(abort_at={0})
    with looprt.SingularMonitoredSession(scaffold=looprt.Scaffold(program=prog)) as sess:
        assert isinstance(sess.raw_session(), looprt.ProgramSession)
        with pytest.raises(looprt.AbortedError):
            sess.run(add)
        assert sess.raw_session().run(add.total) == 1


def test_run_after_close_is_a_clear_error() -> None:
    prog, add, _ = counter_program()
    sess = looprt.MonitoredSession(creator_for(prog))
    sess.close()
    assert sess.should_stop()
    with pytest.raises(looprt.ClosedSessionError) as info:
        sess.run(add)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(looprt.ClosedSessionError, match="already closed"):
        sess.close()


def test_run_context_session_is_raw_and_runs_no_hooks() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program()

    class Peek(looprt.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            log.append(("peek", run_context.session.run(prog.global_step)))

    with looprt.MonitoredSession(creator_for(prog), [Peek(), Recorder(log, "r")]) as sess:
        sess.run(add)
    assert ("peek", 1) in log
    assert [e for e in log if e[1] == "before_run"] == [("r", "before_run", 0)]


def test_each_requester_gets_its_own_structure_and_leaves_run_once() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, calls = counter_program()
    hooks = [
        Recorder(log, "a", fetch={"t": add.total, "gs": prog.global_step}),
        Recorder(log, "b", fetch=[add.total, (add, "add/total", "total")]),
        Recorder(log, "c"),
    ]
    with looprt.MonitoredSession(creator_for(prog), hooks) as sess:
        out = sess.run({"mine": add.total})
    assert out == {"mine": 1}
    assert calls["n"] == 1
    after = {e[0]: e[3] for e in log if e[1] == "after_run"}
    assert after == {"a": {"t": 1, "gs": 0}, "b": [1, (None, 1, 0)], "c": None}


def test_hook_feeds_merge_and_conflicts_name_the_keys() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program()
    x = prog.inputs["x"]
    with looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a", feeds={x: 5})]) as sess:
        assert sess.run(add.total) == 5
        with pytest.raises(looprt.FeedConflictError, match="SessionRunHook and user.*'x'|SessionRunHook and user"):
            sess.run(add.total, feed_dict={x: 1})
    prog, add, _ = counter_program()
    x = prog.inputs["x"]
    hooks = [Recorder(log, "a", feeds={x: 5}), Recorder(log, "b", feeds={x: 6})]
    with pytest.raises(looprt.FeedConflictError, match="two hooks") as info, looprt.MonitoredSession(
        creator_for(prog), hooks
    ) as sess:
        sess.run(add)
    assert isinstance(info.value, RuntimeError)
    assert "Recorder" in str(info.value)


def test_before_run_returning_garbage_is_a_clear_error() -> None:
    prog, add, _ = counter_program()

    class Bad(looprt.SessionRunHook):
        def before_run(self, run_context: Any) -> Any:
            return {"fetches": add}

    with pytest.raises(looprt.HookRequestError, match=r"Bad\.before_run returned dict") as info, \
            looprt.MonitoredSession(creator_for(prog), [Bad()]) as sess:
        sess.run(add)
    assert isinstance(info.value, TypeError)


def test_run_options_from_hooks_merge_and_reach_after_run() -> None:
    seen = []
    prog, add, _ = counter_program()

    class Opt(looprt.SessionRunHook):
        def __init__(self, level: int, oom: bool) -> None:
            self.level, self.oom = level, oom

        def before_run(self, run_context: Any) -> Any:
            return looprt.SessionRunArgs(
                None, options=looprt.RunOptions(trace_level=self.level, report_tensor_allocations_upon_oom=self.oom)
            )

        def after_run(self, run_context: Any, run_values: Any) -> None:
            seen.append((run_values.options.trace_level, run_values.options.report_tensor_allocations_upon_oom,
                         type(run_values.run_metadata)))

    with looprt.MonitoredSession(creator_for(prog), [Opt(3, False), Opt(1, True)]) as sess:
        sess.run(add)
    assert seen == [(3, True, looprt.RunMetadata)] * 2


def test_run_step_fn_contract() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program()
    with looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a")]) as sess:

        def step_fn(step_context: looprt.StepContext) -> Any:
            raw = step_context.session.run(add.total)  # no hooks
            hooked = step_context.run_with_hooks(add.total)
            return raw, hooked

        assert sess.run_step_fn(step_fn) == (1, 2)
        assert [e[1] for e in log].count("before_run") == 1

        def stop_fn(step_context: looprt.StepContext) -> None:
            step_context.request_stop()

        sess.run_step_fn(stop_fn)  # StopIteration ends the with block cleanly
    assert log[-1] == ("a", "end")

    with looprt.MonitoredSession(creator_for(counter_program()[0])) as sess:
        with pytest.raises(looprt.errors.StepFnSignatureError, match="step_context"):
            sess.run_step_fn(lambda ctx: None)

        class Owner:
            def step(self, step_context: looprt.StepContext) -> int:
                return 7

        assert sess.run_step_fn(Owner().step) == 7
    assert looprt.MonitoredSession.StepContext is looprt.StepContext


def test_run_step_fn_recovers_from_aborted() -> None:
    log: list[tuple[Any, ...]] = []
    prog, add, _ = counter_program(abort_at={0})
    with looprt.MonitoredSession(creator_for(prog), [Recorder(log, "a")]) as sess:
        assert sess.run_step_fn(lambda step_context: step_context.run_with_hooks(add.total)) == 1
    assert [e[1] for e in log].count("after_create_session") == 2


def test_worker_waits_for_the_chief_and_times_out_clearly() -> None:
    prog, add, _ = counter_program()
    scaffold = looprt.Scaffold(program=prog)
    with pytest.raises(looprt.DeadlineExceededError, match="not ready after waiting") as info:
        looprt.MonitoredSession(looprt.WorkerSessionCreator(scaffold, max_wait_secs=0.01))
    assert isinstance(info.value, TimeoutError)

    results: dict[str, Any] = {}
    started = threading.Event()

    def worker() -> None:
        started.set()
        with looprt.MonitoredSession(looprt.WorkerSessionCreator(scaffold, max_wait_secs=30)) as sess:
            results["worker"] = sess.run(add.total)

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait()
    with looprt.MonitoredSession(looprt.ChiefSessionCreator(scaffold)) as sess:
        results["chief"] = sess.run(add.total)
        thread.join(10)
    assert not thread.is_alive()
    assert sorted(results.values()) == [1, 2]  # chief and worker share the program's state


def test_background_thread_error_stops_the_loop_and_surfaces() -> None:
    prog, add, _ = counter_program()
    reported = threading.Event()

    class StartsThread(looprt.SessionRunHook):
        def after_create_session(self, session: Any, coord: looprt.Coordinator) -> None:
            def body() -> None:
                with coord.stop_on_exception():
                    raise OSError("reader died")

            t = threading.Thread(target=body)
            coord.register_thread(t)
            t.start()
            t.join()
            reported.set()

    sess = looprt.MonitoredSession(creator_for(prog), [StartsThread()])
    reported.wait(5)
    assert sess.should_stop()  # recoverable session: the error means stop
    with pytest.raises(OSError, match="reader died"):
        sess.close()

    singular = looprt.SingularMonitoredSession([StartsThread()], scaffold=looprt.Scaffold(program=counter_program()[0]))
    with pytest.raises(OSError, match="reader died"):
        singular.should_stop()


def test_hooks_that_do_not_override_a_method_are_not_called() -> None:
    class OnlyAfter(looprt.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            pass

    hook = OnlyAfter()
    assert overrides(hook, "after_run")
    assert not overrides(hook, "before_run")
    assert not overrides(hook, "begin")

    class DuckHook:  # not a SessionRunHook: every method it has is called
        def before_run(self, run_context: Any) -> None:
            return None

    assert overrides(DuckHook(), "before_run")


def test_default_session_creator_uses_the_default_program() -> None:
    prog, add, _ = counter_program()
    with prog.as_default(), looprt.MonitoredSession() as sess:
        assert sess.run(add.total) == 1
        assert sess.graph is prog
    with pytest.raises(ValueError, match="no default program"):
        looprt.MonitoredSession()
