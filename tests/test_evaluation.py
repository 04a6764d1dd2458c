"""Evaluation on NumPy programs: the checkpoint iterator, evaluate_once / evaluate_repeatedly, metrics.

Checkpoints are real ones, written by ``MonitoredTrainingSession``; the
iterator's clock and sleep are injected, so no test waits; summaries are read
back with TensorBoard's own ``EventAccumulator``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import looprt
from looprt.checkpoint import CheckpointWarning
from looprt.evaluation import (
    CheckpointWatcher,
    checkpoints_iterator,
    evaluate_once,
    evaluations,
    wait_for_new_checkpoint,
)
from looprt.metrics import Accuracy, Mean, Reduce, Sum

BATCHES = [np.full(3, float(i)) for i in range(5)]


def make_program() -> tuple[looprt.Program, looprt.Step, looprt.Step]:
    """w grows by 1 per training step; the evaluation step scores 5 batches against w."""
    prog = looprt.Program(backend="numpy", name="toy")
    w = prog.state("w", np.zeros(3))
    prog.input("batch", iterable=BATCHES)

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w.sum())}

    @prog.step(outputs=("score", "labels", "logits"), advance_global_step=False)
    def evaluate(batch: np.ndarray, w: np.ndarray) -> dict[str, Any]:
        labels = (batch > 1.5).astype(int)
        logits = np.stack([np.full(3, 2.0), w], axis=1)  # class 1 once w > 2
        return {"score": float(batch @ w), "labels": labels, "logits": logits}

    prog.summary("loss", train.loss)
    assert w.program is prog
    return prog, train, evaluate


def train_to(directory: Path, last_step: int, every: int = 2) -> None:
    prog, train, _ = make_program()
    with looprt.MonitoredTrainingSession(
        scaffold=looprt.Scaffold(program=prog),
        checkpoint_dir=str(directory),
        save_checkpoint_steps=every,
        save_summaries_steps=1,
        hooks=[looprt.StopAtStepHook(last_step=last_step)],
    ) as sess:
        while not sess.should_stop():
            sess.run(train)


def plain_evaluation(step: int) -> dict[str, float]:
    """What the evaluation computes, in plain Python, for the state of checkpoint ``step``."""
    w = np.full(3, float(step))
    scores = [float(b @ w) for b in BATCHES]
    labels = np.concatenate([(b > 1.5).astype(int) for b in BATCHES])
    predicted = np.concatenate([np.full(3, int(step > 2)) for _ in BATCHES])
    return {"score": sum(scores) / len(scores), "accuracy": float((labels == predicted).mean())}


class FakeClock:
    """A clock that moves only when the iterator sleeps; ``on_sleep`` may change the directory."""

    def __init__(self, on_sleep: Callable[[float], None] = lambda now: None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(self.now)


def steps_of(paths: list[str]) -> list[int]:
    return [int(p.rpartition("-")[2]) for p in paths]


# -- checkpoints_iterator ----------------------------------------------------------------------------


def test_iterator_yields_every_committed_checkpoint_once_in_order(tmp_path: Path) -> None:
    train_to(tmp_path, 6)
    clock = FakeClock()
    paths = list(checkpoints_iterator(str(tmp_path), timeout=5, clock=clock, sleep=clock.sleep))
    assert steps_of(paths) == [0, 2, 4, 6]
    assert all(os.path.isdir(p) for p in paths)
    assert clock.sleeps == [1, 1, 1, 1, 1]  # polled once a second until the timeout


def test_iterator_sees_checkpoints_as_they_commit_and_never_a_partial_one(tmp_path: Path) -> None:
    train_to(tmp_path / "source", 8)
    source = sorted((tmp_path / "source").glob("model.ckpt-*"), key=lambda p: int(p.name.rpartition("-")[2]))
    target = tmp_path / "run"
    target.mkdir()
    arrivals = iter(source)

    def commit_next(now: float) -> None:
        folder = next(arrivals, None)
        if folder is None:
            return
        # A save in progress: the folder is in view without its manifest; then it commits.
        partial = target / folder.name
        shutil.copytree(folder, partial, ignore=shutil.ignore_patterns("manifest.json"))
        probe = CheckpointWatcher(str(target))
        probe.last_step = int(folder.name.rpartition("-")[2]) - 1
        assert probe.poll() is None  # not yet committed: not in view
        shutil.copy(folder / "manifest.json", partial / "manifest.json")

    clock = FakeClock(commit_next)
    seen = []
    for path in checkpoints_iterator(str(target), timeout=3, clock=clock, sleep=clock.sleep):
        assert looprt.checkpoint.verify_checkpoint(path) is None
        seen.append(path)
    assert steps_of(seen) == [0, 2, 4, 6, 8]


def test_a_folder_without_manifest_is_waited_for_silently(tmp_path: Path) -> None:
    train_to(tmp_path, 2)
    (tmp_path / "model.ckpt-2" / "manifest.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert steps_of(list(checkpoints_iterator(str(tmp_path), timeout=0))) == [0]


def test_a_damaged_checkpoint_is_skipped_with_one_warning(tmp_path: Path) -> None:
    train_to(tmp_path, 4)
    payload = next(p for p in (tmp_path / "model.ckpt-2").iterdir() if p.name != "manifest.json")
    payload.write_bytes(b"\0" * payload.stat().st_size)
    clock = FakeClock()
    with pytest.warns(CheckpointWarning, match=r"model.ckpt-2.*fails its crc32c check") as caught:
        paths = list(checkpoints_iterator(str(tmp_path), timeout=3, clock=clock, sleep=clock.sleep))
    assert steps_of(paths) == [0, 4]
    assert len([w for w in caught if "model.ckpt-2" in str(w.message)]) == 1


def test_timeout_fn_keeps_waiting_and_a_last_look_catches_the_final_checkpoint(tmp_path: Path) -> None:
    train_to(tmp_path / "source", 4)
    target = tmp_path / "run"
    target.mkdir()
    shutil.copytree(tmp_path / "source" / "model.ckpt-0", target / "model.ckpt-0")
    calls: list[float] = []

    def timeout_fn() -> bool:
        calls.append(clock.now)
        if len(calls) == 2:
            # The trainer commits its last checkpoint, then writes its marker: done.
            shutil.copytree(tmp_path / "source" / "model.ckpt-4", target / "model.ckpt-4")
            return True
        return False

    clock = FakeClock()
    paths = list(
        checkpoints_iterator(str(target), timeout=2, timeout_fn=timeout_fn, clock=clock, sleep=clock.sleep)
    )
    assert steps_of(paths) == [0, 4]
    assert len(calls) == 2


def test_latest_only_is_tfs_behaviour_and_min_interval_spaces_the_yields(tmp_path: Path) -> None:
    train_to(tmp_path, 6)
    clock = FakeClock()
    assert steps_of(list(checkpoints_iterator(str(tmp_path), timeout=0, latest_only=True))) == [6]
    paths = []
    for path in checkpoints_iterator(str(tmp_path), min_interval_secs=10, timeout=0, clock=clock, sleep=clock.sleep):
        paths.append(path)
        clock.now += 3  # the evaluation's own time counts towards the interval
    assert steps_of(paths) == [0, 2, 4, 6]
    assert clock.sleeps == [7, 7, 7, 7]


def test_a_missing_directory_times_out(tmp_path: Path) -> None:
    clock = FakeClock()
    assert list(checkpoints_iterator(str(tmp_path / "nowhere"), timeout=2, clock=clock, sleep=clock.sleep)) == []
    assert clock.now == 2


def test_wait_for_new_checkpoint(tmp_path: Path) -> None:
    train_to(tmp_path, 4)
    assert wait_for_new_checkpoint(str(tmp_path), timeout=0) == str(tmp_path / "model.ckpt-4")
    assert wait_for_new_checkpoint(str(tmp_path), str(tmp_path / "model.ckpt-4"), timeout=0) is None


# -- evaluate_once / evaluate_repeatedly ------------------------------------------------------------


@pytest.mark.parametrize("step", [0, 2, 4])
def test_evaluate_once_equals_a_plain_evaluation_of_the_restored_state(tmp_path: Path, step: int) -> None:
    train_to(tmp_path, 4)
    prog, _, evaluate = make_program()
    values = evaluate_once(
        str(tmp_path / f"model.ckpt-{step}"),
        eval_ops=evaluate,
        metrics={"score": Mean(evaluate.score), "accuracy": Accuracy(evaluate.labels, evaluate.logits)},
        final_ops={"w": "w", "global_step": prog.global_step},
    )
    expected = plain_evaluation(step)
    assert values["score"] == pytest.approx(expected["score"])
    assert values["accuracy"] == pytest.approx(expected["accuracy"])
    np.testing.assert_array_equal(values["w"], np.full(3, float(step)))
    assert values["global_step"] == step  # restored, never advanced
    assert sorted(p.name for p in tmp_path.glob("model.ckpt-*")) == ["model.ckpt-0", "model.ckpt-2", "model.ckpt-4"]


def test_tf_signature_without_metrics_returns_the_final_ops(tmp_path: Path) -> None:
    train_to(tmp_path, 2)
    prog, _, evaluate = make_program()
    values = evaluate_once(
        str(tmp_path / "model.ckpt-2"), "", looprt.Scaffold(program=prog), evaluate, None, {"w": "w"}
    )
    np.testing.assert_array_equal(values["w"], np.full(3, 2.0))
    assert not (tmp_path / "eval").exists()  # no metrics: nothing to write


def test_stop_after_n_evals_and_the_input_restarts_each_pass(tmp_path: Path) -> None:
    train_to(tmp_path, 4)
    _, _, evaluate = make_program()
    stop = looprt.StopAfterNEvalsHook(2)
    results = dict(
        evaluations(
            str(tmp_path), eval_ops=evaluate, metrics={"score": Mean(evaluate.score)}, hooks=[stop],
            eval_interval_secs=0, timeout=0,
        )
    )
    # Each pass sees the first two batches (0 and 1), whatever the previous pass read.
    assert {int(p.rpartition("-")[2]): v["score"] for p, v in results.items()} == {
        0: 0.0, 2: pytest.approx(3 * 2 * 0.5), 4: pytest.approx(3 * 4 * 0.5)
    }
    assert stop.evals_completed == 2


def test_evaluate_repeatedly_returns_the_last_values_and_honours_max_evaluations(tmp_path: Path) -> None:
    train_to(tmp_path, 4)
    _, _, evaluate = make_program()
    metrics = {"score": Mean(evaluate.score)}
    last = looprt.evaluate_repeatedly(str(tmp_path), metrics=metrics, eval_interval_secs=0, timeout=0)
    assert last == {"score": pytest.approx(plain_evaluation(4)["score"])}
    first = looprt.evaluate_repeatedly(
        str(tmp_path), metrics=metrics, eval_interval_secs=0, timeout=0, max_number_of_evaluations=1,
        summary_dir=None,
    )
    assert first == {"score": 0.0}


def test_a_training_step_is_refused(tmp_path: Path) -> None:
    train_to(tmp_path, 2)
    _, train, _ = make_program()
    with pytest.raises(ValueError, match="step 'train', which advances the global step"):
        evaluate_once(str(tmp_path / "model.ckpt-2"), metrics={"loss": Mean(train.loss)})


def test_a_one_shot_input_cannot_be_evaluated_twice(tmp_path: Path) -> None:
    train_to(tmp_path, 2)
    prog = looprt.Program(backend="numpy", name="toy")
    prog.state("w", np.zeros(3))
    prog.input("batch", iterable=iter(BATCHES))

    @prog.step(outputs=("score",), advance_global_step=False)
    def evaluate(batch: np.ndarray, w: np.ndarray) -> dict[str, float]:
        return {"score": float(batch @ w)}

    with pytest.raises(ValueError, match="one-shot iterator"):
        looprt.evaluate_repeatedly(str(tmp_path), metrics={"s": Mean(evaluate.score)}, eval_interval_secs=0, timeout=0)


def test_train_and_eval_summaries_read_back_with_tensorboard(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    train_to(tmp_path, 4)
    _, _, evaluate = make_program()
    looprt.evaluate_repeatedly(
        str(tmp_path), metrics={"score": Mean(evaluate.score), "accuracy": Accuracy(evaluate.labels, evaluate.logits)},
        eval_interval_secs=0, timeout=0,
    )
    looprt.SummaryWriterCache.flush_all()
    train_events = event_accumulator.EventAccumulator(str(tmp_path))
    train_events.Reload()
    assert [e.step for e in train_events.Scalars("loss")] == [1, 2, 3, 4]
    eval_events = event_accumulator.EventAccumulator(str(tmp_path / "eval"))
    eval_events.Reload()
    assert sorted(eval_events.Tags()["scalars"]) == ["accuracy", "score"]
    for tag in ("score", "accuracy"):
        got = {e.step: e.value for e in eval_events.Scalars(tag)}
        assert got == {s: pytest.approx(plain_evaluation(s)[tag]) for s in (0, 2, 4)}


def test_summary_at_end_hook_needs_a_destination() -> None:
    with pytest.raises(ValueError, match="log_dir or summary_writer"):
        looprt.SummaryAtEndHook()


# -- metrics --------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=5), min_size=1, max_size=6),
    st.data(),
)
def test_streaming_mean_and_sum_equal_the_whole_pass(batches: list[list[float]], data: Any) -> None:
    weights = [data.draw(st.lists(st.floats(0.1, 10), min_size=len(b), max_size=len(b))) for b in batches]
    mean, weighted, total = Mean(), Mean(), Sum()
    for batch, w in zip(batches, weights):
        mean.update_state(np.array(batch))
        weighted.update_state(batch, weights=w)
        total.update_state(batch)
    flat, flat_w = np.concatenate(batches), np.concatenate(weights)
    assert mean.result() == pytest.approx(flat.mean(), abs=1e-9)
    assert weighted.result() == pytest.approx(np.average(flat, weights=flat_w), abs=1e-9)
    assert total.result() == pytest.approx(flat.sum(), abs=1e-6)


def test_metrics_reset_and_check_their_inputs() -> None:
    accuracy = Accuracy()
    accuracy.update_state([1, 2], [1, 0])
    assert accuracy.result() == 0.5
    accuracy.reset_state()
    assert accuracy.result() == 0.0
    with pytest.raises(ValueError, match="do not match labels"):
        accuracy.update_state([1, 2], [1, 0, 3])
    with pytest.raises(ValueError, match="do not broadcast"):
        Mean().update_state([1.0, 2.0], weights=[1.0, 2.0, 3.0])
    peak = Reduce(np.maximum, initial=np.full(2, -np.inf))
    peak.update_state([1.0, 4.0])
    peak.update_state([3.0, 2.0])
    np.testing.assert_array_equal(peak.result(), [3.0, 4.0])
    with pytest.raises(ValueError, match="fetches nothing"):
        looprt.MetricsHook({"m": Mean()})
