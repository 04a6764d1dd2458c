"""Property tests: the merge engine, merged runs through a session, and hook ordering.

Three groups:

* ``PlanCache`` on random structures: unique leaves, exact rebuild, caching;
* merged runs through ``MonitoredSession``: every requester (the caller and
  each hook) gets exactly its own structure back, the raw session runs once
  per call, and with the NumPy ``ProgramSession`` each step runs once per run
  however many requesters fetch its outputs;
* the hook lifecycle under random schedules of stop requests, failing hooks,
  recoverable errors and exhausted input, compared to a reference model of
  TF's ``MonitoredSession`` contract.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.strategies import (
    check_rebuilt,
    deep_structures,
    leaf_names,
    ref_leaves,
    ref_map,
    structures,
)

import looprt
from looprt.errors import InternalError
from looprt.structure import PlanCache, flatten

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A program whose handles serve as leaves next to plain strings.
_PROGRAM = looprt.Program(backend="numpy", name="leaves")
_W = _PROGRAM.state("w", np.zeros(2))
_X = _PROGRAM.input("x")


@_PROGRAM.step(outputs=("loss", "acc"))
def _train(x: Any, w: Any) -> dict[str, Any]:
    return {"loss": 0.0, "acc": 0.0}


HANDLES = (_W, _X, _train, _train.loss, _train.acc, _PROGRAM.global_step)


def mixed_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(leaf_names(), st.sampled_from(HANDLES))


def fake_value(leaf: Any) -> str:
    """What the fake raw session returns for a leaf."""
    return f"v:{leaf!r}"


# --- merge / split ---------------------------------------------------------------------


@FAST
@given(structures(mixed_leaves()))
def test_plan_has_unique_leaves_and_rebuilds_the_structure(s: Any) -> None:
    all_leaves = ref_leaves(s)
    plan = PlanCache().plan(s)

    assert len(set(plan.leaves)) == len(plan.leaves)
    assert plan.leaves == tuple(dict.fromkeys(all_leaves))  # every leaf, first-appearance order
    assert flatten(s)[1] == all_leaves

    values = {leaf: object() for leaf in plan.leaves}  # identity-checked placeholders
    rebuilt = plan.rebuild([values[leaf] for leaf in plan.leaves])
    check_rebuilt(s, rebuilt, values.__getitem__, same=lambda a, b: a is b)


@settings(max_examples=25, deadline=None)
@given(deep_structures(mixed_leaves()))
def test_plan_rebuilds_structures_too_deep_for_codegen(s: Any) -> None:
    plan = PlanCache().plan(s)
    assert plan.leaves == tuple(dict.fromkeys(ref_leaves(s)))
    rebuilt = plan.rebuild([fake_value(leaf) for leaf in plan.leaves])
    check_rebuilt(s, rebuilt, fake_value)


@FAST
@given(structures(mixed_leaves()), structures(mixed_leaves()))
def test_plan_cache_reuses_plans_and_never_mixes_structures(s1: Any, s2: Any) -> None:
    cache = PlanCache()
    plan1 = cache.plan(s1)
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)

    # The same structure, rebuilt from fresh containers: a cache hit, the same plan.
    again = cache.plan(ref_map(lambda leaf: leaf, s1))
    assert again is plan1
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)

    # Another structure through the same cache still gets a correct plan.
    plan2 = cache.plan(s2)
    same = ref_leaves(s1) == ref_leaves(s2) and _shape(s1) == _shape(s2)
    assert (plan2 is plan1) == same
    assert cache.misses == (1 if same else 2)
    rebuilt = plan2.rebuild([fake_value(leaf) for leaf in plan2.leaves])
    check_rebuilt(s2, rebuilt, fake_value)


def _shape(s: Any) -> Any:
    """A hashable description of a structure's containers, independent of looprt."""
    if isinstance(s, defaultdict):
        return (defaultdict, s.default_factory, tuple((k, _shape(v)) for k, v in s.items()))
    if isinstance(s, dict):
        return (type(s), tuple((k, _shape(v)) for k, v in s.items()))
    if isinstance(s, (list, tuple)):
        return (type(s), tuple(_shape(v) for v in s))
    if dataclasses.is_dataclass(s) or hasattr(s, "__attrs_attrs__"):
        return (type(s), _shape(_fields(s)))
    return None


