"""``SummarySaverHook`` and ``StepCounterHook``: event files read back with TensorBoard's reader.

Trigger steps are compared with TF's own hooks in graph mode (same arguments,
same number of runs -> the same steps written, the same fetch requests per
run); values come from NumPy programs and injected clocks, so they are exact.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

import looprt
from looprt.hooks.step_counter import StepCounterHook
from looprt.hooks.summary_saver import SummarySaverHook
from looprt.summary import SummaryWriter, SummaryWriterCache

KEEP_ALL = {event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0, event_accumulator.TENSORS: 0}
START = 1
TARGET = np.array([1.0, 2.0, 4.0])


@pytest.fixture(autouse=True)
def _clear_writer_caches() -> Any:
    yield
    SummaryWriterCache.clear()
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.compat.v1.summary.FileWriterCache.clear()


# --------------------------------------------------------------------------- reading events


def accumulate(logdir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance=KEEP_ALL)
    acc.Reload()
    return acc


def scalar_steps(logdir: Path, tag: str) -> list[int]:
    acc = accumulate(logdir)
    return [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def histogram_steps(logdir: Path, tag: str) -> list[int]:
    acc = accumulate(logdir)
    return [e.step for e in acc.Histograms(tag)] if tag in acc.Tags()["histograms"] else []


def start_steps(logdir: Path) -> list[int]:
    return [
        e.step
        for path in sorted(logdir.glob("events.out.tfevents.*"))
        for e in LegacyEventFileLoader(str(path)).Load()
        if e.HasField("session_log") and e.session_log.status == START
    ]


def written(logdir: Path) -> dict[str, list[int]]:
    """Which steps each tag was written at, and where SessionLog STARTs are."""
    return {
        "loss": scalar_steps(logdir, "loss"),
        "w": histogram_steps(logdir, "w"),
        "start": start_steps(logdir),
    }


def counted(requests: list[list[str]]) -> list[list[str]]:
    """TF's requests as a looprt session that counts the global step on the host makes them.

    Such a session hands the hook the global step (``run_context.global_step``), so
    the hook asks for everything TF's does but the global step.
    """
    return [[key for key in keys if key != "global_step"] for keys in requests]


def record_requests(hook: Any) -> list[list[str]]:
    """Wrap ``hook.before_run``: record the sorted keys of the fetch dict of each run."""
    requests: list[list[str]] = []
    before_run = hook.before_run

    def recording(run_context: Any) -> Any:
        args = before_run(run_context)
        requests.append([] if args is None else sorted(args.fetches))
        return args

    hook.before_run = recording
    return requests


# --------------------------------------------------------------------------- the programs


def numpy_program(advance_global_step: bool = True) -> tuple[looprt.Program, looprt.Step]:
    """w moves halfway to TARGET each run; loss is the squared distance after the move."""
    prog = looprt.Program(name="p")
    prog.state("w", np.zeros(3))

    @prog.step(outputs=("loss",), advance_global_step=advance_global_step)
    def train(w: np.ndarray) -> dict[str, float]:
        w += 0.5 * (TARGET - w)
        return {"loss": float(((w - TARGET) ** 2).sum())}

    return prog, train


def expected_w_before(run: int) -> np.ndarray:
    """w as read in run ``run`` (1-based): before that run's step."""
    return TARGET * (1 - 0.5 ** (run - 1))


def expected_loss(run: int) -> float:
    return float(((TARGET * 0.5**run) ** 2).sum())


