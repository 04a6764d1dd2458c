"""Tests for ``looprt.Coordinator`` and ``looprt.LooperThread``.

Both must behave exactly like ``tf.train.Coordinator`` and
``tf.compat.v1.train.LooperThread``. The behaviour is written as *scenarios*:
functions that drive a coordinator with real threads and record what they
observe (return values, ``should_stop()``, what ``join()`` raises, log lines).
Each scenario declares the outcome TensorFlow gives. It is checked against
looprt always and, when TensorFlow is installed, the differential section runs
the same scenario against TF and compares the two outcomes.

Nothing sleeps for timing: threads are sequenced with Events, and a thread that
must still be alive when ``join()`` looks at it is gated on being polled
(``PolledThread``). Only the grace-period tests wait, for ``GRACE`` seconds.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import looprt
from looprt.errors import OutOfRangeError

WAIT = 5.0  # bound on every wait; only reached when something is broken
GRACE = 0.05  # grace period of the tests in which a thread ignores the stop request
STRAGGLERS = "Coordinator stopped with threads still running: "
ERROR_REPORTED = "Error reported to Coordinator: "


# --------------------------------------------------------------------------- #
# Implementations under test
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Impl:
    name: str
    coordinator: Any
    looper_thread: Any
    out_of_range: type[BaseException]
    logger: str


LOOPRT = Impl("looprt", looprt.Coordinator, looprt.LooperThread, OutOfRangeError, "looprt.coordinator")


def tensorflow_impl() -> Impl:
    tf = pytest.importorskip("tensorflow")
    return Impl(
        "tensorflow",
        tf.train.Coordinator,
        tf.compat.v1.train.LooperThread,
        tf.errors.OutOfRangeError,
        "tensorflow",
    )


# --------------------------------------------------------------------------- #
# Harness
# --------------------------------------------------------------------------- #


def ok(label: str, value: Any = None) -> tuple[Any, ...]:
    return (label, "returned", value)


def err(label: str, kind: str, message: str, tag: str | None = None) -> tuple[Any, ...]:
    return (label, "raised", (kind, message, tag))


class Recorder:
    """Collects observations; exceptions are recorded as (type name, message, tag).

    ``tag`` names an exception object the scenario created, so outcomes show
    whether ``join()`` re-raised *that object* rather than an equal-looking one.
    """

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._tags: dict[int, str] = {}
        self._keep: list[BaseException] = []  # keeps ids unique while tagged

    def tag(self, exc: BaseException, tag: str) -> Any:
        self._tags[id(exc)] = tag
        self._keep.append(exc)
        return exc

    def note(self, label: str, value: Any) -> None:
        self.events.append((label, value))

    def call(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            self.events.append((label, "raised", self.describe(e)))
        else:
            self.events.append((label, "returned", result))

    def describe(self, e: BaseException) -> tuple[str, str, str | None]:
        message = str(e)
        if message.startswith(STRAGGLERS):  # thread order comes from a set: normalise it
            message = STRAGGLERS + " ".join(sorted(message[len(STRAGGLERS) :].split(" ")))
        return (type(e).__name__, message, self._tags.get(id(e)))


class PolledThread(threading.Thread):
    """A thread that honours a stop request, but late.

    It ends only after ``is_alive()`` has reported it alive ``polls`` times
    after the stop request. ``join()`` is the only caller of ``is_alive()``: if
    the thread is dead once ``join()`` returns, ``join()`` saw it alive after
    the stop request and kept waiting for it.
    """

    def __init__(self, coord: Any, name: str, *, polls: int = 2) -> None:
        super().__init__(name=name, daemon=True)
        self._coord = coord
        self._polls_left = polls
        self._lock = threading.Lock()
        self.may_exit = threading.Event()

    def is_alive(self) -> bool:
        alive = super().is_alive()
        if alive and self._coord.should_stop():
            with self._lock:
                self._polls_left -= 1
                if self._polls_left <= 0:
                    self.may_exit.set()
        return alive

    def run(self) -> None:
        self.may_exit.wait(WAIT)


class Threads:
    """Starts real threads for a scenario; none of them outlives it."""

    def __init__(self) -> None:
        self.release = threading.Event()  # stragglers wait on it
        self._threads: list[threading.Thread] = []
        self._coords: list[Any] = []

    def coord(self, impl: Impl, **kwargs: Any) -> Any:
        coord = impl.coordinator(**kwargs)
        self._coords.append(coord)
        return coord

    def start(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> threading.Thread:
        return self.track(threading.Thread(target=target, args=args, name=name, daemon=True), start=True)

    def track(self, thread: threading.Thread, *, start: bool = False) -> Any:
        self._threads.append(thread)
        if start:
            thread.start()
        return thread

    def straggler(self, name: str) -> threading.Thread:
        """A thread that ignores stop requests (until the scenario ends)."""
        return self.start(self.release.wait, WAIT, name=name)

    def polled(self, coord: Any, name: str, **kwargs: Any) -> PolledThread:
        return self.track(PolledThread(coord, name, **kwargs), start=True)

    def finish(self) -> None:
        self.release.set()
        for coord in self._coords:
            with contextlib.suppress(BaseException):
                coord.request_stop()
        for t in self._threads:
            if isinstance(t, PolledThread):
                t.may_exit.set()
            t.join(WAIT)
        alive = [t.name for t in self._threads if threading.Thread.is_alive(t)]
        assert not alive, f"threads outlived the scenario: {alive}"


class _ListHandler(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.INFO)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_logs(logger_name: str) -> Iterator[list[str]]:
    logger = logging.getLogger(logger_name)
    messages: list[str] = []
    handler = _ListHandler(messages)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def report(coord: Any, ex: BaseException, as_exc_info: bool = False) -> None:
    """Report ``ex`` the documented way: from inside the handler of ``ex`` itself."""
    try:
        raise ex
    except BaseException as caught:
        coord.request_stop(sys.exc_info() if as_exc_info else caught)


def report_on(
    coord: Any,
    go: threading.Event,
    ex: BaseException,
    as_exc_info: bool = False,
    done: threading.Event | None = None,
) -> None:
    go.wait(WAIT)
    try:
        report(coord, ex, as_exc_info)
    finally:
        if done is not None:
            done.set()


def stop_on(coord: Any, go: threading.Event) -> None:
    go.wait(WAIT)
    coord.request_stop()


@dataclass(frozen=True)
class Scenario:
    fn: Callable[[Impl, Recorder, Threads], None]
    expected: list[tuple[Any, ...]]  # TensorFlow's outcome
    divergence: str | None = None  # set when looprt is known not to match TF yet


SCENARIOS: dict[str, Scenario] = {}


def register(name: str, fn: Callable[..., None], expected: list[tuple[Any, ...]], **kw: Any) -> None:
    assert name not in SCENARIOS, name
    SCENARIOS[name] = Scenario(fn, expected, **kw)


def scenario(*expected: tuple[Any, ...], divergence: str | None = None) -> Callable[..., Any]:
    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        register(fn.__name__, fn, list(expected), divergence=divergence)
        return fn

    return decorate


def run_scenario(name: str, impl: Impl) -> list[tuple[Any, ...]]:
    rec = Recorder()
    threads = Threads()
    try:
        SCENARIOS[name].fn(impl, rec, threads)
    finally:
        threads.finish()
    return rec.events


# --------------------------------------------------------------------------- #
# Scenarios: stop API
# --------------------------------------------------------------------------- #


@scenario(
    ("should_stop", False),
    ("wait_for_stop(0)", False),
    ("joined", False),
    ok("raise_requested_exception"),
    ("should_stop", True),
    ("wait_for_stop(0)", True),
    ("wait_for_stop()", True),
    ok("raise_requested_exception"),
    ok("request_stop again"),
    ("should_stop", True),
    ("should_stop after clear_stop", False),
    ("wait_for_stop(0) after clear_stop", False),
)
def stop_api(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    rec.note("should_stop", coord.should_stop())
    rec.note("wait_for_stop(0)", coord.wait_for_stop(0))
    rec.note("joined", coord.joined)
    rec.call("raise_requested_exception", coord.raise_requested_exception)
    coord.request_stop()
    rec.note("should_stop", coord.should_stop())
    rec.note("wait_for_stop(0)", coord.wait_for_stop(0))
    rec.note("wait_for_stop()", coord.wait_for_stop())
    rec.call("raise_requested_exception", coord.raise_requested_exception)
    rec.call("request_stop again", coord.request_stop)
    rec.note("should_stop", coord.should_stop())
    coord.clear_stop()
    rec.note("should_stop after clear_stop", coord.should_stop())
    rec.note("wait_for_stop(0) after clear_stop", coord.wait_for_stop(0))


@scenario(
    ("should_stop", False),
    ("wait_for_stop(0)", False),
    ("wait_for_stop(WAIT)", True),
    ("should_stop", True),
    ok("join"),
)
def stop_async(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    go = threading.Event()
    requester = threads.start(stop_on, coord, go, name="requester")
    rec.note("should_stop", coord.should_stop())
    rec.note("wait_for_stop(0)", coord.wait_for_stop(0))
    go.set()
    rec.note("wait_for_stop(WAIT)", coord.wait_for_stop(WAIT))
    rec.note("should_stop", coord.should_stop())
    rec.call("join", coord.join, [requester], stop_grace_period_secs=WAIT)


# --------------------------------------------------------------------------- #
# Scenarios: join
# --------------------------------------------------------------------------- #

JOINED_CLEANLY = [
    ok("join"),
    ("alive after join", [False, False, False]),
    ("joined", True),
    ("should_stop", True),
]


def _join_waits(impl: Impl, rec: Recorder, threads: Threads, *, registered: str) -> None:
    coord = threads.coord(impl)
    go = threading.Event()
    requester = threads.start(stop_on, coord, go, name="requester")
    workers = [threads.polled(coord, f"worker-{i}") for i in range(2)]
    every = [requester, *workers]
    go.set()
    if registered == "none":
        rec.call("join", coord.join, every, stop_grace_period_secs=WAIT)
    elif registered == "all":
        for t in every:
            coord.register_thread(t)
        rec.call("join", coord.join, stop_grace_period_secs=WAIT)
    else:  # some registered, the others passed; one both registered and passed
        coord.register_thread(requester)
        coord.register_thread(workers[0])
        rec.call("join", coord.join, [workers[0], workers[1]], stop_grace_period_secs=WAIT)
    rec.note("alive after join", [t.is_alive() for t in every])
    rec.note("joined", coord.joined)
    rec.note("should_stop", coord.should_stop())


for _registered in ("none", "all", "some"):
    register(
        f"join_waits_for_threads_that_stop_late[registered={_registered}]",
        functools.partial(_join_waits, registered=_registered),
        JOINED_CLEANLY,
    )


@scenario(ok("join"), ("alive after join", False), ("should_stop", False), ("joined", True))
def join_without_stop_request_waits_past_the_grace_period(
    impl: Impl, rec: Recorder, threads: Threads
) -> None:
    """The grace period only starts at a stop request: until then join() waits as long as it takes.

    While no stop is requested, join() re-checks its threads each time
    ``self.wait_for_stop(1.0)`` times out (TF and looprt alike). The worker
    ends only after two such time-outs, and this coordinator's wait is cut to
    10 ms so that takes milliseconds. (A join() that waits some other way is
    still correct here, only slower: the worker then ends after WAIT.)
    """
    coord = threads.coord(impl)
    waited_twice = threading.Event()
    timeouts: list[Any] = []
    wait_for_stop = coord.wait_for_stop

    def short_wait(timeout: float | None = None) -> bool:
        timeouts.append(timeout)
        if len(timeouts) >= 2:
            waited_twice.set()
        return bool(wait_for_stop(None if timeout is None else min(timeout, 0.01)))

    coord.wait_for_stop = short_wait
    worker = threads.start(waited_twice.wait, WAIT, name="worker")
    rec.call("join", coord.join, [worker], stop_grace_period_secs=0)
    rec.note("alive after join", worker.is_alive())
    rec.note("should_stop", coord.should_stop())
    rec.note("joined", coord.joined)


@scenario(ok("join"), ("joined", True), ("should_stop", False))
def join_without_threads_returns_at_once(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    rec.call("join", coord.join)
    rec.note("joined", coord.joined)
    rec.note("should_stop", coord.should_stop())


@scenario(
    err("join", "RuntimeError", STRAGGLERS + "straggler-1"),
    ("joined", True),
    ("should_stop", True),
    ("straggler alive", True),
)
def grace_period_expires(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    go = threading.Event()
    requester = threads.start(stop_on, coord, go, name="requester")
    worker = threads.start(coord.wait_for_stop, WAIT, name="obedient")
    straggler = threads.straggler("straggler-1")
    coord.register_thread(straggler)  # registered *and* passed: named once
    go.set()
    requester.join(WAIT)
    worker.join(WAIT)  # it honoured the request: it must not be named
    rec.call("join", coord.join, [requester, worker, straggler], stop_grace_period_secs=GRACE)
    rec.note("joined", coord.joined)
    rec.note("should_stop", coord.should_stop())
    rec.note("straggler alive", straggler.is_alive())


@scenario(err("join", "RuntimeError", STRAGGLERS + "straggler-a straggler-b"))
def grace_period_expires_names_every_straggler(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    for name in ("straggler-b", "straggler-a"):
        coord.register_thread(threads.straggler(name))
    coord.request_stop()
    rec.call("join", coord.join, stop_grace_period_secs=GRACE)


@scenario(
    err("join grace 0", "RuntimeError", STRAGGLERS + "straggler-1"),
    err("join grace -1", "RuntimeError", STRAGGLERS + "straggler-1"),
)
def zero_or_negative_grace_period(impl: Impl, rec: Recorder, threads: Threads) -> None:
    straggler = threads.straggler("straggler-1")
    for grace in (0, -1):
        coord = threads.coord(impl)
        coord.request_stop()
        rec.call(f"join grace {grace}", coord.join, [straggler], stop_grace_period_secs=grace)


@scenario(
    ok("join"),
    ("logs", [STRAGGLERS + "straggler-1"]),
    ("joined", True),
    ("straggler alive", True),
)
def ignore_live_threads_only_logs(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    straggler = threads.straggler("straggler-1")
    coord.request_stop()
    with captured_logs(impl.logger) as logs:
        rec.call("join", coord.join, [straggler], stop_grace_period_secs=GRACE, ignore_live_threads=True)
    rec.note("logs", logs)
    rec.note("joined", coord.joined)
    rec.note("straggler alive", straggler.is_alive())


@scenario(
    err("join", "RuntimeError", STRAGGLERS + "straggler-1"),
    ok("join again"),
    ("joined", True),
)
def join_forgets_registered_threads(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    coord.register_thread(threads.straggler("straggler-1"))
    coord.request_stop()
    rec.call("join", coord.join, stop_grace_period_secs=GRACE)
    rec.call("join again", coord.join, stop_grace_period_secs=GRACE)
    rec.note("joined", coord.joined)


@scenario(err("join", "RuntimeError", "boom", "boom"))
def reported_exception_beats_stragglers(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    boom = rec.tag(RuntimeError("boom"), "boom")
    straggler = threads.straggler("straggler-1")
    go = threading.Event()
    reporter = threads.start(report_on, coord, go, boom, name="reporter")
    go.set()
    reporter.join(WAIT)
    rec.call("join", coord.join, [straggler, reporter], stop_grace_period_secs=GRACE)


# --------------------------------------------------------------------------- #
# Scenarios: reporting exceptions
# --------------------------------------------------------------------------- #


def _report_from_thread(impl: Impl, rec: Recorder, threads: Threads, *, as_exc_info: bool) -> None:
    coord = threads.coord(impl)
    first = rec.tag(RuntimeError("First"), "first")
    go = threading.Event()
    with captured_logs(impl.logger) as logs:
        reporter = threads.start(report_on, coord, go, first, as_exc_info, name="reporter")
        rec.note("should_stop before", coord.should_stop())
        go.set()
        rec.note("wait_for_stop", coord.wait_for_stop(WAIT))
        reporter.join(WAIT)
    rec.note("logs", logs)
    rec.call("raise_requested_exception", coord.raise_requested_exception)
    rec.call("raise_requested_exception again", coord.raise_requested_exception)
    rec.call("join", coord.join, [reporter])
    rec.note("joined", coord.joined)
    rec.call("raise_requested_exception after join", coord.raise_requested_exception)


for _as_exc_info, _log in ((False, "<class 'RuntimeError'>, First"), (True, "First")):
    register(
        f"join_reraises_reported_exception[{'exc_info' if _as_exc_info else 'instance'}]",
        functools.partial(_report_from_thread, as_exc_info=_as_exc_info),
        [
            ("should_stop before", False),
            ("wait_for_stop", True),
            ("logs", [ERROR_REPORTED + _log]),
            err("raise_requested_exception", "RuntimeError", "First", "first"),
            err("raise_requested_exception again", "RuntimeError", "First", "first"),
            err("join", "RuntimeError", "First", "first"),
            ("joined", True),
            err("raise_requested_exception after join", "RuntimeError", "First", "first"),
        ],
    )


def _first_exception_wins(impl: Impl, rec: Recorder, threads: Threads, *, styles: tuple[bool, bool]) -> None:
    coord = threads.coord(impl)
    first = rec.tag(RuntimeError("First"), "first")
    late = rec.tag(RuntimeError("Too late"), "late")
    go1, go2, done2 = threading.Event(), threading.Event(), threading.Event()
    t1 = threads.start(report_on, coord, go1, first, styles[0], go2, name="first")
    t2 = threads.start(report_on, coord, go2, late, styles[1], done2, name="second")
    go1.set()
    rec.note("second reported", done2.wait(WAIT))
    rec.call("raise_requested_exception", coord.raise_requested_exception)
    rec.call("join", coord.join, [t1, t2], stop_grace_period_secs=WAIT)


for _styles in ((False, False), (True, True), (True, False), (False, True)):
    register(
        "first_exception_wins[{}]".format(",".join("exc_info" if s else "instance" for s in _styles)),
        functools.partial(_first_exception_wins, styles=_styles),
        [
            ("second reported", True),
            err("raise_requested_exception", "RuntimeError", "First", "first"),
            err("join", "RuntimeError", "First", "first"),
        ],
    )


@scenario(
    ok("report after plain stop"),
    ok("raise_requested_exception"),
    ok("join"),
    ("should_stop", True),
)
def exception_after_plain_stop_is_dropped(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    coord.request_stop()
    rec.call("report after plain stop", report, coord, RuntimeError("late"))
    rec.call("raise_requested_exception", coord.raise_requested_exception)
    rec.call("join", coord.join)
    rec.note("should_stop", coord.should_stop())


@scenario(ok("report OutOfRange"), ok("report RuntimeError"), ok("join"))
def exception_after_clean_stop_is_dropped(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    rec.call("report OutOfRange", report, coord, impl.out_of_range(None, None, "end of input"))
    rec.call("report RuntimeError", report, coord, RuntimeError("late"))
    rec.call("join", coord.join)


def _out_of_range_is_clean(impl: Impl, rec: Recorder, threads: Threads, *, how: str) -> None:
    coord = threads.coord(impl)
    if how == "subclass":
        eof: BaseException = type("EndOfFile", (impl.out_of_range,), {})(None, None, "eof")
    else:
        eof = impl.out_of_range(None, None, "eof")
    go = threading.Event()
    with captured_logs(impl.logger) as logs:
        reporter = threads.start(report_on, coord, go, eof, how == "exc_info", name="reader")
        go.set()
        reporter.join(WAIT)
    rec.note("should_stop", coord.should_stop())
    rec.note("logs", logs)
    rec.call("raise_requested_exception", coord.raise_requested_exception)
    rec.call("join", coord.join, [reporter])


for _how in ("instance", "exc_info", "subclass"):
    register(
        f"out_of_range_is_a_clean_stop[{_how}]",
        functools.partial(_out_of_range_is_clean, how=_how),
        [("should_stop", True), ("logs", []), ok("raise_requested_exception"), ok("join")],
    )


@scenario(
    ok("report ValueError (list)"),
    ok("join (list)"),
    ok("report KeyError (generator)"),
    ok("join (generator)"),
    ok("report OutOfRange (ValueError only)"),
    err("join (ValueError only)", "OutOfRangeError", "eof", "eof"),
    ok("report OutOfRange (nothing clean)"),
    err("join (nothing clean)", "OutOfRangeError", "eof", "eof"),
)
def custom_clean_stop_exception_types(impl: Impl, rec: Recorder, threads: Threads) -> None:
    eof = rec.tag(impl.out_of_range(None, None, "eof"), "eof")
    as_list = threads.coord(impl, clean_stop_exception_types=[ValueError])
    rec.call("report ValueError (list)", report, as_list, ValueError("bad value"))
    rec.call("join (list)", as_list.join)
    as_generator = threads.coord(impl, clean_stop_exception_types=(t for t in (KeyError,)))
    rec.call("report KeyError (generator)", report, as_generator, KeyError("k"))
    rec.call("join (generator)", as_generator.join)
    value_only = threads.coord(impl, clean_stop_exception_types=(ValueError,))
    rec.call("report OutOfRange (ValueError only)", report, value_only, eof)
    rec.call("join (ValueError only)", value_only.join)
    nothing = threads.coord(impl, clean_stop_exception_types=())
    rec.call("report OutOfRange (nothing clean)", report, nothing, eof)
    rec.call("join (nothing clean)", nothing.join)


@scenario(
    ok("report"),
    ("should_stop", True),
    ("should_stop after clear_stop", False),
    ok("raise_requested_exception after clear_stop"),
    ok("report second"),
    err("join", "RuntimeError", "Second", "second"),
    ("joined", True),
    ("joined after clear_stop", False),
    ("should_stop after clear_stop", False),
    ok("join again"),
)
def clear_stop_clears_the_exception_too(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    rec.call("report", report, coord, RuntimeError("First"))
    rec.note("should_stop", coord.should_stop())
    coord.clear_stop()
    rec.note("should_stop after clear_stop", coord.should_stop())
    rec.call("raise_requested_exception after clear_stop", coord.raise_requested_exception)
    rec.call("report second", report, coord, rec.tag(RuntimeError("Second"), "second"))
    rec.call("join", coord.join)
    rec.note("joined", coord.joined)
    coord.clear_stop()
    rec.note("joined after clear_stop", coord.joined)
    rec.note("should_stop after clear_stop", coord.should_stop())
    rec.call("join again", coord.join)


def _request_stop_after_join(impl: Impl, rec: Recorder, threads: Threads, *, as_exc_info: bool) -> None:
    coord = threads.coord(impl)
    rec.call("join", coord.join)
    late = rec.tag(RuntimeError("after join"), "late")
    rec.call("report after join", report, coord, late, as_exc_info)
    rec.note("should_stop", coord.should_stop())
    rec.call("raise_requested_exception", coord.raise_requested_exception)
    rec.call("request_stop() after join", coord.request_stop)
    rec.note("should_stop after request_stop()", coord.should_stop())
    eof = impl.out_of_range(None, None, "eof")
    rec.call("report OutOfRange after join", report, coord, eof, as_exc_info)
    rec.call("report again after join", report, coord, late, as_exc_info)
    coord.clear_stop()
    rec.call("report after clear_stop", report, coord, late, as_exc_info)
    rec.call("join after clear_stop", coord.join)


for _as_exc_info in (False, True):
    register(
        f"request_stop_raises_once_joined[{'exc_info' if _as_exc_info else 'instance'}]",
        functools.partial(_request_stop_after_join, as_exc_info=_as_exc_info),
        [
            ok("join"),
            err("report after join", "RuntimeError", "after join", "late"),
            ("should_stop", False),
            ok("raise_requested_exception"),
            ok("request_stop() after join"),
            ("should_stop after request_stop()", True),
            ok("report OutOfRange after join"),
            err("report again after join", "RuntimeError", "after join", "late"),
            ok("report after clear_stop"),
            err("join after clear_stop", "RuntimeError", "after join", "late"),
        ],
    )


@scenario(
    ok("report"),
    err("join", "KeyError", "'handled'", "handled"),
    divergence=(
        "TF records sys.exc_info() (the exception being handled) when request_stop() gets an "
        "exception instance; looprt records the instance it was given"
    ),
)
def instance_reported_while_handling_another_exception(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    handled = rec.tag(KeyError("handled"), "handled")
    given = rec.tag(RuntimeError("given"), "given")
    try:
        raise handled
    except KeyError:
        rec.call("report", coord.request_stop, given)
    rec.call("join", coord.join)


# --------------------------------------------------------------------------- #
# Scenarios: stop_on_exception
# --------------------------------------------------------------------------- #


@scenario(
    ("body ran", True),
    ("should_stop after clean block", False),
    ("after failing block", True),
    ("should_stop", True),
    ("after second failing block", True),
    err("join", "RuntimeError", "boom", "boom"),
)
def stop_on_exception_reports_and_suppresses(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    boom = rec.tag(RuntimeError("boom"), "boom")
    with coord.stop_on_exception():
        rec.note("body ran", True)
    rec.note("should_stop after clean block", coord.should_stop())
    with coord.stop_on_exception():
        raise boom
    rec.note("after failing block", True)
    rec.note("should_stop", coord.should_stop())
    with coord.stop_on_exception():
        raise rec.tag(ValueError("second"), "second")
    rec.note("after second failing block", True)
    rec.call("join", coord.join)


def _fail_in_block(coord: Any, go: threading.Event, ex: BaseException) -> None:
    with coord.stop_on_exception():
        go.wait(WAIT)
        raise ex


def _stop_on_exception_in_thread(impl: Impl, rec: Recorder, threads: Threads, *, kind: str) -> None:
    coord = threads.coord(impl)
    ex: BaseException
    if kind == "RuntimeError":
        ex = RuntimeError("thread failed")
    elif kind == "SystemExit":
        ex = SystemExit("bye")
    else:
        ex = impl.out_of_range(None, None, "eof")
    rec.tag(ex, "ex")
    go = threading.Event()
    worker = threads.start(_fail_in_block, coord, go, ex, name="worker")
    go.set()
    rec.note("wait_for_stop", coord.wait_for_stop(WAIT))
    rec.call("join", coord.join, [worker], stop_grace_period_secs=WAIT)
    rec.note("alive after join", worker.is_alive())


for _kind, _join in (
    ("RuntimeError", err("join", "RuntimeError", "thread failed", "ex")),
    ("SystemExit", err("join", "SystemExit", "bye", "ex")),
    ("OutOfRangeError", ok("join")),
):
    register(
        f"stop_on_exception_in_thread[{_kind}]",
        functools.partial(_stop_on_exception_in_thread, kind=_kind),
        [("wait_for_stop", True), _join, ("alive after join", False)],
    )


# --------------------------------------------------------------------------- #
# Scenarios: LooperThread
# --------------------------------------------------------------------------- #


def count_calls(coord: Any, n: int, calls: list[str], label: str = "default") -> None:
    calls.append(label)
    if len(calls) >= n:
        coord.request_stop()


def _looper_target_arguments(impl: Impl, rec: Recorder, threads: Threads, *, how: str, timer: Any) -> None:
    coord = threads.coord(impl)
    calls: list[str] = []
    if how == "args":
        spec: dict[str, Any] = {"args": (coord, 3, calls, "positional")}
    elif how == "kwargs":
        spec = {"kwargs": {"coord": coord, "n": 3, "calls": calls, "label": "keyword"}}
    else:
        spec = {"args": (coord, 3), "kwargs": {"calls": calls, "label": "mixed"}}
    looper = threads.track(impl.looper_thread.loop(coord, timer, count_calls, **spec))
    rec.note("started", looper.ident is not None)
    rec.note("is a LooperThread", isinstance(looper, impl.looper_thread))
    rec.note("daemon", looper.daemon)
    rec.call("join", coord.join, [looper], stop_grace_period_secs=WAIT)
    rec.note("calls", calls)
    rec.note("alive after join", looper.is_alive())


for _how, _label in (("args", "positional"), ("kwargs", "keyword"), ("mixed", "mixed")):
    for _timer in (None, 0):
        register(
            f"looper_target_{_how}[timer={_timer}]",
            functools.partial(_looper_target_arguments, how=_how, timer=_timer),
            [
                ("started", True),
                ("is a LooperThread", True),
                ("daemon", True),
                ok("join"),
                ("calls", [_label] * 3),
                ("alive after join", False),
            ],
        )


@scenario(("first call at once", True), ok("join"), ("calls", 1), ("alive after join", False))
def looper_timer_runs_at_once_and_stops_without_waiting_out_the_interval(
    impl: Impl, rec: Recorder, threads: Threads
) -> None:
    coord = threads.coord(impl)
    called = threading.Event()
    calls: list[int] = []

    def target() -> None:
        calls.append(1)
        called.set()

    looper = threads.track(impl.looper_thread.loop(coord, 3600, target))
    rec.note("first call at once", called.wait(WAIT))
    coord.request_stop()
    rec.call("join", coord.join, [looper], stop_grace_period_secs=WAIT)
    rec.note("calls", len(calls))
    rec.note("alive after join", looper.is_alive())


def _looper_target_raises(impl: Impl, rec: Recorder, threads: Threads, *, kind: str) -> None:
    coord = threads.coord(impl)
    if kind == "OutOfRangeError":
        failure = impl.out_of_range(None, None, "eof")
    else:
        failure = RuntimeError("looper failed")
    rec.tag(failure, "failure")
    calls: list[int] = []

    def target() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise failure

    looper = threads.track(impl.looper_thread.loop(coord, None, target))
    rec.call("join", coord.join, [looper], stop_grace_period_secs=WAIT)
    rec.note("calls", len(calls))
    rec.note("should_stop", coord.should_stop())
    rec.note("alive after join", looper.is_alive())


for _kind, _join in (
    ("RuntimeError", err("join", "RuntimeError", "looper failed", "failure")),
    ("OutOfRangeError", ok("join")),
):
    register(
        f"looper_target_raises[{_kind}]",
        functools.partial(_looper_target_raises, kind=_kind),
        [_join, ("calls", 2), ("should_stop", True), ("alive after join", False)],
    )


def recording_looper(impl: Impl) -> Any:
    class RecordingLooper(impl.looper_thread):  # type: ignore[misc, name-defined]
        def __init__(
            self, coord: Any, timer: Any, *, stop_after: int = 3, fail_in: str = "", failure: Any = None
        ) -> None:
            super().__init__(coord, timer)
            self.coordinator = coord
            self.events: list[str] = []
            self.stop_after = stop_after
            self.fail_in = fail_in
            self.failure = failure

        def _event(self, name: str) -> None:
            self.events.append(name)
            if self.fail_in == name:
                raise self.failure

        def start_loop(self) -> None:
            self._event("start")

        def run_loop(self) -> None:
            self._event("run")
            if self.events.count("run") >= self.stop_after:
                self.coordinator.request_stop()

        def stop_loop(self) -> None:
            self._event("stop")

    return RecordingLooper


def _looper_hooks(
    impl: Impl, rec: Recorder, threads: Threads, *, timer: Any, fail_in: str, stopped: bool
) -> None:
    coord = threads.coord(impl)
    if stopped:
        coord.request_stop()
    failure = rec.tag(RuntimeError(f"{fail_in} failed"), "failure")
    looper = recording_looper(impl)(coord, timer, fail_in=fail_in, failure=failure)
    threads.track(looper, start=True)
    rec.call("join", coord.join, stop_grace_period_secs=WAIT)  # the looper registered itself
    rec.note("events", looper.events)
    rec.note("alive after join", looper.is_alive())


for _timer in (None, 0):
    for _fail_in, _stopped, _events in (
        ("", False, ["start", "run", "run", "run", "stop"]),
        ("", True, ["start", "stop"]),
        ("start", False, ["start"]),
        ("run", False, ["start", "run"]),
        # stop_loop runs after run_loop's stop request: its exception comes too late to be kept
        ("stop", False, ["start", "run", "run", "run", "stop"]),
    ):
        register(
            f"looper_hooks[timer={_timer},fail_in={_fail_in or '-'},stopped={_stopped}]",
            functools.partial(_looper_hooks, timer=_timer, fail_in=_fail_in, stopped=_stopped),
            [
                err("join", "RuntimeError", f"{_fail_in} failed", "failure")
                if _fail_in in ("start", "run")
                else ok("join"),
                ("events", _events),
                ("alive after join", False),
            ],
        )


def _block(entered: threading.Event, release: threading.Event) -> None:
    entered.set()
    release.wait(WAIT)


@scenario(("entered", True), err("join", "RuntimeError", STRAGGLERS + "looper-1"))
def looper_registers_itself(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    entered = threading.Event()
    looper = impl.looper_thread(coord, None, target=_block, args=(entered, threads.release))
    looper.name = "looper-1"
    threads.track(looper, start=True)
    rec.note("entered", entered.wait(WAIT))
    coord.request_stop()
    rec.call("join", coord.join, stop_grace_period_secs=GRACE)  # no threads passed


@scenario(ok("join"), ("alive after join", False))
def looper_without_target_runs_until_stopped(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    looper = threads.track(impl.looper_thread(coord, None), start=True)
    coord.request_stop()
    rec.call("join", coord.join, [looper], stop_grace_period_secs=WAIT)
    rec.note("alive after join", looper.is_alive())


ARGS_NEED_TARGET = "'args' and 'kwargs' argument require that you also pass 'target'"


@scenario(
    err("coord=None", "ValueError", "'coord' argument must be a Coordinator: None"),
    err("args without target", "ValueError", ARGS_NEED_TARGET),
    err("kwargs without target", "ValueError", ARGS_NEED_TARGET),
    ok("empty args without target", "LooperThread"),
)
def looper_argument_checks(impl: Impl, rec: Recorder, threads: Threads) -> None:
    coord = threads.coord(impl)
    rec.call("coord=None", impl.looper_thread, None, None)
    rec.call("args without target", impl.looper_thread, coord, None, args=(1,))
    rec.call("kwargs without target", impl.looper_thread, coord, None, kwargs={"a": 1})
    rec.call(
        "empty args without target",
        lambda: type(impl.looper_thread(coord, None, args=(), kwargs={})).__name__,
    )


@scenario(
    err(
        "coord='not a coordinator'", "ValueError", "'coord' argument must be a Coordinator: not a coordinator"
    ),
)
def looper_rejects_non_coordinator_message(impl: Impl, rec: Recorder, threads: Threads) -> None:
    rec.call("coord='not a coordinator'", impl.looper_thread, "not a coordinator", None)


# --------------------------------------------------------------------------- #
# The tests
# --------------------------------------------------------------------------- #


def _params(*, only_divergent: bool = False) -> list[Any]:
    params = []
    for name, sc in SCENARIOS.items():
        if only_divergent and sc.divergence is None:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=sc.divergence)] if sc.divergence else []
        params.append(pytest.param(name, id=name, marks=[] if only_divergent else marks))
    return params


@pytest.mark.parametrize("name", _params())
def test_looprt_scenario(name: str) -> None:
    assert run_scenario(name, LOOPRT) == SCENARIOS[name].expected


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", _params())
def test_same_outcome_as_tensorflow(name: str) -> None:
    tf_outcome = run_scenario(name, tensorflow_impl())
    assert tf_outcome == SCENARIOS[name].expected  # the declared outcome is TF's
    assert run_scenario(name, LOOPRT) == tf_outcome


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", _params(only_divergent=True))
def test_tensorflow_reference_of_known_divergences(name: str) -> None:
    """Keeps the TF outcome declared by the xfail scenarios honest."""
    assert run_scenario(name, tensorflow_impl()) == SCENARIOS[name].expected


# --------------------------------------------------------------------------- #
# looprt-only checks
# --------------------------------------------------------------------------- #


def _raise_deep(ex: BaseException) -> None:
    raise ex


def test_join_reraises_with_the_traceback_of_the_reporting_thread() -> None:
    coord = looprt.Coordinator()

    def worker() -> None:
        with coord.stop_on_exception():
            _raise_deep(RuntimeError("deep"))

    t = threading.Thread(target=worker, name="deep-worker", daemon=True)
    t.start()
    with pytest.raises(RuntimeError, match="deep") as info:
        coord.join([t], stop_grace_period_secs=WAIT)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "_raise_deep" in frames
    assert "worker" in frames


def test_concurrent_reports_keep_exactly_one() -> None:
    coord = looprt.Coordinator()
    n = 8
    barrier = threading.Barrier(n)
    errors = [RuntimeError(f"error {i}") for i in range(n)]

    def worker(ex: BaseException) -> None:
        barrier.wait(WAIT)
        report(coord, ex)

    threads = [threading.Thread(target=worker, args=(e,), daemon=True) for e in errors]
    for t in threads:
        t.start()
    with pytest.raises(RuntimeError) as info:
        coord.join(threads, stop_grace_period_secs=WAIT)
    assert any(info.value is e for e in errors)
    with pytest.raises(RuntimeError) as again:
        coord.raise_requested_exception()
    assert again.value is info.value
    assert not any(t.is_alive() for t in threads)


def test_error_report_is_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    coord = looprt.Coordinator()
    with caplog.at_level(logging.INFO, logger="looprt"):
        report(coord, RuntimeError("logged"), as_exc_info=True)
    (record,) = [r for r in caplog.records if r.getMessage().startswith(ERROR_REPORTED)]
    assert record.getMessage() == ERROR_REPORTED + "logged"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_request_stop_outside_a_handler_records_the_given_exception() -> None:
    """Not TF's behaviour on purpose: TF's request_stop(ex) called outside an
    ``except`` block dies with ``TypeError: not all arguments converted during
    string formatting`` (it formats a tuple with %s) and leaves the coordinator
    unstopped. looprt records the exception it was given."""
    coord = looprt.Coordinator()
    ex = RuntimeError("outside")
    coord.request_stop(ex)
    assert coord.should_stop()
    with pytest.raises(RuntimeError) as info:
        coord.join()
    assert info.value is ex


@pytest.mark.tensorflow
def test_looprt_looper_rejects_a_tensorflow_coordinator() -> None:
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(ValueError, match="'coord' argument must be a Coordinator"):
        looprt.LooperThread(tf.train.Coordinator(), None)


def test_scenarios_can_fail() -> None:
    """The harness sees a wrong implementation: a coordinator whose join() forgets the reported error."""

    class ForgetfulCoordinator(looprt.Coordinator):
        def join(self, threads: Any = None, stop_grace_period_secs: float = 120, **kw: Any) -> None:
            with contextlib.suppress(RuntimeError):
                super().join(threads, stop_grace_period_secs, **kw)

    broken = Impl("broken", ForgetfulCoordinator, looprt.LooperThread, OutOfRangeError, "looprt.coordinator")
    name = "join_reraises_reported_exception[instance]"
    assert run_scenario(name, broken) != SCENARIOS[name].expected
