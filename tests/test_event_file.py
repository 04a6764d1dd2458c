"""looprt.event_file: the records and messages, checked against TensorBoard's protos and TF's readers."""

from __future__ import annotations

import bisect
import functools
import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary

from looprt import event_file

INT64 = st.integers(-(2**63), 2**63 - 1)
DBL_MAX = float(np.finfo(np.float64).max)


def parse(data: bytes) -> Event:
    event = Event.FromString(data)
    assert event.SerializeToString() == Event.FromString(event.SerializeToString()).SerializeToString()
    return event


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0x00000000),
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),  # RFC 3720, B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_matches_the_published_check_values(data: bytes, crc: int) -> None:
    assert event_file.crc32c(data) == crc


def test_a_record_is_length_crc_data_crc() -> None:
    framed = event_file.record(b"abc")
    assert len(framed) == 8 + 4 + 3 + 4
    assert struct.unpack("<Q", framed[:8]) == (3,) and framed[12:15] == b"abc"


@pytest.mark.tensorflow
def test_tf_reads_the_records_and_detects_a_flipped_byte(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    events = [event_file.event(wall_time=1.0, step=s, summary=event_file.summary([event_file.scalar_value("x", s)]))
              for s in range(3)]
    path = tmp_path / "records"
    path.write_bytes(b"".join(event_file.record(e) for e in events))
    assert list(tf.compat.v1.io.tf_record_iterator(str(path))) == events
    corrupt = bytearray(path.read_bytes())
    corrupt[len(event_file.record(events[0])) + 14] ^= 1  # inside the second record's data
    path.write_bytes(bytes(corrupt))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.compat.v1.io.tf_record_iterator(str(path)))


def test_an_event_file_starts_with_its_version_and_never_replaces_a_file(tmp_path: Path) -> None:
    file = event_file.EventFile(str(tmp_path / "logs"), ".mine")
    file.write(event_file.event(step=4))
    file.close()
    file.close()
    name = Path(file.path).name
    assert name.startswith("events.out.tfevents.") and name.endswith(".mine")
    data = Path(file.path).read_bytes()
    first = parse(data[12 : 12 + struct.unpack("<Q", data[:8])[0]])
    assert first.file_version == event_file.FILE_VERSION and first.wall_time > 0
    with pytest.raises(FileExistsError), open(file.path, "xb"):  # as EventFile opens: never a second writer
        pass
    with pytest.raises(ValueError, match="local directories only"):
        event_file.EventFile("s3://bucket/logs")


# --------------------------------------------------------------------------- messages


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    tag=st.text(min_size=0, max_size=20),
    value=st.floats(width=32),
    step=INT64,
    wall_time=st.floats(allow_nan=False),
)
def test_scalar_events_parse_as_tensorboard_events(tag: str, value: float, step: int, wall_time: float) -> None:
    data = event_file.event(wall_time=wall_time, step=step, summary=event_file.summary([event_file.scalar_value(tag, value)]))
    event_file.check_message(data)
    event = parse(data)
    assert (event.wall_time, event.step) == (wall_time, step)
    (parsed,) = event.summary.value
    assert parsed.tag == tag
    assert parsed.simple_value == value or (math.isnan(value) and math.isnan(parsed.simple_value))


def test_session_logs_and_graphs() -> None:
    start = parse(event_file.event(step=1, session_log=event_file.session_log("START")))
    assert (start.step, start.session_log.status) == (1, SessionLog.START)
    log = event_file.session_log("CHECKPOINT", "/tmp/model.ckpt-5")
    checkpoint = parse(event_file.event(step=5, session_log=log))
    assert checkpoint.session_log.status == SessionLog.CHECKPOINT
    assert checkpoint.session_log.checkpoint_path == "/tmp/model.ckpt-5"
    assert parse(event_file.event(graph_def=b"\x0a\x01x")).graph_def == b"\x0a\x01x"