def _fields(s: Any) -> tuple[Any, ...]:
    if dataclasses.is_dataclass(s):
        return tuple(getattr(s, f.name) for f in dataclasses.fields(s))
    return tuple(getattr(s, a.name) for a in s.__attrs_attrs__)


def test_defaultdict_without_factory_rebuilds() -> None:
    s = defaultdict(None, {"k": "a"})
    plan = PlanCache().plan(s)
    check_rebuilt(s, plan.rebuild(["v"]), lambda leaf: "v")


# --- merged runs through MonitoredSession (fake raw session) ---------------------------


class FakeSession:
    """A raw session that records every run and returns ``fake_value(leaf)`` per leaf."""

    graph = None

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.closed = False

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        self.seen.append(fetches)
        return ref_map(fake_value, fetches)

    def close(self) -> None:
        self.closed = True


class FakeCreator:
    def __init__(self) -> None:
        self.sessions: list[FakeSession] = []

    def create_session(self) -> FakeSession:
        self.sessions.append(FakeSession())
        return self.sessions[-1]


class ForeignArgs(NamedTuple):
    """Another framework's SessionRunArgs (TF's): duck-typed by its fields."""

    fetches: Any
    feed_dict: Any = None
    options: Any = None


class FetchingHook(looprt.SessionRunHook):
    def __init__(self, request: Any) -> None:
        self.request = request
        self.results: list[Any] = []

    def before_run(self, run_context: looprt.SessionRunContext) -> Any:
        return self.request

    def after_run(self, run_context: looprt.SessionRunContext, run_values: looprt.SessionRunValues) -> None:
        self.results.append(run_values.results)


