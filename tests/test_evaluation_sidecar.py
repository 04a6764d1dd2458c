"""A real trainer and a real evaluator, two processes at once over one checkpoint directory.

The trainer saves a checkpoint every step (retention keeps 3), reports each
commit, and writes a marker when it is done; the evaluator polls every 20 ms,
restores each checkpoint it is given and reports what it evaluated. The
evaluator must see every checkpoint the trainer committed that retention had
not yet deleted, in order, each once, the last one included, never a partial
one (each result equals a plain evaluation of that step's state), and end by
itself once the marker is there.

Run as a script, this file is one of the two processes:
``python test_evaluation_sidecar.py trainer|evaluator DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

STEPS = 30
BATCHES = [np.arange(3.0) + i for i in range(4)]


def make_program() -> tuple[Any, Any, Any]:
    import looprt

    prog = looprt.Program(backend="numpy", name="sidecar")
    prog.state("w", np.zeros(3))
    prog.input("batch", iterable=BATCHES)

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        time.sleep(0.03)
        w += 1.0
        return {"loss": float(w.sum())}

    @prog.step(outputs=("score",), advance_global_step=False)
    def evaluate(batch: np.ndarray, w: np.ndarray) -> dict[str, float]:
        return {"score": float(batch @ w)}

    return prog, train, evaluate


def plain_score(step: int) -> float:
    return float(np.mean([b @ np.full(3, float(step)) for b in BATCHES]))


class Commits:
    """A checkpoint listener that prints each committed step."""

    def begin(self) -> None: ...

    def before_save(self, session: Any, global_step_value: Any) -> None: ...

    def after_save(self, session: Any, global_step_value: Any) -> None:
        print(json.dumps({"committed": int(global_step_value)}), flush=True)

    def end(self, session: Any, global_step_value: Any) -> None: ...


def trainer(directory: str) -> None:
    import looprt

    prog, train, _ = make_program()
    saver = looprt.Saver(prog, max_to_keep=3)
    hooks = [
        looprt.StopAtStepHook(last_step=STEPS),
        looprt.CheckpointSaverHook(directory, save_steps=1, saver=saver, listeners=[Commits()]),
    ]
    with looprt.SingularMonitoredSession(hooks=hooks, scaffold=looprt.Scaffold(program=prog, saver=saver)) as sess:
        while not sess.should_stop():
            sess.run(train)
    Path(directory, "DONE").touch()


def evaluator(directory: str) -> None:
    import looprt
    from looprt.evaluation import evaluations

    _, _, evaluate = make_program()
    for path, values in evaluations(
        directory, metrics={"score": looprt.metrics.Mean(evaluate.score)}, eval_interval_secs=0,
        timeout=0.2, timeout_fn=lambda: os.path.exists(os.path.join(directory, "DONE")), poll_secs=0.02,
    ):
        print(json.dumps({"evaluated": int(path.rpartition("-")[2]), "score": values["score"]}), flush=True)


def test_an_evaluator_beside_a_trainer_sees_every_checkpoint_once_in_order(tmp_path: Path) -> None:
    directory = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}

    def start(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, role, directory], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )

    evaluating = start("evaluator")  # first: it waits for a directory that does not exist yet
    training = start("trainer")
    train_out, train_err = training.communicate(timeout=120)
    eval_out, eval_err = evaluating.communicate(timeout=60)  # ends by itself, after the marker
    assert training.returncode == 0, train_err
    assert evaluating.returncode == 0, eval_err
    committed = [json.loads(line)["committed"] for line in train_out.splitlines()]
    evaluated = [json.loads(line) for line in eval_out.splitlines()]
    steps = [e["evaluated"] for e in evaluated]
    assert committed[-1] == STEPS
    assert steps == sorted(set(steps)), "in order, each once"
    assert set(steps) <= set(committed)
    assert steps[-1] == STEPS, "the last checkpoint, committed just before the marker"
    left = {int(p.name.rpartition("-")[2]) for p in Path(directory).glob("model.ckpt-*")}
    assert set(committed) - set(steps) <= set(committed) - left, "only checkpoints retention deleted are missed"
    assert len(steps) >= STEPS // 3, f"the evaluator kept up poorly: {steps}"
    for entry in evaluated:
        assert entry["score"] == plain_score(entry["evaluated"]), entry



def test_looprt_evaluate_beside_looprt_demo(tmp_path: Path) -> None:
    """The documented pair of commands: ``looprt demo`` and ``looprt evaluate`` at once."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    directory = str(tmp_path / "demo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    command = [sys.executable, "-m", "looprt"]
    evaluating = subprocess.Popen(
        [*command, "evaluate", directory, "--last-step", "400"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )
    training = subprocess.run(
        [*command, "demo", "--steps", "400", "--dir", directory], capture_output=True, text=True, env=env,
        check=False,
        timeout=120,
    )
    out, err = evaluating.communicate(timeout=60)
    assert training.returncode == 0, training.stderr
    assert evaluating.returncode == 0, err
    lines = out.splitlines()
    assert lines[-1].startswith("evaluated ") and "step 400: accuracy" in lines[-2]
    steps = [int(line.split(":")[0].split()[1]) for line in lines[:-1]]
    assert steps == sorted(set(steps)) and steps[-1] == 400
    events = event_accumulator.EventAccumulator(os.path.join(directory, "eval"))
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy")] == steps
    assert events.Scalars("accuracy")[-1].value > 0.9

if __name__ == "__main__":
    {"trainer": trainer, "evaluator": evaluator}[sys.argv[1]](sys.argv[2])