def run_looprt(hooks: list[Any], runs: int, prog: looprt.Program, train: Any, scaffold: Any = None) -> None:
    creator = looprt.ChiefSessionCreator(scaffold or looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(creator, hooks=hooks) as sess:
        for _ in range(runs):
            sess.run(train)


def run_tf(make_hook: Any, runs: int, record: bool = True) -> list[list[str]]:
    """Run TF's hook in graph mode over ``runs`` train runs; return its per-run requests.

    The train op increments the global step after TF's global-step read tensor
    (what TF's hooks fetch), so the hooks see the stale step deterministically,
    as looprt's programs guarantee.
    """
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.training import training_util

    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        w = tf.compat.v1.Variable(np.zeros(3), name="weights")
        with tf.control_dependencies([training_util._get_or_create_global_step_read()]):
            train = tf.group(tf.compat.v1.assign_add(global_step, 1), tf.compat.v1.assign_add(w, TARGET))
        summary_op = tf.compat.v1.summary.merge(
            [tf.compat.v1.summary.scalar("loss", tf.reduce_sum(w)), tf.compat.v1.summary.histogram("w", w)]
        )
        hook = make_hook(tf, summary_op)
        requests = record_requests(hook) if record else []
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            for _ in range(runs):
                sess.run(train)
    return requests


# --------------------------------------------------------------------------- SummarySaverHook


@pytest.mark.parametrize(
    ("save_steps", "runs", "steps"),
    [(1, 4, [1, 2, 3, 4]), (2, 7, [1, 3, 5, 7]), (3, 8, [1, 4, 7]), (5, 4, [1]), (4, 1, [1])],
)
def test_summary_saver_writes_program_summaries_every_save_steps(
    tmp_path: Path, save_steps: int, runs: int, steps: list[int]
) -> None:
    prog, train = numpy_program()
    prog.summary("loss", train.loss)
    prog.summary("w", "w")
    scaffold = looprt.Scaffold(program=prog)
    hook = SummarySaverHook(save_steps=save_steps, output_dir=str(tmp_path), scaffold=scaffold)
    run_looprt([hook], runs, prog, train, scaffold)
    assert written(tmp_path) == {"loss": steps, "w": steps, "start": [1]}
    acc = accumulate(tmp_path)
    # Written at the global step after run k (= k); loss is that run's output, w is read before its step.
    assert [e.value for e in acc.Scalars("loss")] == [float(np.float32(expected_loss(k))) for k in steps]
    for histogram, k in zip(acc.Histograms("w"), steps):
        value = histogram.histogram_value
        assert (value.num, value.min, value.max) == (3, min(expected_w_before(k)), max(expected_w_before(k)))
        assert value.sum == pytest.approx(expected_w_before(k).sum())


@pytest.mark.tensorflow
@pytest.mark.parametrize(("save_steps", "runs"), [(1, 3), (2, 6), (3, 10), (4, 9), (7, 2)])
def test_summary_saver_writes_and_requests_at_the_steps_tf_does(tmp_path: Path, save_steps: int, runs: int) -> None:
    tf_dir, looprt_dir = tmp_path / "tf", tmp_path / "looprt"
    tf_requests = run_tf(
        lambda tf, op: tf.compat.v1.train.SummarySaverHook(save_steps=save_steps, output_dir=str(tf_dir), summary_op=op),
        runs,
    )
    prog, train = numpy_program()
    prog.summary("loss", train.loss)
    prog.summary("w", "w")
    scaffold = looprt.Scaffold(program=prog)
    hook = SummarySaverHook(save_steps=save_steps, output_dir=str(looprt_dir), scaffold=scaffold)
    looprt_requests = record_requests(hook)
    run_looprt([hook], runs, prog, train, scaffold)

    assert written(looprt_dir) == written(tf_dir)
    assert written(looprt_dir)["loss"]  # not vacuous
    assert looprt_requests == counted(tf_requests)
    assert ["global_step"] in tf_requests or save_steps == 1


@pytest.mark.tensorflow
def test_without_a_writer_nothing_is_written_and_the_summary_is_requested_every_run_as_in_tf(tmp_path: Path) -> None:
    tf_requests = run_tf(lambda tf, op: tf.compat.v1.train.SummarySaverHook(save_steps=3, summary_op=op), 5)
    prog, train = numpy_program()
    hook = SummarySaverHook(save_steps=3, summary_op={"loss": train.loss})
    looprt_requests = record_requests(hook)
    run_looprt([hook], 5, prog, train)
    assert tf_requests == [["global_step", "summary"]] * 5
    assert looprt_requests == counted(tf_requests)
    assert list(tmp_path.iterdir()) == []


def test_summary_saver_fetches_the_summary_only_when_its_timer_triggers(tmp_path: Path) -> None:
    prog, train = numpy_program()
    hook = SummarySaverHook(save_steps=3, output_dir=str(tmp_path), summary_op={"loss": train.loss})
    requests = record_requests(hook)
    run_looprt([hook], 7, prog, train)
    with_summary, nothing = [["summary"]], [[]]
    assert requests == with_summary + nothing * 2 + with_summary + nothing * 2 + with_summary
    assert written(tmp_path) == {"loss": [1, 4, 7], "w": [], "start": [1]}


def test_summary_saver_every_save_secs_with_an_injected_clock(tmp_path: Path) -> None:
    now = [0.0]
    prog, train = numpy_program()
    hook = SummarySaverHook(
        save_secs=10, output_dir=str(tmp_path), summary_op={"loss": train.loss}, clock=lambda: now[0]
    )
    times = [0, 3, 9.5, 10, 12, 25, 26, 40]
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
        for t in times:
            now[0] = t
            sess.run(train)
    # Triggered at run 1 (t=0), run 4 (t=10 >= 0+10), run 6 (t=25 >= 10+10), run 8 (t=40 >= 25+10).
    assert scalar_steps(tmp_path, "loss") == [1, 4, 6, 8]


def test_summary_op_forms_dict_list_handle_and_tf_style_list(tmp_path: Path) -> None:
    prog, train = numpy_program()
    forms: dict[str, Any] = {
        "dict": {"loss": train.loss, "w": prog.states["w"]},
        "list": [{"loss": train.loss}, {"w": "w"}],
        "handle": train.loss,
    }
    for name, summary_op in forms.items():
        hook = SummarySaverHook(save_steps=2, output_dir=str(tmp_path / name), summary_op=summary_op)
        run_looprt([hook], 3, prog, train)
    assert written(tmp_path / "dict") == {"loss": [1, 3], "w": [1, 3], "start": [1]}
    assert written(tmp_path / "list") == {"loss": [1, 3], "w": [1, 3], "start": [1]}
    assert scalar_steps(tmp_path / "handle", "train/loss") == [1, 3]  # a bare handle: its own name


def test_scaffold_without_summaries_writes_only_the_session_start(tmp_path: Path) -> None:
    prog, train = numpy_program()
    scaffold = looprt.Scaffold(program=prog)
    hook = SummarySaverHook(save_steps=1, output_dir=str(tmp_path), scaffold=scaffold)
    requests = record_requests(hook)
    run_looprt([hook], 3, prog, train, scaffold)
    assert requests == [[]] * 3  # the global step comes on the run context
    assert written(tmp_path) == {"loss": [], "w": [], "start": [1]}


def test_summary_writer_is_used_and_flushed_not_closed_at_end(tmp_path: Path) -> None:
    prog, train = numpy_program()
    writer = SummaryWriter(tmp_path, flush_secs=1e9)
    hook = SummarySaverHook(save_steps=1, output_dir=str(tmp_path / "unused"), summary_writer=writer, summary_op={"loss": train.loss})
    run_looprt([hook], 2, prog, train)
    assert not writer.closed
    assert written(tmp_path) == {"loss": [1, 2], "w": [], "start": [1]}  # readable: end() flushed
    assert not (tmp_path / "unused").exists()
    writer.close()


def test_output_dir_uses_the_cached_writer(tmp_path: Path) -> None:
    prog, train = numpy_program()
    hook = SummarySaverHook(save_steps=1, output_dir=str(tmp_path), summary_op={"loss": train.loss})
    run_looprt([hook], 2, prog, train)
    assert not SummaryWriterCache.get(tmp_path).closed  # still open: end() only flushed it
    assert written(tmp_path)["loss"] == [1, 2]
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def tf_graph_with_summary() -> tuple[Any, Any, Any, Any]:
    """A TF graph: a train op adding [1, 3] to x, a merged summary op (bytes), the initializer."""
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default() as graph:
        global_step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.compat.v1.Variable(np.zeros(2), name="var")
        train = tf.group(tf.compat.v1.assign_add(global_step, 1), tf.compat.v1.assign_add(x, [1.0, 3.0]))
        summary_op = tf.compat.v1.summary.merge(
            [tf.compat.v1.summary.scalar("total", tf.reduce_sum(x)), tf.compat.v1.summary.histogram("x", x)]
        )
        init = tf.compat.v1.global_variables_initializer()
    return graph, train, summary_op, init


class TFSessionCreator:
    """Creates raw ``tf.compat.v1.Session``s of ``graph``; ``adapt`` wraps them (see below)."""

    def __init__(self, graph: Any, init: Any, adapt: Any = None) -> None:
        self.graph, self.init, self.adapt = graph, init, adapt

    def create_session(self) -> Any:
        import tensorflow as tf

        sess = tf.compat.v1.Session(graph=self.graph)
        sess.run(self.init)
        return sess if self.adapt is None else self.adapt(sess)


class DropLooprtRunOptions:
    """A TF session that ignores looprt's RunOptions / RunMetadata (TF's Session rejects them)."""

    def __init__(self, sess: Any) -> None:
        self.sess, self.graph = sess, sess.graph

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        return self.sess.run(fetches, feed_dict)

    def close(self) -> None:
        self.sess.close()


@pytest.mark.tensorflow
def test_summary_saver_writes_a_tf_summary_tensor_fetched_from_a_tf_session(tmp_path: Path) -> None:
    graph, train, summary_op, init = tf_graph_with_summary()
    # save_steps=1: every run re-reads the global step, so the unordered read of the
    # global step variable in the train run does not matter.
    hook = SummarySaverHook(save_steps=1, output_dir=str(tmp_path), summary_op=summary_op)
    with looprt.MonitoredSession(TFSessionCreator(graph, init, DropLooprtRunOptions), hooks=[hook]) as sess:
        for _ in range(3):
            sess.run(train)
    acc = accumulate(tmp_path)
    # TF orders neither read of x against the assignment in the same run: before or after.
    assert [e.step for e in acc.Scalars("total")] == [1, 2, 3]
    assert all(e.value in (4.0 * (e.step - 1), 4.0 * e.step) for e in acc.Scalars("total"))
    assert [h.step for h in acc.Histograms("x")] == [1, 2, 3]
    assert all(h.histogram_value.num == 2 for h in acc.Histograms("x"))
    assert start_steps(tmp_path) == [1]


@pytest.mark.tensorflow
def test_hooks_run_on_a_raw_tf_session(tmp_path: Path) -> None:
    graph, train, summary_op, init = tf_graph_with_summary()
    hook = SummarySaverHook(save_steps=1, output_dir=str(tmp_path), summary_op=summary_op)
    with looprt.MonitoredSession(TFSessionCreator(graph, init), hooks=[hook]) as sess:
        sess.run(train)
    assert start_steps(tmp_path) == [1]


def test_summary_saver_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"^Exactly one of scaffold or summary_op must be provided\.$"):
        SummarySaverHook(save_steps=1)
    with pytest.raises(ValueError, match=r"^Exactly one of scaffold or summary_op must be provided\.$"):
        SummarySaverHook(save_steps=1, scaffold=looprt.Scaffold(), summary_op={})
    with pytest.raises(ValueError, match=r"^Either every_secs or every_steps should be provided\.$"):
        SummarySaverHook(summary_op={})
    with pytest.raises(ValueError, match=r"^Can not provide both every_secs and every_steps\.$"):
        SummarySaverHook(save_steps=1, save_secs=1, summary_op={})


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    "kwargs",
    [{"save_steps": 1}, {"save_steps": 1, "scaffold": "S", "summary_op": "op"}, {"summary_op": "op"}, {"save_steps": 1, "save_secs": 2, "summary_op": "op"}],
)
def test_summary_saver_argument_errors_match_tf(kwargs: dict[str, Any]) -> None:
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(ValueError) as tf_error:
        tf.compat.v1.train.SummarySaverHook(**kwargs)
    with pytest.raises(ValueError) as looprt_error:
        SummarySaverHook(**kwargs)
    assert str(looprt_error.value) == str(tf_error.value)