def hook_requests(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    s = structures(leaves, depth=3)
    return st.one_of(
        st.none(),
        st.just(looprt.SessionRunArgs(None)),
        s.map(looprt.SessionRunArgs),
        s.map(ForeignArgs),
    )


def _fetches_of(request: Any) -> Any:
    return None if request is None else request.fetches


@FAST
@given(
    user=structures(mixed_leaves()),
    requests=st.lists(hook_requests(mixed_leaves()), max_size=4),
    n_runs=st.integers(1, 3),
)
def test_merged_run_gives_every_requester_its_own_structure(user: Any, requests: list[Any], n_runs: int) -> None:
    creator = FakeCreator()
    hooks = [FetchingHook(r) for r in requests]
    with looprt.MonitoredSession(session_creator=creator, hooks=hooks) as sess:
        for _ in range(n_runs):
            check_rebuilt(user, sess.run(user), fake_value)

    assert len(creator.sessions) == 1
    raw = creator.sessions[0]
    assert raw.closed
    assert len(raw.seen) == n_runs  # one raw run per call, whatever the hooks ask
    fetching = [i for i, h in enumerate(hooks) if _fetches_of(h.request) is not None]
    for seen in raw.seen:
        if fetching:  # the merged request, keyed by position: {-1: fetches, i: the i-th hook's, ...}
            assert type(seen) is dict
            assert list(seen) == [-1, *fetching]
            assert seen[-1] is user
            assert all(seen[i] is hooks[i].request.fetches for i in fetching)
        else:
            assert seen is user
    for hook in hooks:
        assert len(hook.results) == n_runs
        fetches = _fetches_of(hook.request)
        for results in hook.results:
            if fetches is None:
                assert results is None
            else:
                check_rebuilt(fetches, results, fake_value)


# --- merged runs on the NumPy ProgramSession: each unique leaf evaluated once ---------


class _Model:
    """The program's expected values, run by run."""

    def __init__(self) -> None:
        self.w = 0.0
        self.gs = 0
        self.next_batch = 100
        self.train_calls = 0
        self.aux_calls = 0


def _program() -> tuple[looprt.Program, list[Any], dict[str, int]]:
    prog = looprt.Program(backend="numpy", name="merge")
    calls = {"train": 0, "aux": 0}
    w = prog.state("w", np.zeros(()))
    x = prog.input("x", default=1.0)
    batch = prog.input("batch", iterable=itertools.count(100))

    @prog.step(outputs=("loss", "seen"))
    def train(x: Any, batch: Any, w: Any) -> dict[str, Any]:
        calls["train"] += 1
        w += x
        return {"loss": float(w), "seen": batch}

    @prog.step(outputs=("out",), advance_global_step=False)
    def aux(w: Any) -> dict[str, Any]:
        calls["aux"] += 1
        return {"out": float(w) * 10}

    pool = [
        train, "train", train.loss, "train/loss", train.seen, "train/seen",
        aux, aux.out, "aux/out", w, "w", prog.global_step, "global_step", batch, "batch", x, "x",
    ]  # fmt: skip
    return prog, pool, calls


_POOL_SIZE = len(_program()[1])
_TOKENS = st.integers(0, _POOL_SIZE - 1)


def _expected_values(model: _Model, leaves: list[Any]) -> dict[str, Any]:
    """Values by handle name for one run that fetches ``leaves``."""
    names = {leaf if isinstance(leaf, str) else leaf.name for leaf in leaves}
    train_runs = bool(names & {"train", "train/loss", "train/seen"})
    aux_runs = bool(names & {"aux", "aux/out"})
    values: dict[str, Any] = {"w": model.w, "global_step": model.gs, "x": 1.0, "train": None, "aux": None}
    if train_runs or "batch" in names:
        values["batch"] = values["train/seen"] = model.next_batch
        model.next_batch += 1
    if train_runs:
        model.train_calls += 1
        model.w += 1.0
        model.gs += 1
        values["train/loss"] = model.w
    if aux_runs:
        model.aux_calls += 1
        values["aux/out"] = model.w * 10  # aux is declared after train: it sees train's update
    return values


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user=structures(_TOKENS, depth=3),
    requests=st.lists(hook_requests(_TOKENS), max_size=3),
    n_runs=st.integers(1, 3),
)
def test_program_session_evaluates_each_unique_leaf_once(user: Any, requests: list[Any], n_runs: int) -> None:
    prog, pool, calls = _program()

    def to_leaves(s: Any) -> Any:
        return ref_map(pool.__getitem__, s)

    user = to_leaves(user)
    requests = [r if _fetches_of(r) is None else r._replace(fetches=to_leaves(r.fetches)) for r in requests]
    hooks = [FetchingHook(r) for r in requests]
    model = _Model()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(session_creator=creator, hooks=hooks) as sess:
        for run in range(n_runs):
            everything = ref_leaves(user)
            for r in requests:
                if _fetches_of(r) is not None:
                    everything += ref_leaves(r.fetches)
            values = _expected_values(model, everything)

            def value_of(leaf: Any, values: dict[str, Any] = values) -> Any:
                return values[leaf if isinstance(leaf, str) else leaf.name]

            check_rebuilt(user, sess.run(user), value_of)
            for hook in hooks:
                assert len(hook.results) == run + 1
                fetches = _fetches_of(hook.request)
                if fetches is None:
                    assert hook.results[-1] is None
                else:
                    check_rebuilt(fetches, hook.results[-1], value_of)
            # One run of each needed step, however many requesters fetched its outputs.
            assert calls == {"train": model.train_calls, "aux": model.aux_calls}
            assert prog.global_step.value == model.gs


# --- hook ordering under random schedules ----------------------------------------------

HOOK_METHODS = ("begin", "after_create_session", "before_run", "after_run", "end")
PHASES = ("before_run", "after_run")


class HookFailure(Exception):
    """A hook's own bug: propagates, the with block fails, end() is not called."""


