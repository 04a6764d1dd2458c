"""ProfilerHook: TF's trigger steps, each backend's profiler, and the profiler protocol."""

from __future__ import annotations

import functools
import json
import logging
import os
import pstats
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.backends.numpy import NumpyBackend
from looprt.hooks import profiler as profiler_module
from looprt.hooks.profiler import (
    CProfileProfiler,
    ProfilerHook,
    TensorFlowTimelineProfiler,
    TorchProfiler,
    profiler_for,
    register_profiler,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingProfiler:
    """A profiler that logs what the hook does with it."""

    kind = "trace"
    filename = "trace-{}.txt"

    def __init__(self, log: list[Any], show_dataflow: bool = True, show_memory: bool = False) -> None:
        self.log = log
        log.append(("new", show_dataflow, show_memory))

    def __enter__(self) -> RecordingProfiler:
        self.log.append("enter")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.log.append("exit")

    def save(self, path: str, step: int, run_metadata: Any) -> None:
        self.log.append(("save", os.path.basename(path), step, type(step)))
        Path(path).write_text("trace")


def make_program(backend: Any = "numpy") -> tuple[looprt.Program, Any]:
    prog = looprt.Program(backend=backend, name="p")
    prog.state("w", np.zeros(()))

    @prog.step(outputs=("loss",))
    def train(w: Any) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w)}

    return prog, train


class RecordingCreator:
    """Plain sessions of ``prog`` that record the trace level of every raw run."""

    def __init__(self, prog: looprt.Program, fail_runs: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.prog, self.fail_runs = prog, fail_runs
        self.trace_levels: list[int] = []

    def create_session(self) -> Any:
        creator = self

        class Session(looprt.ProgramSession):
            def run(
                self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None
            ) -> Any:
                creator.trace_levels.append(getattr(options, "trace_level", 0))
                if len(creator.trace_levels) in creator.fail_runs:
                    raise looprt.AbortedError("peer lost")
                return super().run(fetches, feed_dict, options, run_metadata)

        return Session(self.prog)


def monitored(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def steps_of(directory: Path, pattern: str) -> list[int]:
    return sorted(int(m.group(1)) for name in os.listdir(directory) if (m := re.fullmatch(pattern, name)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "Either every_secs or every_steps should be provided."),
        ({"save_steps": 1, "save_secs": 1}, "Can not provide both every_secs and every_steps."),
    ],
)
def test_argument_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as error:
        ProfilerHook(**kwargs)
    assert str(error.value) == message


def test_numpy_programs_get_cprofile_files_at_tf_steps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="looprt")
    prog, train = make_program()
    out = tmp_path / "profiles"
    creator = RecordingCreator(prog)
    with looprt.MonitoredSession(creator, hooks=[ProfilerHook(save_steps=2, output_dir=str(out))]) as sess:
        for _ in range(7):
            sess.run(train)
    assert steps_of(out, r"profile_(\d+)\.prof") == [2, 4, 6]
    # Traced runs: the 2nd, 4th, 6th; the extra reads of the global step after them are not traced.
    assert creator.trace_levels == [0, 3, 0, 0, 3, 0, 0, 3, 0, 0]
    stats = pstats.Stats(str(out / "profile_4.prof"))
    functions = {name for (_, _, name) in stats.stats}  # type: ignore[attr-defined]
    assert "train" in functions
    messages = [r.getMessage() for r in caplog.records if r.module == "profiler"]
    assert messages == [f"Saving profile for {s} into '{out / f'profile_{s}.prof'}'." for s in (2, 4, 6)]


def test_save_secs_uses_the_clock(tmp_path: Path) -> None:
    prog, train = make_program()
    clock = Clock()
    log: list[Any] = []
    factory = functools.partial(RecordingProfiler, log)
    hook = ProfilerHook(save_secs=10, output_dir=str(tmp_path), clock=clock, profiler=factory)
    with monitored(prog, [hook]) as sess:
        for tick in [4, 4, 4, 20, 1, 1, 9, 0]:
            sess.run(train)
            clock.now += tick
    # Run 1 starts the timer at t=1000; then runs 4 (t=1012), 5 (t=1032) and 8 (t=1043) are due.
    assert steps_of(tmp_path, r"trace-(\d+)\.txt") == [4, 5, 8]


def test_the_protocol_calls(tmp_path: Path) -> None:
    prog, train = make_program()
    log: list[Any] = []
    factory = functools.partial(RecordingProfiler, log)
    hook = ProfilerHook(
        save_steps=3, output_dir=str(tmp_path), show_dataflow=False, show_memory=True, profiler=factory
    )
    with monitored(prog, [hook]) as sess:
        for _ in range(4):
            sess.run(train)
    assert log == [("new", False, True), "enter", "exit", ("save", "trace-3.txt", 3, int)]


def test_a_failed_profiled_run_is_discarded(tmp_path: Path) -> None:
    prog, train = make_program()
    log: list[Any] = []
    creator = RecordingCreator(prog, fail_runs={2})
    hook = ProfilerHook(
        save_steps=1, output_dir=str(tmp_path), profiler=functools.partial(RecordingProfiler, log)
    )
    with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
        sess.run(train)
        sess.run(train)  # the traced raw run fails, the session recovers, the run is retried
    assert log[:3] == [("new", True, False), "enter", "exit"]
    assert log[3:] == [("new", True, False), "enter", "exit", ("save", "trace-2.txt", 2, int)]


def test_end_stops_a_profile_left_running(tmp_path: Path) -> None:
    log: list[Any] = []
    hook = ProfilerHook(save_steps=1, profiler=functools.partial(RecordingProfiler, log))
    prog, train = make_program()
    sess = monitored(prog, [hook])
    sess.run(train)
    hook.before_run(looprt.SessionRunContext(looprt.SessionRunArgs(train), None))
    assert log[-1] == "enter"
    sess.close()
    assert log[-1] == "exit"


