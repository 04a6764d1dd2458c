"""``looprt.summary``: event files read back with TensorBoard's own reader."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

from looprt.summary import SummaryWriter, SummaryWriterCache

KEEP_ALL = {
    event_accumulator.SCALARS: 0,
    event_accumulator.HISTOGRAMS: 0,
    event_accumulator.TENSORS: 0,
}


@pytest.fixture(autouse=True)
def _clear_writer_cache() -> Any:
    yield
    SummaryWriterCache.clear()


def accumulate(logdir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance=KEEP_ALL)
    acc.Reload()
    return acc


def scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    acc = accumulate(logdir)
    if tag not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def event_files(logdir: Path) -> list[Path]:
    return sorted(logdir.glob("events.out.tfevents.*"))


def raw_events(logdir: Path) -> list[Any]:
    """Every event of every file, unconverted (session logs included)."""
    return [event for path in event_files(logdir) for event in LegacyEventFileLoader(str(path)).Load()]


def session_logs(logdir: Path) -> list[tuple[int, int, str]]:
    return [
        (e.step, e.session_log.status, e.session_log.checkpoint_path)
        for e in raw_events(logdir)
        if e.HasField("session_log")
    ]


def f32(x: float) -> float:
    """What a summary's simple_value (a float32) reads back as."""
    return float(np.float32(x))


# --------------------------------------------------------------------------- scalars and histograms


def test_scalars_and_histograms_read_back_while_the_writer_is_open(tmp_path: Path) -> None:
    writer = SummaryWriter(tmp_path)
    for step in range(4):
        writer.add_scalar("loss", 1.5 / (step + 1), step)
        writer.add_histogram("w", np.arange(6.0).reshape(2, 3) * (step + 1), np.int64(step))
    writer.flush()
    assert not writer.closed
    acc = accumulate(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, f32(1.5 / (s + 1))) for s in range(4)]
    histos = acc.Histograms("w")
    assert [h.step for h in histos] == [0, 1, 2, 3]
    for h in histos:
        k = h.step + 1
        value = h.histogram_value
        assert (value.min, value.max, value.num) == (0.0, 5.0 * k, 6)
        assert value.sum == pytest.approx(15.0 * k)
        assert value.sum_squares == pytest.approx(55.0 * k * k)
        assert sum(value.bucket) == 6
    writer.close()


def test_flush_makes_every_write_readable_each_time(tmp_path: Path) -> None:
    writer = SummaryWriter(tmp_path)
    for step in range(1, 6):
        writer.add_scalar("x", step, step)
        writer.flush()
        assert [s for s, _ in scalars(tmp_path, "x")] == list(range(1, step + 1))
    writer.close()


def test_writes_are_flushed_every_flush_secs_by_the_injected_clock(tmp_path: Path) -> None:
    now = [0.0]
    writer = SummaryWriter(tmp_path, flush_secs=10, clock=lambda: now[0])
    writer.add_scalar("x", 1.0, 1)
    now[0] = 9.0
    writer.add_scalar("x", 2.0, 2)
    now[0] = 10.0
    writer.add_scalar("x", 3.0, 3)  # 10 s after the last flush: flushed without a flush() call
    assert scalars(tmp_path, "x") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    writer.close()