class Schedule(NamedTuple):
    methods: tuple[frozenset[str], ...]  # what each hook overrides
    fetch: tuple[bool, ...]  # whether each hook fetches something
    n_calls: int
    stops: frozenset[tuple[int, int, str]]  # (call, hook, phase): request_stop there
    hook_raises: dict[tuple[int, int, str], str]  # (call, hook, phase) -> kind, raised once
    raw_faults: dict[int, str]  # raw run index -> kind
    create_faults: frozenset[int]  # create attempt index -> raises AbortedError


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    n_hooks = draw(st.integers(0, 5))
    all_methods = frozenset(HOOK_METHODS)
    methods = tuple(
        draw(st.one_of(st.just(all_methods), st.frozensets(st.sampled_from(HOOK_METHODS))))
        for _ in range(n_hooks)
    )
    fetch = tuple(draw(st.booleans()) for _ in range(n_hooks))
    n_calls = draw(st.integers(1, 6))
    if n_hooks:
        where = st.tuples(st.integers(0, n_calls - 1), st.integers(0, n_hooks - 1), st.sampled_from(PHASES))
        stops = draw(st.frozensets(where, max_size=2))
        hook_raises = draw(
            st.dictionaries(where, st.sampled_from(["error", "aborted", "out_of_range"]), max_size=2)
        )
    else:
        stops, hook_raises = frozenset(), {}
    raw_faults = draw(
        st.dictionaries(
            st.integers(0, 8), st.sampled_from(["aborted", "unavailable", "out_of_range", "internal"]), max_size=3
        )
    )
    create_faults = draw(st.frozensets(st.integers(0, 3), max_size=2))
    return Schedule(methods, fetch, n_calls, stops, hook_raises, raw_faults, create_faults)


def _error(kind: str) -> BaseException:
    return {
        "error": HookFailure("hook failed"),
        "aborted": looprt.AbortedError("peer lost"),
        "unavailable": looprt.UnavailableError("peer unavailable"),
        "out_of_range": looprt.OutOfRangeError("input exhausted"),
        "internal": InternalError("step failed"),
    }[kind]


