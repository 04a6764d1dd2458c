"""ProgressBarHook: a tqdm bar of the global step with the latest metrics."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.hooks.progress import ProgressBarHook
from looprt.hooks.stop_at_step import StopAtStepHook


def make_program() -> tuple[looprt.Program, Any]:
    prog = looprt.Program(name="p")
    prog.state("w", np.zeros(()))

    @prog.step(outputs=("loss",))
    def train(w: Any) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w) / 4}

    return prog, train


class RawCreator:
    """Sessions of ``prog`` without initialization: the global step is kept (a restored run)."""

    def __init__(self, prog: looprt.Program) -> None:
        self.prog = prog

    def create_session(self) -> Any:
        return looprt.ProgramSession(self.prog)


def monitored(prog: looprt.Program, hooks: list[Any]) -> looprt.MonitoredSession:
    return looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=hooks)


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"^invalid every_n_steps=0\.$"):
        ProgressBarHook(every_n_steps=0)
    with pytest.raises(TypeError, match="tensors must be a dict"):
        ProgressBarHook(tensors=["loss"])  # type: ignore[arg-type]


def test_bar_follows_the_global_step_to_total_and_closes() -> None:
    prog, train = make_program()
    out = io.StringIO()
    stop = StopAtStepHook(last_step=5)
    hook = ProgressBarHook(total=5, file=out, disable=False, mininterval=0)
    assert hook.bar is None
    positions: list[int] = []
    with monitored(prog, [stop, hook]) as sess:
        assert hook.bar.n == 0
        while not sess.should_stop():
            sess.run(train)
            positions.append(hook.bar.n)
    assert positions == [1, 2, 3, 4, 5]
    assert hook.bar.total == 5
    text = out.getvalue()
    assert "5/5" in text
    assert "step" in text
    assert hook.bar.disable  # tqdm marks a closed bar disabled


def test_tensors_are_shown_every_n_steps() -> None:
    prog, train = make_program()
    hook = ProgressBarHook(
        every_n_steps=2, tensors={"loss": train.loss, "w": "w"}, file=io.StringIO(), disable=False
    )
    postfixes: list[str] = []
    with monitored(prog, [hook]) as sess:
        for _ in range(5):
            sess.run(train)
            postfixes.append(hook.bar.postfix)
    # Fetched on the runs to steps 1, 3, 5 (w is read before the run's step).
    assert postfixes == [
        "loss=0.25, w=0",
        "loss=0.25, w=0",
        "loss=0.75, w=2",
        "loss=0.75, w=2",
        "loss=1.25, w=4",
    ]


def test_resumes_from_the_global_step_and_ends_on_the_exact_step() -> None:
    prog, train = make_program()
    prog.global_step.value[...] = 10
    out = io.StringIO()
    hook = ProgressBarHook(total=20, file=out, disable=False, desc="training")
    with looprt.MonitoredSession(RawCreator(prog), hooks=[hook]) as sess:
        assert hook.bar.n == 10
        sess.run(train)
        sess.run("w")  # no step ran: the bar predicted 12, the exact step is read in end
        assert hook.bar.n == 12
    assert hook.bar.n == 11
    assert "training" in out.getvalue()
    assert "11/20" in out.getvalue()


def test_disable_none_lets_tqdm_hide_the_bar_off_a_terminal() -> None:
    prog, train = make_program()
    out = io.StringIO()
    hook = ProgressBarHook(file=out, tensors={"loss": train.loss})
    with monitored(prog, [hook]) as sess:
        assert hook.bar.disable
        for _ in range(3):
            sess.run(train)
    assert out.getvalue() == ""


def test_recovery_moves_the_bar_to_the_new_session_step() -> None:
    prog, train = make_program()
    hook = ProgressBarHook(file=io.StringIO(), disable=False)
    sessions: list[Any] = []

    class Creator:
        def create_session(self) -> Any:
            creator = self

            class Session(looprt.ProgramSession):
                def run(self, fetches: Any, *args: Any, **kwargs: Any) -> Any:
                    if len(sessions) == 1 and fetches is not prog.global_step and prog.global_step.value == 3:
                        prog.global_step.value[...] = 1  # the new session restores an older step
                        raise looprt.AbortedError("lost")
                    return super().run(fetches, *args, **kwargs)

            sessions.append(creator)
            return Session(prog)

    seen: list[int] = []

    class AfterCreation(looprt.SessionRunHook):
        def after_create_session(self, session: Any, coord: Any) -> None:
            seen.append(hook.bar.n)

    with looprt.MonitoredSession(Creator(), hooks=[hook, AfterCreation()]) as sess:
        for _ in range(4):
            sess.run(train)
    assert len(sessions) == 2
    assert seen == [0, 1]
    assert hook.bar.n == prog.global_step.value == 2


def test_tqdm_is_imported_lazily() -> None:
    code = "import sys, looprt.hooks.progress; assert 'tqdm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_session_without_global_step_is_an_error() -> None:
    class NoStepSession:
        graph = None

        def run(self, *args: Any, **kwargs: Any) -> Any:
            return None

        def close(self) -> None:
            pass

    class Creator:
        def create_session(self) -> Any:
            return NoStepSession()

    with pytest.raises(RuntimeError, match=r"^Global step should be created to use ProgressBarHook\.$"):
        looprt.MonitoredSession(Creator(), hooks=[ProgressBarHook()])


def test_a_hook_used_again_gets_a_new_bar() -> None:
    prog, train = make_program()
    hook = ProgressBarHook(file=io.StringIO(), disable=False)
    bars = []
    for _ in range(2):
        with looprt.MonitoredSession(RawCreator(prog), hooks=[hook]) as sess:
            sess.run(train)
        bars.append(hook.bar)
    assert bars[0] is not bars[1]
    assert [bar.n for bar in bars] == [1, 2]