def test_walltime_and_numpy_steps_are_recorded(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("x", np.float32(0.5), np.int64(7), walltime=1234.5)
    acc = accumulate(tmp_path)
    (event,) = acc.Scalars("x")
    assert (event.step, event.value, event.wall_time) == (7, 0.5, 1234.5)


@pytest.mark.parametrize("value", [np.zeros(2), np.ones((1, 2)), "a", object(), np.array(["a"])])
def test_add_scalar_needs_one_number(tmp_path: Path, value: Any) -> None:
    with SummaryWriter(tmp_path) as writer, pytest.raises((ValueError, TypeError)):
        writer.add_scalar("x", value, 1)


def test_add_histogram_needs_an_element(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path) as writer, pytest.raises(ValueError, match="'h' has no element"):
        writer.add_histogram("h", np.zeros((0, 3)), 1)


# --------------------------------------------------------------------------- add_summary


def test_add_summary_dict_scalars_and_histograms_in_one_event(tmp_path: Path) -> None:
    summary = {
        "py_float": 0.25,
        "py_int": 3,
        "np_scalar": np.float32(1.5),
        "np_int": np.int64(-2),
        "zero_d": np.array(4.0),
        "one_element": np.array([[5.0]]),
        "flag": True,
        "weights": np.array([1.0, 2.0, 4.0]),
        "int_array": np.array([1, 1]),
    }
    with SummaryWriter(tmp_path) as writer:
        writer.add_summary(summary, 9)
    acc = accumulate(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == sorted(["py_float", "py_int", "np_scalar", "np_int", "zero_d", "one_element", "flag"])
    assert sorted(acc.Tags()["histograms"]) == ["int_array", "weights"]
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert got == {
        "py_float": [(9, 0.25)],
        "py_int": [(9, 3.0)],
        "np_scalar": [(9, 1.5)],
        "np_int": [(9, -2.0)],
        "zero_d": [(9, 4.0)],
        "one_element": [(9, 5.0)],
        "flag": [(9, 1.0)],
    }
    (weights,) = acc.Histograms("weights")
    assert (weights.step, weights.histogram_value.num, weights.histogram_value.sum) == (9, 3, 7.0)
    summaries = [e for e in raw_events(tmp_path) if e.HasField("summary")]
    assert len(summaries) == 1  # one event, like a merged summary op
    assert len(summaries[0].summary.value) == len(summary)


def test_add_summary_takes_tensorboard_protos_and_serialized_bytes(tmp_path: Path) -> None:
    from tensorboard.compat.proto.summary_pb2 import Summary

    proto = Summary(value=[Summary.Value(tag="a", simple_value=1.0)])
    with SummaryWriter(tmp_path) as writer:
        writer.add_summary(proto, 1)
        writer.add_summary(proto.SerializeToString(), 2)
        writer.add_summary(bytearray(proto.SerializeToString()), 3)
        writer.add_summary({"merged": Summary(value=[Summary.Value(tag="b", simple_value=2.0)]).SerializeToString(), "c": 3.0}, 4)
    assert scalars(tmp_path, "a") == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert scalars(tmp_path, "b") == [(4, 2.0)]  # bytes in a dict keep their own tags
    assert scalars(tmp_path, "c") == [(4, 3.0)]
    assert scalars(tmp_path, "merged") == []


@pytest.mark.parametrize("bad", ["text", 3.0, [1.0], None, {"s": "text"}])
def test_add_summary_rejects_other_values(tmp_path: Path, bad: Any) -> None:
    with SummaryWriter(tmp_path) as writer, pytest.raises(TypeError):
        writer.add_summary(bad, 1)


@pytest.mark.tensorflow
def test_add_summary_reads_tf_graph_mode_summary_bytes_and_tf_protos(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, shape=[4])
        merged = tf.compat.v1.summary.merge(
            [tf.compat.v1.summary.scalar("avg", tf.reduce_mean(x)), tf.compat.v1.summary.histogram("x", x)]
        )
        with tf.compat.v1.Session() as sess:
            serialized = [sess.run(merged, {x: [1.0, 2.0, 3.0, 4.0 * k]}) for k in (1, 2)]
    assert all(isinstance(s, bytes) for s in serialized)
    tf_proto = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag="proto", simple_value=0.5)])
    with SummaryWriter(tmp_path) as writer:
        writer.add_summary(serialized[0], 1)
        writer.add_summary(serialized[1], 2)
        writer.add_summary(tf_proto, 3)
    acc = accumulate(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("avg")] == [(1, 2.5), (2, 3.5)]
    assert [(h.step, h.histogram_value.max, h.histogram_value.num) for h in acc.Histograms("x")] == [(1, 4.0, 4), (2, 8.0, 4)]
    assert [(e.step, e.value) for e in acc.Scalars("proto")] == [(3, 0.5)]