class Recorder:
    """Shared by the hooks, the creator and the raw sessions of one schedule."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.log: list[tuple[Any, str, int]] = []
        self.problems: list[str] = []
        self.call = -1
        self.raw: Any = None
        self.raw_runs = 0
        self.creates = 0
        self.fired: set[tuple[int, int, str]] = set()
        self.user = ["u"]

    def act(self, hook: int, phase: str, run_context: looprt.SessionRunContext) -> None:
        key = (self.call, hook, phase)
        if key in self.schedule.stops:
            run_context.request_stop()
        kind = self.schedule.hook_raises.get(key)
        if kind is not None and key not in self.fired:
            self.fired.add(key)
            raise _error(kind)


def make_hook(rec: Recorder, i: int) -> looprt.SessionRunHook:
    """A hook that overrides only the methods the schedule gives it."""
    methods = rec.schedule.methods[i]
    fetch = rec.schedule.fetch[i]
    ns: dict[str, Any] = {}

    def begin(self: Any) -> None:
        rec.log.append((i, "begin", rec.call))

    def after_create_session(self: Any, session: Any, coord: Any) -> None:
        rec.log.append((i, "after_create_session", rec.call))
        if session is not rec.raw:
            rec.problems.append(f"hook {i}: after_create_session got a stale session")

    def before_run(self: Any, run_context: looprt.SessionRunContext) -> Any:
        rec.log.append((i, "before_run", rec.call))
        if run_context.session is not rec.raw or run_context.original_args.fetches is not rec.user:
            rec.problems.append(f"hook {i}: wrong run_context")
        rec.act(i, "before_run", run_context)
        return looprt.SessionRunArgs(f"h{i}") if fetch else None

    def after_run(self: Any, run_context: looprt.SessionRunContext, run_values: Any) -> None:
        rec.log.append((i, "after_run", rec.call))
        expected = fake_value(f"h{i}") if fetch and "before_run" in methods else None
        if run_values.results != expected:
            rec.problems.append(f"hook {i}: results {run_values.results!r}, expected {expected!r}")
        rec.act(i, "after_run", run_context)

    def end(self: Any, session: Any) -> None:
        rec.log.append((i, "end", rec.call))
        if session is not rec.raw:
            rec.problems.append(f"hook {i}: end got a stale session")

    for name, fn in (
        ("begin", begin),
        ("after_create_session", after_create_session),
        ("before_run", before_run),
        ("after_run", after_run),
        ("end", end),
    ):
        if name in methods:
            ns[name] = fn
    return type(f"Hook{i}", (looprt.SessionRunHook,), ns)()


class RecordingSession(FakeSession):
    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        rec = self.rec
        index = rec.raw_runs
        rec.raw_runs += 1
        rec.log.append(("raw", "run", rec.call))
        kind = rec.schedule.raw_faults.get(index)
        if kind is not None:
            raise _error(kind)
        return super().run(fetches, feed_dict, options, run_metadata)

    def close(self) -> None:
        self.rec.log.append(("raw", "close", self.rec.call))
        super().close()


class RecordingCreator:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def create_session(self) -> RecordingSession:
        rec = self.rec
        index = rec.creates
        rec.creates += 1
        if index in rec.schedule.create_faults:
            rec.log.append(("creator", "fail", rec.call))
            raise looprt.AbortedError("peer lost while creating the session")
        rec.raw = RecordingSession(rec)
        rec.log.append(("raw", "create", rec.call))
        return rec.raw


def reference(schedule: Schedule) -> tuple[list[tuple[Any, str, int]], list[bool], str]:
    """TF's MonitoredSession contract, as a plain simulation: (log, should_stop after each run, outcome)."""
    log: list[tuple[Any, str, int]] = []
    hooks = range(len(schedule.methods))
    fired: set[tuple[int, int, str]] = set()
    counters = {"raw_runs": 0, "creates": 0}

    def calls(method: str) -> list[int]:
        return [i for i in hooks if method in schedule.methods[i]]

    def create(call: int) -> None:
        while True:
            index = counters["creates"]
            counters["creates"] += 1
            if index in schedule.create_faults:
                log.append(("creator", "fail", call))
                continue
            log.append(("raw", "create", call))
            log.extend((i, "after_create_session", call) for i in calls("after_create_session"))
            return

    def hook_phase(call: int, phase: str) -> tuple[bool, str | None]:
        stop = False
        for i in calls(phase):
            log.append((i, phase, call))
            key = (call, i, phase)
            stop = stop or key in schedule.stops
            kind = schedule.hook_raises.get(key)
            if kind is not None and key not in fired:
                fired.add(key)
                return stop, kind
        return stop, None

    def attempt(call: int) -> tuple[bool, str | None]:
        stop_before, kind = hook_phase(call, "before_run")
        if kind is not None:
            return False, kind
        index = counters["raw_runs"]
        counters["raw_runs"] += 1
        log.append(("raw", "run", call))
        if index in schedule.raw_faults:
            return False, schedule.raw_faults[index]
        stop_after, kind = hook_phase(call, "after_run")
        return stop_before or stop_after, kind

    log.extend((i, "begin", -1) for i in calls("begin"))
    create(-1)
    should_stop: list[bool] = []
    outcome = "clean"
    last_call = -1  # the call index the test had set when the session closes
    for call in range(schedule.n_calls):
        if should_stop and should_stop[-1]:
            break
        last_call = call
        while True:
            stop, kind = attempt(call)
            if kind in ("aborted", "unavailable"):
                log.append(("raw", "close", call))
                create(call)
                continue
            break
        if kind == "out_of_range":
            break
        if kind is not None:
            outcome = "error"
            break
        should_stop.append(stop)
    if outcome == "clean":
        log.extend((i, "end", last_call) for i in calls("end"))
    log.append(("raw", "close", last_call))
    return log, should_stop, outcome