def test_a_foreign_event_is_stamped_by_appended_fields() -> None:
    foreign = Event(step=3, wall_time=1.0, summary=Summary(value=[Summary.Value(tag="a", simple_value=2.0)]))
    stamped = parse(event_file.event(base=foreign.SerializeToString(), wall_time=9.5, step=7))
    assert (stamped.step, stamped.wall_time) == (7, 9.5)
    assert [(v.tag, v.simple_value) for v in stamped.summary.value] == [("a", 2.0)]


def test_serialized_summaries_concatenate_into_one() -> None:
    first = event_file.summary([event_file.scalar_value("a", 1.0)])
    second = Summary(value=[Summary.Value(tag="b", simple_value=2.0)]).SerializeToString()
    merged = parse(event_file.event(summary=first + second))
    assert [v.tag for v in merged.summary.value] == ["a", "b"]


@pytest.mark.parametrize(
    "data",
    [b"text", b"\x08", b"\x0a\x05ab", b"\x00\x01", b"\x0b", b"\xff" * 11],
)
def test_check_message_rejects_what_is_not_a_message(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a serialized protocol buffer"):
        event_file.check_message(data)


# --------------------------------------------------------------------------- histograms


def histogram(values: Any) -> Any:
    (value,) = parse(event_file.event(summary=event_file.summary([event_file.histogram_value("h", values)]))).summary.value
    assert value.tag == "h"
    return value.histo


def counts_by_right_edge(histo: Any) -> dict[float, float]:
    return {limit: count for limit, count in zip(histo.bucket_limit, histo.bucket) if count}


# Beyond the 1e20 edges too; no subnormals, which TF's kernels flush to zero.
FINITE = st.floats(min_value=-(2.0**83), max_value=2.0**83, width=32, allow_subnormal=False)


@settings(max_examples=100, deadline=None)
@given(values=arrays(np.float32, st.integers(1, 40), elements=FINITE))
def test_histograms_count_every_value_once_in_tensorboards_shape(values: np.ndarray[Any, Any]) -> None:
    histo = histogram(values)
    flat = values.astype(np.float64)
    assert (histo.min, histo.max, histo.num) == (flat.min(), flat.max(), flat.size)
    assert histo.sum == pytest.approx(flat.sum(), rel=1e-9, abs=1e-300)
    assert histo.sum_squares == pytest.approx(flat.dot(flat), rel=1e-9, abs=1e-300)
    assert len(histo.bucket) == len(histo.bucket_limit) and sum(histo.bucket) == flat.size
    assert list(histo.bucket_limit) == sorted(histo.bucket_limit)
    assert histo.bucket[0] == 0  # the empty bucket on the left shows the leftmost edge
    # Each value counts in the bucket whose right edge is the first edge above it.
    edges = [-DBL_MAX, *event_file.default_edges(), DBL_MAX]
    expected = Counter(edges[bisect.bisect_right(edges, v)] for v in flat)
    assert counts_by_right_edge(histo) == expected


@pytest.mark.tensorflow
@settings(max_examples=40, deadline=None)
@given(values=arrays(np.float32, st.integers(1, 40), elements=FINITE))
def test_histogram_buckets_are_tfs(values: np.ndarray[Any, Any]) -> None:
    tf = pytest.importorskip("tensorflow")
    session, x, op = _tf_histogram(tf)
    serialized = session.run(op, {x: values})
    (tf_value,) = Summary.FromString(serialized).value
    ours = histogram(values)
    assert counts_by_right_edge(ours) == counts_by_right_edge(tf_value.histo)
    assert (ours.min, ours.max, ours.num) == (tf_value.histo.min, tf_value.histo.max, tf_value.histo.num)


@functools.cache
def _tf_histogram(tf: Any) -> tuple[Any, Any, Any]:
    """One session for every example: a placeholder and TF's own (C++) histogram summary of it."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, shape=[None])
        op = tf.compat.v1.summary.histogram("h", x)
    return tf.compat.v1.Session(graph=graph), x, op


def test_a_histogram_needs_a_finite_element() -> None:
    with pytest.raises(ValueError, match="'h' has no element"):
        histogram(np.zeros(0))
    with pytest.raises(ValueError, match="'h' has no finite value"):
        histogram(np.array([np.nan, np.inf]))