@pytest.mark.torch
def test_torch_tensors_are_summary_values(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with SummaryWriter(tmp_path) as writer:
        writer.add_summary({"t": torch.tensor(2.0, requires_grad=True), "h": torch.arange(4.0)}, 1)
    acc = accumulate(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("t")] == [(1, 2.0)]
    assert acc.Histograms("h")[0].histogram_value.num == 4


# --------------------------------------------------------------------------- session logs, files, closing


def test_session_logs_start_and_checkpoint(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path) as writer:
        writer.add_session_log_start(1)
        writer.add_session_log_checkpoint(str(tmp_path / "model.ckpt-5"), 5)
    assert session_logs(tmp_path) == [(1, 1, ""), (5, 3, str(tmp_path / "model.ckpt-5"))]  # START=1, CHECKPOINT=3


def test_two_writers_of_one_directory_keep_separate_files(tmp_path: Path) -> None:
    first, second = SummaryWriter(tmp_path), SummaryWriter(tmp_path)
    first.add_scalar("a", 1.0, 1)
    second.add_scalar("b", 2.0, 2)
    first.close()
    second.close()
    assert len(event_files(tmp_path)) == 2
    assert scalars(tmp_path, "a") == [(1, 1.0)]
    assert scalars(tmp_path, "b") == [(2, 2.0)]


def test_close_is_idempotent_and_later_writes_are_warned_noops_until_reopen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = SummaryWriter(tmp_path, filename_suffix=".mine")
    first_file = writer.file_name
    assert first_file is not None and first_file.endswith(".mine")
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    writer.close()
    assert writer.closed and writer.file_name is None
    with caplog.at_level(logging.WARNING, logger="looprt"):
        writer.add_scalar("x", 2.0, 2)
        writer.flush()
    assert [r.getMessage() for r in caplog.records if "closed SummaryWriter" in r.getMessage()]
    writer.reopen()
    assert writer.file_name not in (None, first_file)
    writer.add_scalar("x", 3.0, 3)
    writer.close()
    assert len(event_files(tmp_path)) == 2
    assert scalars(tmp_path, "x") == [(1, 1.0), (3, 3.0)]


def test_files_opened_in_one_second_sort_in_the_order_they_were_opened(tmp_path: Path) -> None:
    # The process-wide counter crosses 9 -> 10 and 99 -> 100 here: unpadded, ".10" sorted before ".9".
    names = []
    for _ in range(120):
        writer = SummaryWriter(tmp_path)
        names.append(writer.file_name)
        writer.close()
    assert sorted(names) == names  # type: ignore[type-var]


def test_the_event_file_starts_with_its_version(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path / "new" / "dir") as writer:
        assert writer.logdir == str(tmp_path / "new" / "dir") == writer.get_logdir()
    events = raw_events(tmp_path / "new" / "dir")
    assert [e.file_version for e in events] == ["brain.Event:2"]


# --------------------------------------------------------------------------- the cache


def test_cache_gives_one_writer_per_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = SummaryWriterCache.get(str(tmp_path / "a"))
    assert SummaryWriterCache.get("a") is a
    assert SummaryWriterCache.get(tmp_path / "a") is a
    assert SummaryWriterCache.get(str(tmp_path / "a") + "/") is a
    b = SummaryWriterCache.get(tmp_path / "b")
    assert b is not a
    SummaryWriterCache.clear()
    assert a.closed and b.closed
    again = SummaryWriterCache.get("a")
    assert again is not a and not again.closed
    assert len(event_files(tmp_path / "a")) == 2


def test_cache_is_thread_safe(tmp_path: Path) -> None:
    n = 8
    barrier = threading.Barrier(n)
    got: list[SummaryWriter] = []
    lock = threading.Lock()

    def get() -> None:
        barrier.wait()
        writer = SummaryWriterCache.get(tmp_path)
        with lock:
            got.append(writer)

    threads = [threading.Thread(target=get) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == n and all(w is got[0] for w in got)
    assert len(event_files(tmp_path)) == 1


def test_writing_summaries_imports_no_framework_and_no_protobuf(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys, numpy as np, looprt\n"
        "from looprt.summary import SummaryWriter\n"
        f"with SummaryWriter({str(tmp_path)!r}) as w:\n"
        "    w.add_scalar('x', 1.0, 1); w.add_histogram('h', np.arange(5.0), 1)\n"
        "    w.add_summary({'y': 2.0}, 2); w.add_session_log_checkpoint('ckpt', 2)\n"
        "heavy = ('torch', 'tensorflow', 'tensorboardX', 'tensorboard', 'google.protobuf')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert scalars(tmp_path, "x") == [(1, 1.0)] and scalars(tmp_path, "y") == [(2, 2.0)]


def test_flush_all_flushes_every_writer_before_raising_the_first_error(tmp_path: Path) -> None:
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(disk)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    SummaryWriterCache.clear()
    try:
        full, fine = SummaryWriterCache.get(disk / "full"), SummaryWriterCache.get(tmp_path / "fine")
        for step in range(90):  # about 6 KB of events: more than the disk, less than the file's buffer
            full.add_scalar("a_scalar_with_a_long_name", float(step), step)
        fine.add_scalar("loss", 1.5, 7)
        with pytest.raises(OSError, match="No space left"):
            SummaryWriterCache.flush_all()
        [file] = (tmp_path / "fine").glob("events.out.tfevents.*")
        acc = event_accumulator.EventAccumulator(str(file))
        acc.Reload()
        assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(7, 1.5)]  # flushed all the same
    finally:
        with pytest.raises(OSError, match="No space left"):  # closing flushes the full one again
            SummaryWriterCache.clear()
        assert full.closed and fine.closed  # both closed all the same
        if subprocess.run(["umount", str(disk)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)