def check_invariants(log: list[tuple[Any, str, int]], schedule: Schedule, outcome: str) -> None:
    """The ordering rules, checked on the log alone."""
    n = len(schedule.methods)

    def order(method: str) -> list[int]:
        return [i for i in range(n) if method in schedule.methods[i]]

    hook_events = [e for e in log if e[0] not in ("raw", "creator")]
    begins = order("begin")
    # begin for all hooks, in order, before anything else; never again.
    assert [e[0] for e in log[: len(begins)]] == begins
    assert all(e[1] == "begin" for e in log[: len(begins)])
    assert sum(e[1] == "begin" for e in log) == len(begins)
    # after_create_session for all hooks, in order, right after each creation.
    created = [k for k, e in enumerate(log) if e[:2] == ("raw", "create")]
    acs = order("after_create_session")
    for k in created:
        block = log[k + 1 : k + 1 + len(acs)]
        assert [(e[0], e[1]) for e in block] == [(i, "after_create_session") for i in acs]
    assert sum(e[1] == "after_create_session" for e in log) == len(acs) * len(created)
    # per raw run: the whole before_run block, in hook order, just before it.
    brs = order("before_run")
    for k, e in enumerate(log):
        if e[:2] == ("raw", "run"):
            block = log[k - len(brs) : k]
            assert [(b[0], b[1]) for b in block] == [(i, "before_run") for i in brs]
    # after_run only right after a successful raw run (or the previous hook's after_run).
    for k, e in enumerate(log):
        if e[1] == "after_run":
            prev = log[k - 1]
            assert prev[:2] == ("raw", "run") or prev[1] == "after_run"
            if prev[:2] == ("raw", "run"):
                assert order("after_run")[0] == e[0]
    # end: all hooks, in order, once, iff the with block exited cleanly; nothing after.
    ends = [e for e in hook_events if e[1] == "end"]
    if outcome == "clean":
        assert [e[0] for e in ends] == order("end")
        if ends:
            assert hook_events[-len(ends) :] == ends
    else:
        assert ends == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_hook_order_under_random_schedules(schedule: Schedule) -> None:
    rec = Recorder(schedule)
    hooks = [make_hook(rec, i) for i in range(len(schedule.methods))]
    should_stop: list[bool] = []
    outcome = "clean"
    try:
        with looprt.MonitoredSession(session_creator=RecordingCreator(rec), hooks=hooks) as sess:
            for call in range(schedule.n_calls):
                if sess.should_stop():
                    break
                rec.call = call
                result = sess.run(rec.user)
                assert result == [fake_value("u")]
                should_stop.append(sess.should_stop())
            if should_stop and should_stop[-1]:
                before = len(rec.log)
                with pytest.raises(looprt.StopRequestedError):
                    sess.run(rec.user)
                assert len(rec.log) == before  # no hook was called
                assert sess.should_stop()
    except (HookFailure, InternalError):
        outcome = "error"

    assert rec.problems == []
    check_invariants(rec.log, schedule, outcome)
    expected_log, expected_should_stop, expected_outcome = reference(schedule)
    assert (outcome, should_stop) == (expected_outcome, expected_should_stop)
    assert rec.log == expected_log


def test_reference_model_is_not_trivial() -> None:
    """The model distinguishes schedules: a stop, a recovery and a failure each change the log."""
    base = Schedule((frozenset(HOOK_METHODS),), (True,), 3, frozenset(), {}, {}, frozenset())
    stop = base._replace(stops=frozenset({(0, 0, "after_run")}))
    abort = base._replace(raw_faults={1: "aborted"})
    fail = base._replace(hook_raises={(1, 0, "before_run"): "error"})
    logs = [reference(s)[0] for s in (base, stop, abort, fail)]
    assert len({tuple(log) for log in logs}) == 4
    assert reference(stop)[1] == [True]
    assert reference(fail)[2] == "error"
    assert sum(e == ("raw", "create", 1) for e in reference(abort)[0]) == 1

