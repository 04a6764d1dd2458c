"""``HookedSession`` calls ``after_epoch`` after the raw run, before every ``after_run``."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import looprt
from looprt.hooks.epoch_end import EpochEnd
from looprt.session.hooked import HookedSession


class RawWithEpochs:
    """A raw session whose runs end an epoch whenever ``ends`` says so."""

    def __init__(self, ends: dict[int, list[EpochEnd]]) -> None:
        self.ends, self.runs = ends, 0
        self.pending: list[EpochEnd] = []

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        self.runs += 1
        self.pending += self.ends.get(self.runs, [])
        return fetches

    def epoch_ends(self) -> list[EpochEnd]:
        ended, self.pending = self.pending, []
        return ended


class Recorder(looprt.SessionRunHook):
    def __init__(self, name: str, events: list[str], *, fetch: bool = False) -> None:
        self.name, self.events, self.fetch = name, events, fetch

    def before_run(self, run_context: Any) -> Any:
        return looprt.SessionRunArgs("x") if self.fetch else None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.events.append(f"{self.name}.after_run")


class EpochRecorder(Recorder):
    def after_epoch(self, run_context: Any, end: EpochEnd) -> None:
        self.events.append(f"{self.name}.after_epoch({end.epoch})")


@pytest.mark.parametrize("fetch", [False, True], ids=["lean-run", "merged-run"])
def test_after_epoch_runs_for_each_ended_epoch_before_any_after_run(fetch: bool) -> None:
    events: list[str] = []
    raw = RawWithEpochs({2: [EpochEnd("x", 0, 2)], 3: [EpochEnd("x", 1, 3), EpochEnd("y", 0, 3)]})
    hooks = [Recorder("a", events, fetch=fetch), EpochRecorder("b", events), EpochRecorder("c", events)]
    sess = HookedSession(raw, hooks)
    for run in range(3):
        events.append(f"run {run + 1}")
        assert sess.run("f") == "f"
    assert events == [
        "run 1", "a.after_run", "b.after_run", "c.after_run",
        "run 2", "b.after_epoch(0)", "c.after_epoch(0)", "a.after_run", "b.after_run", "c.after_run",
        "run 3", "b.after_epoch(1)", "c.after_epoch(1)", "b.after_epoch(0)", "c.after_epoch(0)",
        "a.after_run", "b.after_run", "c.after_run",
    ]  # fmt: skip


def test_without_after_epoch_hooks_the_session_never_asks_for_epoch_ends() -> None:
    raw = RawWithEpochs({1: [EpochEnd("x", 0, 1)]})
    sess = HookedSession(raw, [Recorder("a", [])])
    sess.run("f")
    assert raw.pending == [EpochEnd("x", 0, 1)]  # left where it was: no call was made


def test_after_epoch_on_a_session_that_reports_no_epochs_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    class Raw:
        def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
            return fetches

    events: list[str] = []
    with caplog.at_level(logging.WARNING, logger="looprt.session.hooked"):
        sess = HookedSession(Raw(), [EpochRecorder("b", events)])
    assert "['EpochRecorder'] define after_epoch, but Raw reports no epoch ends" in caplog.text
    sess.run("f")
    assert events == ["b.after_run"]
