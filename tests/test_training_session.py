"""``MonitoredTrainingSession``: TF's defaults and default hooks, in TF's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt


def program() -> tuple[looprt.Program, looprt.Step]:
    prog = looprt.Program(name="mts")
    prog.state("w", np.zeros(()))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        w += 1
        return {"loss": float(w)}

    prog.summary("loss", train.loss)
    return prog, train


def hook_types(sess: Any) -> list[str]:
    return [type(h).__name__ for h in sess._hooks]


def test_chief_gets_tf_default_hooks_in_tf_order(tmp_path: Path) -> None:
    prog, train = program()
    mine, chief_only = looprt.StopAtStepHook(last_step=3), looprt.FeedFnHook(dict)
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path),
        scaffold=looprt.Scaffold(program=prog),
        hooks=[mine],
        chief_only_hooks=[chief_only],
    ) as sess:
        assert hook_types(sess) == [
            "FeedFnHook",
            "StepCounterHook",
            "SummarySaverHook",
            "CheckpointSaverHook",
            "StopAtStepHook",
        ]
        while not sess.should_stop():
            sess.run(train)
    # checkpoints default to every 600 s: one at creation and one at the end
    assert looprt.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-3")


def test_defaults_follow_tf(tmp_path: Path) -> None:
    prog, _ = program()
    sess = looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog)
    )
    summary = next(h for h in sess._hooks if isinstance(h, looprt.SummarySaverHook))
    saver = next(h for h in sess._hooks if isinstance(h, looprt.CheckpointSaverHook))
    assert summary._timer._every_steps == 100 and summary._timer._every_secs is None
    assert saver._timer._every_secs == 600 and saver._timer._every_steps is None
    sess.close()

    prog, _ = program()
    sess = looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path / "b"),
        scaffold=looprt.Scaffold(program=prog),
        save_checkpoint_steps=5,
        save_summaries_secs=30,
        log_step_count_steps=None,
    )
    assert hook_types(sess) == ["SummarySaverHook", "CheckpointSaverHook"]
    summary = next(h for h in sess._hooks if isinstance(h, looprt.SummarySaverHook))
    saver = next(h for h in sess._hooks if isinstance(h, looprt.CheckpointSaverHook))
    assert summary._timer._every_secs == 30 and saver._timer._every_steps == 5
    sess.close()


def test_no_directories_means_no_default_hooks() -> None:
    prog, train = program()
    with looprt.MonitoredTrainingSession(scaffold=looprt.Scaffold(program=prog)) as sess:
        assert hook_types(sess) == []
        assert sess.run(train.loss) == 1.0


def test_a_program_passed_as_the_scaffold_is_a_type_error_naming_the_fix() -> None:
    prog, _ = program()
    with pytest.raises(TypeError, match=r"must be a Scaffold, got Program \(write scaffold=looprt"):
        looprt.MonitoredTrainingSession(scaffold=prog)  # type: ignore[arg-type]


def test_worker_gets_only_its_hooks_and_waits_for_the_chief(tmp_path: Path) -> None:
    prog, train = program()
    scaffold = looprt.Scaffold(program=prog)
    with pytest.raises(looprt.DeadlineExceededError):
        looprt.MonitoredTrainingSession(is_chief=False, scaffold=scaffold, max_wait_secs=0.01)
    with looprt.MonitoredTrainingSession(checkpoint_dir=str(tmp_path), scaffold=scaffold) as chief:
        chief.run(train)
        worker = looprt.MonitoredTrainingSession(
            is_chief=False,
            checkpoint_dir=str(tmp_path),
            scaffold=scaffold,
            hooks=[looprt.StopAtStepHook(num_steps=1)],
            chief_only_hooks=[looprt.FeedFnHook(dict)],
        )
        assert hook_types(worker) == ["StopAtStepHook"]
        assert worker.run(train.loss) == 2.0
        worker.close()


def test_resumes_from_checkpoint_dir(tmp_path: Path) -> None:
    prog, train = program()
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path),
        scaffold=looprt.Scaffold(program=prog),
        hooks=[looprt.StopAtStepHook(last_step=4)],
    ) as sess:
        while not sess.should_stop():
            sess.run(train)
    prog, train = program()
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog)
    ) as sess:
        assert sess.run({"loss": train.loss, "step": prog.global_step}) == {"loss": 5.0, "step": 4}