# --------------------------------------------------------------------------- StepCounterHook


def rates(logdir: Path) -> list[tuple[int, float]]:
    acc = accumulate(logdir)
    tag = "global_step/sec"
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_step_counter_writes_and_logs_rates_from_the_injected_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    hook = StepCounterHook(every_n_steps=2, output_dir=str(tmp_path), clock=lambda: now[0])
    prog, train = numpy_program()
    times = [1.0, 2.0, 9.0, 10.0, 25.0, 26.0, 27.0]  # run k's global step after the run is k
    with caplog.at_level(logging.INFO, logger="looprt"):
        creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
        with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
            for t in times:
                now[0] = t
                sess.run(train)
        SummaryWriterCache.get(tmp_path).flush()
    # Triggers at steps 1 (starts the clock), 3, 5, 7: 2 steps over 8 s, 16 s, 2 s.
    assert rates(tmp_path) == [(3, 0.25), (5, 0.125), (7, 1.0)]
    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name == "looprt.hooks.step_counter" and r.levelno == logging.INFO
    ]
    assert messages == ["global_step/sec: 0.25", "global_step/sec: 0.125", "global_step/sec: 1"]


def test_step_counter_every_n_secs_with_the_injected_clock(tmp_path: Path) -> None:
    now = [0.0]
    writer = SummaryWriter(tmp_path)
    hook = StepCounterHook(every_n_steps=None, every_n_secs=4, summary_writer=writer, clock=lambda: now[0])
    prog, train = numpy_program()
    times = [0.0, 1.0, 2.0, 5.0, 6.0, 13.0, 14.0]
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
        for t in times:
            now[0] = t
            sess.run(train)
    writer.flush()
    # Triggers at step 1 (t=0), step 4 (t=5: 3 steps / 5 s), step 6 (t=13: 2 steps / 8 s).
    assert rates(tmp_path) == [(4, float(np.float32(0.6))), (6, 0.25)]
    writer.close()


