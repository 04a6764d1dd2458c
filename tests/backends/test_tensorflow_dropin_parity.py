"""The drop-in's standard hooks against TF's, on what a user sees: steps, runs, graph events, logs, files.

One training script (``standard_training``) runs under ``tf.compat.v1.train``
and under ``looprt.backends.tensorflow``, with a resource and with a
reference global step (what ``tf.compat.v1.disable_v2_behavior()`` gives):
the global steps TF's default hooks act at (checkpoint listeners, summaries,
step rates, the session logs), the number of ``Session.run`` calls, the
graphs TensorBoard's own reader finds, the log lines on TF's logger and the
checkpoint state file's mode must all be TF's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

tf = pytest.importorskip("tensorflow")
train = pytest.importorskip("looprt.backends.tensorflow")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from tensorflow.python.training import training_util  # noqa: E402

pytestmark = pytest.mark.tensorflow

NAMESPACES = {"tf": tf.compat.v1.train, "looprt": train}


class StepListener:
    """A ``CheckpointSaverListener`` that records the global steps it is given."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def begin(self) -> None:
        self.log.append(("begin",))

    def before_save(self, session: Any, global_step_value: Any) -> None:
        self.log.append(("before_save", int(global_step_value)))

    def after_save(self, session: Any, global_step_value: Any) -> None:
        self.log.append(("after_save", int(global_step_value)))

    def end(self, session: Any, global_step_value: Any) -> None:
        self.log.append(("end", int(global_step_value)))


def global_step_variable(ref: bool) -> Any:
    """TF's global step, as ``get_or_create_global_step`` makes it; ``ref`` as TF1 behaviour makes it."""
    if not ref:
        return tf.compat.v1.train.get_or_create_global_step()
    return tf.compat.v1.get_variable(
        "global_step",
        shape=[],
        dtype=tf.int64,
        initializer=tf.compat.v1.zeros_initializer(),
        trainable=False,
        collections=[tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, tf.compat.v1.GraphKeys.GLOBAL_STEP],
        use_resource=False,
    )


def standard_training(
    ns: Any, directory: Path, ref: bool, monkeypatch: pytest.MonkeyPatch, *, summaries_only: bool = False
) -> dict[str, Any]:
    """MonitoredTrainingSession's default hooks, a StopAtStepHook and a listener; what they did."""
    log: list[Any] = []
    runs = []
    real_run = tf.compat.v1.Session.run

    def counting_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return real_run(self, *args, **kwargs)

    with tf.Graph().as_default(), monkeypatch.context() as patch:
        patch.setattr(tf.compat.v1.Session, "run", counting_run)
        global_step = global_step_variable(ref)
        w = tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.ones_initializer(), use_resource=not ref)
        loss = tf.square(w - 3.0, name="loss")
        tf.compat.v1.summary.scalar("loss", loss)
        # The hooks' read of the global step races the increment (in TF alone too): ordered here.
        read = training_util._get_or_create_global_step_read()
        with tf.control_dependencies([read]):
            train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
        hooks = [ns.StopAtStepHook(last_step=11)]
        listened = ns.CheckpointSaverHook(
            str(directory / "listened"), save_steps=4, listeners=[StepListener(log)], save_graph_def=False
        )
        seen = []
        with ns.MonitoredTrainingSession(
            checkpoint_dir=None if summaries_only else str(directory),
            summary_dir=str(directory) if summaries_only else None,
            hooks=hooks,
            save_checkpoint_steps=4,
            save_summaries_steps=3,
            log_step_count_steps=2,
            chief_only_hooks=[] if summaries_only else [listened],
        ) as sess:
            while not sess.should_stop():
                seen.append(float(sess.run([train_op, loss])[1]))
    return {"log": log, "runs": len(runs), "losses": seen, "events": events(directory), "graphs": graphs(directory)}


def events(directory: Path) -> list[tuple[Any, ...]]:
    """Every event but the graphs, in order: (what, step, detail), the values left out of rates."""
    found: list[tuple[Any, ...]] = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if event.HasField("summary"):
                for value in event.summary.value:
                    detail = None if value.tag.endswith("/sec") else value.simple_value
                    found.append(("summary", event.step, value.tag, detail))
            elif event.HasField("session_log"):
                found.append(("session_log", event.step, event.session_log.status))
    return found


def _unnumbered(text: str) -> str:
    return re.sub(r"(_cond_(?:true|false))_\d+", r"\1", text)


def canonical(proto: Any) -> str:
    """A graph or meta graph as text, without the process-wide numbers in a cond's function names.

    TF names a cond's functions with a counter of the process; the functions
    are listed in the order of those names, so they are put in order without it.
    """
    proto = type(proto).FromString(proto.SerializeToString())
    graph_def = proto.graph_def if hasattr(proto, "graph_def") else proto
    functions = sorted(graph_def.library.function, key=lambda f: _unnumbered(f.signature.name))
    copies = [type(f).FromString(f.SerializeToString()) for f in functions]
    del graph_def.library.function[:]
    graph_def.library.function.extend(copies)
    return _unnumbered(str(proto))


def graphs(directory: Path) -> list[tuple[str, str]]:
    """The graph and meta graph events of ``directory``, in order, as canonical text."""
    found: list[tuple[str, str]] = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if event.HasField("graph_def"):
                found.append(("graph_def", canonical(tf.compat.v1.GraphDef.FromString(event.graph_def))))
            elif event.HasField("meta_graph_def"):
                found.append(("meta_graph_def", canonical(tf.compat.v1.MetaGraphDef.FromString(event.meta_graph_def))))
    return found


def tensorboard_graph(directory: Path) -> tuple[str, str]:
    """What TensorBoard's Graphs tab shows for the run in ``directory``: its graph and meta graph."""
    accumulator = event_accumulator.EventAccumulator(str(directory))
    accumulator.Reload()
    return canonical(accumulator.Graph()), canonical(accumulator.MetaGraph())


@pytest.mark.parametrize("ref", [False, True], ids=["resource", "ref"])
def test_standard_hooks_act_at_tfs_steps(ref: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = standard_training(tf.compat.v1.train, tmp_path / "tf", ref, monkeypatch)
    actual = standard_training(train, tmp_path / "looprt", ref, monkeypatch)
    assert actual["losses"] == expected["losses"]
    assert len(expected["losses"]) == 11
    assert actual["log"] == expected["log"]
    assert [e for e in expected["log"] if e[0] == "before_save"] == [
        ("before_save", 0), ("before_save", 4), ("before_save", 8), ("before_save", 11)
    ]
    assert actual["events"] == expected["events"]
    assert actual["runs"] == expected["runs"]


@pytest.mark.parametrize("summaries_only", [False, True], ids=["checkpoint_dir", "summary_dir"])
def test_tensorboard_shows_tfs_graph(summaries_only: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph events TF writes (the cache's when it makes a writer, the checkpoint hook's), in order."""
    expected = standard_training(tf.compat.v1.train, tmp_path / "tf", False, monkeypatch, summaries_only=summaries_only)
    actual = standard_training(train, tmp_path / "looprt", False, monkeypatch, summaries_only=summaries_only)
    kinds = ["graph_def", "meta_graph_def"] * (1 if summaries_only else 2)
    assert [kind for kind, _ in expected["graphs"]] == kinds
    assert actual["graphs"] == expected["graphs"]
    graph, meta_graph = tensorboard_graph(tmp_path / "looprt")
    assert (graph, meta_graph) == tensorboard_graph(tmp_path / "tf")
    assert 'name: "GradientDescent"' in graph
