"""Malformed arguments to every public entry point get a specific error, named and explained.

``BAD_INPUTS`` is the table: an entry point, a malformed call, the error type
expected and words its message must contain. Rows marked ``xfail(strict)``
are gaps found by this table in modules other than the checkpoint and
recovery ones: each says what happens today, and the row starts failing (so
must be unmarked) once the gap is closed.

The Hypothesis tests throw random malformed fetch structures at the merge
engine, through ``PlanCache`` and through real sessions with hooks, and
accept only ``FetchError`` (looprt's documented error for a bad fetch).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests import strategies

import looprt
from looprt.checkpoint import CheckpointManager, Saver, latest_checkpoint
from looprt.errors import FeedError, FetchError, NotFoundError
from looprt.hooks.preemption import PreemptionHook
from looprt.structure import PlanCache


def program() -> tuple[looprt.Program, looprt.Step, looprt.Input]:
    prog = looprt.Program(name="p")
    prog.state("w", np.zeros(2))
    x = prog.input("x")

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray, x: Any) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w.sum())}

    return prog, train, x


def session() -> tuple[looprt.ProgramSession, looprt.Step, looprt.Input]:
    prog, train, x = program()
    sess = looprt.ProgramSession(prog)
    sess.run(prog.initializer)
    return sess, train, x


def run_train(feed: Callable[[looprt.Program, looprt.Input], Any], **kwargs: Any) -> Any:
    """Run the train step of a fresh session with ``feed(program, x)`` as the feed_dict."""
    sess, train, x = session()
    return sess.run(train, feed_dict=feed(sess.graph, x), **kwargs)


def creator() -> looprt.ChiefSessionCreator:
    return looprt.ChiefSessionCreator(looprt.Scaffold(program=program()[0]))


def gap(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"gap (not in the reliability modules): {reason}")


Row = tuple[Callable[[Path], Any], type[BaseException], str]

BAD_INPUTS: dict[str, Any] = {
    # -- checkpoints ---------------------------------------------------------------------
    "Saver(not a program)": (lambda d: Saver(3), TypeError, "needs a looprt Program"),
    "Saver(max_to_keep=-1)": (lambda d: Saver(program()[0], max_to_keep=-1), ValueError, "max_to_keep"),
    "Saver(max_to_keep='3')": (lambda d: Saver(program()[0], max_to_keep="3"), ValueError, "max_to_keep"),
    "Saver(keep_checkpoint_every_n_hours=nan)": (
        lambda d: Saver(program()[0], keep_checkpoint_every_n_hours=math.nan), ValueError, "keep_checkpoint"),
    "Saver.save(save_path=None)": (lambda d: Saver(program()[0]).save(None, None), ValueError, "save_path"),
    "Saver.save(save_path=3)": (lambda d: Saver(program()[0]).save(None, 3), TypeError, "save_path"),
    "Saver.save(save_path=a folder)": (
        lambda d: Saver(program()[0]).save(None, str(d) + os.sep, 1), ValueError, "end in a file name"),
    "Saver.save(global_step='a')": (
        lambda d: Saver(program()[0]).save(None, str(d / "m"), "a"), TypeError, "global_step"),
    "Saver.save(global_step=1.5)": (
        lambda d: Saver(program()[0]).save(None, str(d / "m"), 1.5), TypeError, "global_step"),
    "Saver.save(global_step=nan)": (
        lambda d: Saver(program()[0]).save(None, str(d / "m"), math.nan), TypeError, "global_step"),
    "Saver.save(global_step=True)": (
        lambda d: Saver(program()[0]).save(None, str(d / "m"), True), TypeError, "global_step"),
    "Saver.save(global_step=-1)": (
        lambda d: Saver(program()[0]).save(None, str(d / "m"), -1), ValueError, ">= 0"),
    "Saver.save_async(global_step=-1)": (
        lambda d: Saver(program()[0]).save_async(None, str(d / "m"), -1), ValueError, ">= 0"),
    "Saver.restore(None)": (lambda d: Saver(program()[0]).restore(None, None), ValueError, "None"),
    "Saver.restore(3)": (lambda d: Saver(program()[0]).restore(None, 3), TypeError, "checkpoint path"),
    "Saver.restore(missing)": (
        lambda d: Saver(program()[0]).restore(None, str(d / "m-1")), NotFoundError, "not found"),
    "Saver.restore(not a checkpoint)": (
        lambda d: Saver(program()[0]).restore(None, str(d)), looprt.errors.DataLossError, "manifest.json"),
    "latest_checkpoint(None)": (lambda d: latest_checkpoint(None), TypeError, "checkpoint_dir"),
    "latest_checkpoint(3)": (lambda d: latest_checkpoint(3), TypeError, "checkpoint_dir"),
    "latest_checkpoint(latest_filename='../x')": (
        lambda d: latest_checkpoint(str(d), "../x"), ValueError, "latest_filename"),
    "CheckpointManager(None)": (lambda d: CheckpointManager(None), TypeError, "directory"),
    "CheckpointManager(basename='a/b')": (
        lambda d: CheckpointManager(str(d), basename="a/b"), ValueError, "basename"),
    "CheckpointManager(basename='.tmp')": (
        lambda d: CheckpointManager(str(d), basename=".tmpx"), ValueError, "basename"),
    "CheckpointManager(index_filename='')": (
        lambda d: CheckpointManager(str(d), index_filename=""), ValueError, "index_filename"),
    "CheckpointManager(max_to_keep=True)": (
        lambda d: CheckpointManager(str(d), max_to_keep=True), ValueError, "max_to_keep"),
    "CheckpointManager(keep_checkpoint_every_n_hours=-1)": (
        lambda d: CheckpointManager(str(d), keep_checkpoint_every_n_hours=-1), ValueError, "keep_checkpoint"),
    "CheckpointManager.save(step=-1)": (
        lambda d: CheckpointManager(str(d)).save({}, -1, print), ValueError, ">= 0"),
    "CheckpointManager.save(step=True)": (
        lambda d: CheckpointManager(str(d)).save({}, True, print), TypeError, "int"),
    "CheckpointManager.save(step='1')": (
        lambda d: CheckpointManager(str(d)).save({}, "1", print), TypeError, ""),
    "CheckpointManager.save(writer=3)": (
        lambda d: CheckpointManager(str(d)).save({}, 1, 3), TypeError, "writer"),
    "CheckpointManager.save(state=[1])": (
        lambda d: CheckpointManager(str(d)).save([1], 1, print), TypeError, "state"),
    "CheckpointManager.save(writer writes nothing)": (
        lambda d: CheckpointManager(str(d)).save({}, 1, lambda s, f: []), ValueError, "reported no files"),
    "CheckpointManager.save(writer escapes)": (
        lambda d: CheckpointManager(str(d)).save({}, 1, lambda s, f: ["../x"]), ValueError, "inside its folder"),
    "CheckpointManager.save_async(writer=3)": (
        lambda d: CheckpointManager(str(d)).save_async({}, 1, 3), TypeError, "writer"),
    # -- hooks of the reliability work ---------------------------------------------------
    "CheckpointSaverHook(checkpoint_dir=None)": (
        lambda d: looprt.CheckpointSaverHook(None, save_steps=1), TypeError, "checkpoint_dir"),
    "CheckpointSaverHook(save_steps=0)": (
        lambda d: looprt.CheckpointSaverHook(str(d), save_steps=0), ValueError, "save_steps"),
    "CheckpointSaverHook(save_steps=2.5)": (
        lambda d: looprt.CheckpointSaverHook(str(d), save_steps=2.5), ValueError, "save_steps"),
    "CheckpointSaverHook(save_secs=nan)": (
        lambda d: looprt.CheckpointSaverHook(str(d), save_secs=math.nan), ValueError, "save_secs"),
    "CheckpointSaverHook(save_secs=-1)": (
        lambda d: looprt.CheckpointSaverHook(str(d), save_secs=-1), ValueError, "save_secs"),
    "CheckpointSaverHook(both periods)": (
        lambda d: looprt.CheckpointSaverHook(str(d), save_secs=1, save_steps=1), ValueError, "both"),
    "CheckpointSaverHook(no period)": (lambda d: looprt.CheckpointSaverHook(str(d)), ValueError, "Either"),
    "CheckpointSaverHook(saver and scaffold)": (
        lambda d: looprt.CheckpointSaverHook(str(d), save_steps=1, saver=1, scaffold=1), ValueError, "both"),
    "PreemptionHook(grace_secs=0)": (lambda d: PreemptionHook(0), ValueError, "grace_secs"),
    "PreemptionHook(grace_secs=inf... nan)": (lambda d: PreemptionHook(math.nan), ValueError, "grace_secs"),
    "PreemptionHook(signals=())": (lambda d: PreemptionHook(signals=()), ValueError, "signal"),
    "PreemptionHook(signals=(999,))": (lambda d: PreemptionHook(signals=(999,)), ValueError, "999"),
    # -- sessions and recovery -----------------------------------------------------------
    "MonitoredSession(max_recoveries=-1)": (
        lambda d: looprt.MonitoredSession(creator(), max_recoveries=-1), ValueError, "max_recoveries"),
    "MonitoredSession(max_recoveries='3')": (
        lambda d: looprt.MonitoredSession(creator(), max_recoveries="3"), ValueError, "max_recoveries"),
    "MonitoredSession(recovery_backoff_secs=nan)": (
        lambda d: looprt.MonitoredSession(creator(), recovery_backoff_secs=math.nan), ValueError, "backoff"),
    "MonitoredSession(recovery_backoff_secs=-1)": (
        lambda d: looprt.MonitoredSession(creator(), recovery_backoff_secs=-1), ValueError, "backoff"),
    "MonitoredTrainingSession(max_recoveries=-2)": (
        lambda d: looprt.MonitoredTrainingSession(
            scaffold=looprt.Scaffold(program=program()[0]), max_recoveries=-2), ValueError, "max_recoveries"),
    "MonitoredTrainingSession(checkpoint_dir=3)": (
        lambda d: looprt.MonitoredTrainingSession(
            checkpoint_dir=3, scaffold=looprt.Scaffold(program=program()[0])), TypeError, "checkpoint_dir"),
    "ChiefSessionCreator(both checkpoint arguments)": (
        lambda d: looprt.ChiefSessionCreator(
            looprt.Scaffold(program=program()[0]), checkpoint_dir=str(d), checkpoint_filename_with_path="x"
        ).create_session(), ValueError, "both"),
    "ChiefSessionCreator(checkpoint_filename_with_path=missing)": (
        lambda d: looprt.ChiefSessionCreator(
            looprt.Scaffold(program=program()[0]), checkpoint_filename_with_path=str(d / "m-3")
        ).create_session(), NotFoundError, "m-3"),
    "Scaffold(copy_from_scaffold=3)": (lambda d: looprt.Scaffold(copy_from_scaffold=3), TypeError, "Scaffold"),
    "StopAtStepHook()": (lambda d: looprt.StopAtStepHook(), ValueError, "num_steps or last_step"),
    "StopAtStepHook(both)": (lambda d: looprt.StopAtStepHook(1, 2), ValueError, "Only one"),
    "LoggingTensorHook(every_n_iter=0)": (
        lambda d: looprt.LoggingTensorHook({"a": "w"}, every_n_iter=0), ValueError, "every_n_iter"),
    "LoggingTensorHook(no period)": (lambda d: looprt.LoggingTensorHook({"a": "w"}), ValueError, "every_n"),
    "SummarySaverHook(no summary)": (
        lambda d: looprt.SummarySaverHook(output_dir=str(d), save_steps=1), ValueError, "scaffold or summary_op"),
    "ProfilerHook(no period)": (lambda d: looprt.ProfilerHook(output_dir=str(d)), ValueError, "every"),
    "SecondOrStepTimer(both)": (lambda d: looprt.SecondOrStepTimer(1, 1), ValueError, "both"),
    # -- programs and runs ---------------------------------------------------------------
    "Program(backend='nope')": (lambda d: looprt.Program(backend="nope").backend, ValueError, "no backend named"),
    "Program.state('')": (lambda d: program()[0].state("", 1), ValueError, "non-empty string"),
    "Program.state(3)": (lambda d: program()[0].state(3, 1), ValueError, "non-empty string"),
    "Program.input(duplicate name)": (lambda d: program()[0].input("w"), ValueError, "already has"),
    "Program.step(unknown parameter)": (
        lambda d: program()[0].step(lambda zz: None), ValueError, "not an input or state"),
    "Program.step(not callable)": (lambda d: program()[0].step(3), TypeError, "callable"),
    "Program.summary(not a handle)": (lambda d: program()[0].summary("t", 3), ValueError, "not a handle"),
    "wrap(not callable)": (lambda d: looprt.wrap(3), TypeError, "callable"),
    "run(None)": (lambda d: session()[0].run(None), FetchError, "NoneType"),
    "run(unknown name)": (lambda d: session()[0].run("nope"), FetchError, "'nope'"),
    "run({'a': set()})": (lambda d: session()[0].run({"a": set()}), FetchError, "['a']"),
    "run(handle of another program)": (
        lambda d: session()[0].run(program()[1]), FetchError, "belongs to program"),
    "run(feed of an unknown name)": (
        lambda d: run_train(lambda p, x: {"zz": 1}), FeedError, "'zz'"),
    "run(feed of state)": (
        lambda d: run_train(lambda p, x: {p.states["w"]: 1}), FeedError, "state"),
    "run(required input not fed)": (lambda d: run_train(lambda p, x: None), FeedError, "must be fed"),
    "run(step_fn with a wrong signature)": (
        lambda d: looprt.MonitoredSession(creator()).run_step_fn(lambda a, b: None),
        looprt.errors.StepFnSignatureError, "step_context"),
    # -- gaps: malformed arguments accepted, or failing later with an unrelated error --------
    "Program(backend=3)": pytest.param(
        lambda d: looprt.Program(backend=3), TypeError, "backend",),
    "Program(name=None)": pytest.param(
        lambda d: looprt.Program(name=None), TypeError, "name"),
    "Program.step(outputs='loss')": pytest.param(
        lambda d: program()[0].step(lambda w: None, outputs="loss", name="s2"), TypeError, "outputs",),
    "wrap(inputs=3)": pytest.param(
        lambda d: looprt.wrap(lambda a: None, inputs=3), TypeError, "inputs",),
    "wrap(state=[1])": pytest.param(
        lambda d: looprt.wrap(lambda a: None, state=[1]), TypeError, "state",),
    "run(feed_dict=[1])": pytest.param(
        lambda d: run_train(lambda p, x: [1]), TypeError, "feed_dict",),
    "run(options=3)": pytest.param(
        lambda d: run_train(lambda p, x: {x: 1}, options=3), TypeError, "options"),
    "MonitoredSession(session_creator=3)": pytest.param(
        lambda d: looprt.MonitoredSession(3), TypeError, "session_creator",),
    "MonitoredSession(hooks=[3])": pytest.param(
        lambda d: looprt.MonitoredSession(creator(), hooks=[3]), TypeError, "hook",),
    "MonitoredSession(stop_grace_period_secs=nan)": pytest.param(
        lambda d: looprt.MonitoredSession(creator(), stop_grace_period_secs=math.nan), ValueError, "grace",),
    "ChiefSessionCreator(scaffold=3)": pytest.param(
        lambda d: looprt.ChiefSessionCreator(3), TypeError, "scaffold",),
    "WorkerSessionCreator(max_wait_secs=-1)": pytest.param(
        lambda d: looprt.WorkerSessionCreator(max_wait_secs=-1), ValueError, "max_wait_secs",),
    "Scaffold(program=3)": pytest.param(
        lambda d: looprt.Scaffold(program=3), TypeError, "program",),
    "MonitoredTrainingSession(save_checkpoint_steps='a')": pytest.param(
        lambda d: looprt.MonitoredTrainingSession(
            checkpoint_dir=str(d), save_checkpoint_steps="a", scaffold=looprt.Scaffold(program=program()[0])),
        ValueError, "save_checkpoint_steps",),
    "StopAtStepHook(num_steps=-1)": pytest.param(
        lambda d: looprt.StopAtStepHook(num_steps=-1), ValueError, "num_steps"),
    "StopAtStepHook(num_steps='a')": pytest.param(
        lambda d: looprt.StopAtStepHook(num_steps="a"), TypeError, "num_steps"),
    "SecondOrStepTimer(every_steps=-1)": pytest.param(
        lambda d: looprt.SecondOrStepTimer(every_steps=-1), ValueError, "every_steps"),
    "StepCounterHook(every_n_steps=0)": pytest.param(
        lambda d: looprt.StepCounterHook(every_n_steps=0, output_dir=str(d)), ValueError, "every_n_steps",),
    "GlobalStepWaiterHook(wait_until_step='a')": pytest.param(
        lambda d: looprt.GlobalStepWaiterHook("a"), TypeError, "wait_until_step"),
    "FeedFnHook(3)": pytest.param(
        lambda d: looprt.FeedFnHook(3), TypeError, "feed_fn",),
    "ProgressBarHook(total=-1)": pytest.param(
        lambda d: looprt.ProgressBarHook(total=-1), ValueError, "total"),
    "Coordinator.register_thread(3)": pytest.param(
        lambda d: looprt.Coordinator().register_thread(3), TypeError, "thread",),
    "Coordinator(clean_stop_exception_types=3)": pytest.param(
        lambda d: looprt.Coordinator(clean_stop_exception_types=3), TypeError, "clean_stop_exception_types",),
    "Coordinator.request_stop(garbage)": pytest.param(
        lambda d: looprt.Coordinator().request_stop(3), TypeError, "exception",),
    "SummaryWriter(None)": pytest.param(
        lambda d: looprt.SummaryWriter(None), TypeError, "logdir",),
}


def _rows() -> list[Any]:
    rows = []
    for name, row in BAD_INPUTS.items():
        if hasattr(row, "marks"):  # a pytest.param (itself a tuple)
            rows.append(pytest.param(*row.values, marks=row.marks, id=name))
        else:
            rows.append(pytest.param(*row, id=name))
    return rows


@pytest.mark.parametrize(("call", "error", "words"), _rows())
def test_a_malformed_argument_gets_a_specific_error(
    tmp_path: Path, call: Callable[[Path], Any], error: type[BaseException], words: str
) -> None:
    with pytest.raises(error) as info:
        call(tmp_path)
    assert words in str(info.value)
    assert type(info.value).__module__.startswith(("looprt", "builtins")), type(info.value)


def test_the_table_covers_every_public_entry_point_of_the_reliability_work() -> None:
    covered = " ".join(BAD_INPUTS)
    for name in ("Saver", "Saver.save", "Saver.save_async", "Saver.restore", "latest_checkpoint",
                 "CheckpointManager", "CheckpointManager.save", "CheckpointManager.save_async",
                 "CheckpointSaverHook", "PreemptionHook", "MonitoredSession(max_recoveries",
                 "MonitoredSession(recovery_backoff_secs", "MonitoredTrainingSession"):
        assert name in covered, name


# -- the merge engine under random malformed fetches --------------------------------------


class HashRaisesTypeError:
    def __hash__(self) -> int:
        raise TypeError("unhashable by design")


@dataclasses.dataclass(frozen=True)
class Opaque:
    """A hashable object that is no handle and no name."""

    tag: int


BAD_LEAVES = st.one_of(
    st.sampled_from(["w", "x", "train", "train/loss", "global_step"]),  # real names, some fine
    st.text(max_size=6),  # mostly unknown names
    st.builds(set, st.lists(st.integers(), max_size=2)),  # unhashable
    st.builds(bytearray, st.binary(max_size=3)),  # unhashable
    st.builds(np.zeros, st.integers(0, 3)),  # unhashable arrays
    st.just(HashRaisesTypeError()),
    st.none(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=3),
    st.builds(Opaque, st.integers()),
    st.just(slice(1, 2)),
    st.just(Ellipsis),
    st.builds(frozenset, st.lists(st.integers(), max_size=2)),
    st.just(looprt.Program(name="other").global_step),  # a handle of another program
)
MALFORMED = strategies.structures(leaves=BAD_LEAVES, depth=4)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MALFORMED)
def test_the_merge_engine_raises_only_fetch_errors(structure: Any) -> None:
    try:
        plan = PlanCache().plan(structure)
    except FetchError as e:
        assert "fetch" in str(e)
        return
    assert type(plan.rebuild(list(plan.leaves))) is type(structure)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MALFORMED, MALFORMED)
def test_a_session_with_hooks_raises_only_fetch_errors(fetches: Any, hook_fetches: Any) -> None:
    prog, train, x = program()

    class Asks(looprt.SessionRunHook):
        def before_run(self, run_context: Any) -> Any:
            return looprt.SessionRunArgs(hook_fetches)

    with looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=[Asks()]) as sess:
        try:
            sess.run(fetches, feed_dict={x: 1.0})
        except FetchError as e:
            assert "fetch" in str(e)


# Structural malformations the merge engine does not turn into FetchError yet.
_cycle: list[Any] = []
_cycle.append(_cycle)
_deep: Any = "w"
for _ in range(5000):
    _deep = [_deep]


class HashRaisesValueError:
    def __hash__(self) -> int:
        raise ValueError("no hash")


@dataclasses.dataclass
class Pair:
    a: Any
    b: Any


_broken_pair = Pair("w", "w")
del _broken_pair.a


@pytest.mark.parametrize(
    "structure",
    [
        pytest.param(_cycle, id="a list containing itself"),
        pytest.param(_deep, id="5000 levels deep"),
        pytest.param([HashRaisesValueError()], id="a leaf whose hash raises ValueError"),
        pytest.param(_broken_pair, id="a dataclass missing a field"),
    ],
)
def test_structural_malformations_get_a_fetch_error(structure: Any) -> None:
    sess, _, _ = session()
    with pytest.raises(FetchError):
        sess.run(structure)


def test_a_well_formed_structure_of_the_same_kinds_runs() -> None:
    sess, _, _ = session()
    result = sess.run(collections.OrderedDict(a="w", b=[Pair("global_step", "w"), ("w",)]))
    assert list(result) == ["a", "b"] and result["b"][0].a == 0


def test_numpy_numbers_are_well_formed_arguments(tmp_path: Path) -> None:
    # What a config file or an argument parser built with NumPy hands over.
    looprt.CheckpointSaverHook(str(tmp_path), save_steps=np.int64(2))
    looprt.CheckpointSaverHook(str(tmp_path), save_secs=np.float32(1.5))
    PreemptionHook(grace_secs=np.float64(5.0))
    manager = CheckpointManager(str(tmp_path), max_to_keep=np.int32(1), keep_checkpoint_every_n_hours=np.float32(2))
    backend = looprt.Program().backend
    for step in (np.int64(1), np.int64(2)):
        manager.save({"global_step": step, "w": np.zeros(2)}, step, backend.save_payload)
    assert manager.latest_checkpoint() == str(tmp_path / "model.ckpt-2")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json", "model.ckpt-2"]
    looprt.MonitoredSession(creator(), max_recoveries=np.int64(3), recovery_backoff_secs=np.float32(0.5)).close()