@pytest.mark.tensorflow
@pytest.mark.parametrize(("every_n_steps", "runs"), [(1, 4), (2, 7), (3, 10), (5, 12)])
def test_step_counter_writes_at_the_steps_tf_does(tmp_path: Path, every_n_steps: int, runs: int) -> None:
    tf_dir, looprt_dir = tmp_path / "tf", tmp_path / "looprt"
    run_tf(lambda tf, op: tf.compat.v1.train.StepCounterHook(every_n_steps=every_n_steps, output_dir=str(tf_dir)), runs, record=False)
    tick = [0.0]

    def clock() -> float:
        tick[0] += 1.0
        return tick[0]

    hook = StepCounterHook(every_n_steps=every_n_steps, output_dir=str(looprt_dir), clock=clock)
    prog, train = numpy_program()
    run_looprt([hook], runs, prog, train)
    SummaryWriterCache.get(looprt_dir).flush()
    sys.modules["tensorflow"].compat.v1.summary.FileWriterCache.get(str(tf_dir)).flush()  # neither hook flushes
    tf_steps = scalar_steps(tf_dir, "global_step/sec")
    assert tf_steps  # not vacuous
    assert [step for step, _ in rates(looprt_dir)] == tf_steps


def test_step_counter_warns_five_times_when_the_global_step_does_not_move(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = StepCounterHook(every_n_steps=1, output_dir=str(tmp_path), clock=lambda: 0.0)
    prog, train = numpy_program(advance_global_step=False)  # the rate is never computed: no 0/0
    with caplog.at_level(logging.WARNING, logger="looprt"):
        run_looprt([hook], 8, prog, train)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert all(
        m.startswith("It seems that global step has not been increased. Current value (could be stable): 0 vs previous value: 0.")
        for m in warnings
    )
    assert rates(tmp_path) == []


def test_step_counter_does_not_warn_when_the_global_step_moves(caplog: pytest.LogCaptureFixture) -> None:
    hook = StepCounterHook(every_n_steps=1, clock=iter(range(100)).__next__)
    prog, train = numpy_program()
    with caplog.at_level(logging.WARNING, logger="looprt"):
        run_looprt([hook], 4, prog, train)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_step_counter_falls_back_to_add_summary_on_writers_without_add_scalar() -> None:
    class Writer:
        def __init__(self) -> None:
            self.summaries: list[tuple[Any, Any]] = []

        def add_summary(self, summary: Any, step: Any) -> None:
            self.summaries.append((summary, step))

    writer = Writer()
    times = iter([0.0, 4.0])
    hook = StepCounterHook(every_n_steps=2, summary_writer=writer, clock=lambda: next(times))
    prog, train = numpy_program()
    run_looprt([hook], 3, prog, train)
    assert writer.summaries == [({"global_step/sec": 0.5}, 3)]


def test_step_counter_argument_errors() -> None:
    message = r"^exactly one of every_n_steps and every_n_secs should be provided\.$"
    with pytest.raises(ValueError, match=message):
        StepCounterHook(every_n_steps=None)
    with pytest.raises(ValueError, match=message):
        StepCounterHook(every_n_steps=1, every_n_secs=1)


@pytest.mark.tensorflow
def test_step_counter_argument_errors_match_tf() -> None:
    tf = pytest.importorskip("tensorflow")
    for kwargs in ({"every_n_steps": None}, {"every_n_steps": 3, "every_n_secs": 2}):
        with pytest.raises(ValueError) as tf_error:
            tf.compat.v1.train.StepCounterHook(**kwargs)
        with pytest.raises(ValueError) as looprt_error:
            StepCounterHook(**kwargs)
        assert str(looprt_error.value) == str(tf_error.value)


def test_hooks_need_a_global_step(tmp_path: Path) -> None:
    class Graphless:
        graph = object()

    for hook in (StepCounterHook(output_dir=str(tmp_path)), SummarySaverHook(save_steps=1, summary_op={})):
        hook.begin()
        with pytest.raises(RuntimeError, match="Global step should be created"):
            hook.after_create_session(Graphless(), None)