def test_profiler_choice(tmp_path: Path) -> None:
    class TorchNamed(NumpyBackend):
        name = "torch"

    class Unknown(NumpyBackend):
        name = "not-registered"

    log: list[Any] = []

    class Own(NumpyBackend):
        name = "own"

        def profiler(self, show_dataflow: bool = True, show_memory: bool = False) -> RecordingProfiler:
            return RecordingProfiler(log, show_dataflow, show_memory)

    assert profiler_for(make_program()[0]) is CProfileProfiler
    assert profiler_for(make_program(TorchNamed())[0]) is TorchProfiler
    assert profiler_for(make_program(Unknown())[0]) is CProfileProfiler
    assert profiler_for(None) is CProfileProfiler
    assert profiler_for(make_program(Own())[0]).__name__ == "profiler"

    class Registered(NumpyBackend):
        name = "registered-for-test"

    factory = functools.partial(RecordingProfiler, log)
    register_profiler("registered-for-test", factory)
    try:
        assert profiler_for(make_program(Registered())[0]) is factory
    finally:
        del profiler_module._factories["registered-for-test"]

    prog, train = make_program(Own())
    with monitored(prog, [ProfilerHook(save_steps=1, output_dir=str(tmp_path))]) as sess:
        sess.run(train)
        sess.run(train)
    assert log[-1] == ("save", "trace-2.txt", 2, int)


def test_output_dir_is_created_and_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    prog, train = make_program()
    with monitored(prog, [ProfilerHook(save_steps=1)]) as sess:
        sess.run(train)
        sess.run(train)
    assert steps_of(tmp_path, r"profile_(\d+)\.prof") == [2]


@pytest.mark.torch
def test_torch_profiler_writes_a_chrome_trace(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class TorchNamed(NumpyBackend):
        name = "torch"

    prog = looprt.Program(backend=TorchNamed(), name="t")

    @prog.step(outputs=("loss",))
    def train() -> dict[str, float]:
        return {"loss": float((torch.ones(8, 8) @ torch.ones(8, 8)).sum())}

    with monitored(prog, [ProfilerHook(save_steps=2, output_dir=str(tmp_path))]) as sess:
        for _ in range(3):
            sess.run(train)
    assert os.listdir(tmp_path) == ["timeline-2.json"]
    events = json.loads((tmp_path / "timeline-2.json").read_text())["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events)


@pytest.mark.tensorflow
@pytest.mark.parametrize("kwargs", [{"save_steps": 3}, {"save_steps": 1}, {"save_secs": 10}])
def test_trigger_steps_match_tensorflow(
    kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.training import basic_session_run_hooks

    clock = Clock()

    class FakeTime:
        time = clock

    monkeypatch.setattr(basic_session_run_hooks, "time", FakeTime)
    ticks = [4, 4, 4, 20, 1, 1, 9, 0, 3]
    with tf.Graph().as_default():
        from tensorflow.python.training import training_util

        gs = tf.compat.v1.train.get_or_create_global_step()
        # The hook's read of the global step must happen before the increment, or TF
        # races the two inside one run (looprt reads state before steps by design).
        with tf.control_dependencies([training_util._get_or_create_global_step_read()]):
            train_op = tf.compat.v1.assign_add(gs, 1)
        hook = tf.compat.v1.train.ProfilerHook(output_dir=str(tmp_path / "tf"), **kwargs)
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            for tick in ticks:
                sess.run(train_op)
                clock.now += tick
    tf_steps = steps_of(tmp_path / "tf", r"timeline-(\d+)\.json")

    clock.now = 1000.0
    prog, train = make_program()
    with monitored(prog, [ProfilerHook(output_dir=str(tmp_path / "looprt"), clock=clock, **kwargs)]) as sess:
        for tick in ticks:
            sess.run(train)
            clock.now += tick
    assert tf_steps
    assert steps_of(tmp_path / "looprt", r"profile_(\d+)\.prof") == tf_steps


@pytest.mark.tensorflow
def test_tensorflow_graphs_get_tf_timelines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.protobuf import config_pb2

    class TFMonitoredSession(looprt.MonitoredSession):
        """What a TF backend does: pass TF's protos to the TF session."""

        hooked_session_options = {
            "new_options": config_pb2.RunOptions,
            "new_metadata": config_pb2.RunMetadata,
            "share_defaults": False,
        }

    graph = tf.Graph()
    with graph.as_default():
        gs = tf.compat.v1.train.get_or_create_global_step()
        train_op = tf.compat.v1.assign_add(gs, 1)
        init = tf.compat.v1.global_variables_initializer()

        class Creator:
            def create_session(self) -> Any:
                sess = tf.compat.v1.Session(graph=graph)
                sess.run(init)
                return sess

        assert profiler_for(graph) is TensorFlowTimelineProfiler
        with TFMonitoredSession(
            Creator(), hooks=[ProfilerHook(save_steps=2, output_dir=str(tmp_path))]
        ) as sess:
            for _ in range(3):
                sess.run(train_op)
        trace = json.loads((tmp_path / "timeline-2.json").read_text())
        assert trace["traceEvents"]
        assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))

        # looprt's own RunMetadata carries no TF trace: warn, write nothing.
        profiler = TensorFlowTimelineProfiler()
        with profiler:
            pass
        profiler.save(str(tmp_path / "timeline-9.json"), 9, looprt.RunMetadata())
        assert not (tmp_path / "timeline-9.json").exists()
        assert any("No TensorFlow trace for step 9" in r.getMessage() for r in caplog.records)
