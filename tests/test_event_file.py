"""looprt.event_file: the records and messages, checked against TensorBoard's protos and TF's readers."""

from __future__ import annotations

import bisect
import functools
import math
import struct
import timeit
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


def test_crc32c_runs_at_c_speed_on_any_bytes_like() -> None:
    """Event files are CRC'd by a maintained C library: 8 MiB well under 50 ms (pure Python: ~0.9 s)."""
    data = bytes(range(256)) * (32 << 10)
    assert event_file.crc32c(bytearray(data)) == event_file.crc32c(memoryview(data)) == event_file.crc32c(data)
    best = min(timeit.repeat(lambda: event_file.crc32c(data), number=1, repeat=5))
    assert best < 0.05, f"crc32c of 8 MiB took {best:.3f} s"


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
    with pytest.raises(NotImplementedError, match="nosuchscheme"):  # a URL is never a local path
        event_file.EventFile("nosuchscheme://bucket/logs")


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
    [b"text", b"\x08", b"\x0a\x05ab", b"\x00\x01", b"\x0b", b"\xff" * 11, b"\x80\x80\x80\x80\x10\x00"],
)
def test_check_message_rejects_what_is_not_a_message(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a serialized protocol buffer"):
        event_file.check_message(data)


def test_check_message_looks_into_a_summarys_values() -> None:
    bad_tag = event_file.summary([b"\x0a\x02\xff\xfe"])  # a Value whose tag is not UTF-8
    with pytest.raises(ValueError, match="field 1 is not UTF-8"):
        event_file.check_message(bad_tag, "Summary")
    truncated = event_file.summary([b"\x2a\x05\x09"])  # a Value whose histo runs past its end
    with pytest.raises(ValueError, match="not a serialized protocol buffer"):
        event_file.check_message(truncated, "Summary")
    with pytest.raises(ValueError):
        event_file.check_message(event_file.event(summary=truncated), "Event")


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=24) | st.lists(st.sampled_from(
    [b"\x0a", b"\x12", b"\x2a", b"\x4a", b"\x0a\x02", b"\x09", b"\x15", b"\x08", b"\x01", b"\xff", b"\x80", b"\x00"]
)).map(b"".join))
def test_what_check_message_accepts_protobuf_parses(data: bytes) -> None:
    for message, parse_as in (("Summary", Summary), ("Event", Event)):
        try:
            event_file.check_message(data, message)
        except ValueError:
            continue
        parse_as.FromString(data)  # must not raise


@settings(max_examples=100, deadline=None)
@given(
    tags=st.lists(st.text(max_size=8)),
    values=st.lists(st.floats(width=32)),
    step=INT64,
)
def test_check_message_accepts_what_protobuf_writes(tags: list[str], values: list[float], step: int) -> None:
    proto = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in zip(tags, values)])
    proto.value.add(tag="h").histo.bucket.extend(values)
    proto.value.add(tag="m").metadata.plugin_data.plugin_name = "scalars"
    event_file.check_message(proto.SerializeToString(), "Summary")
    event_file.check_message(Event(step=step, summary=proto).SerializeToString(), "Event")


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
    ours, theirs = histogram(values), tf_value.histo
    assert (list(ours.bucket_limit), list(ours.bucket)) == (list(theirs.bucket_limit), list(theirs.bucket))
    assert (ours.min, ours.max, ours.num) == (theirs.min, theirs.max, theirs.num)
    assert ours.sum == pytest.approx(theirs.sum, rel=1e-9, abs=1e-300)


@functools.cache
def _tf_histogram(tf: Any) -> tuple[Any, Any, Any]:
    """One session for every example: a placeholder and TF's own (C++) histogram summary of it."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, shape=[None])
        op = tf.compat.v1.summary.histogram("h", x)
    return tf.compat.v1.Session(graph=graph), x, op


def test_a_histogram_needs_an_element_and_counts_what_is_not_finite_at_the_ends() -> None:
    with pytest.raises(ValueError, match="'h' has no element"):
        histogram(np.zeros(0))
    histo = histogram(np.array([np.nan, np.inf, -np.inf, 1.0]))
    assert histo.num == 4 and sum(histo.bucket) == 4
    assert (histo.bucket_limit[0], histo.bucket[0]) == (-DBL_MAX, 1)
    assert (histo.bucket_limit[-1], histo.bucket[-1]) == (DBL_MAX, 2)
    assert math.isnan(histo.sum) and math.isnan(histo.min)


def test_runs_of_empty_buckets_are_written_as_one() -> None:
    histo = histogram(np.array([-3.0, 2.0, 2.0, 5e30]))
    assert list(histo.bucket) == [0, 1, 0, 2, 0, 1]  # gaps, each one entry, between the filled buckets
    assert histo.bucket_limit[-1] == DBL_MAX  # 5e30: beyond the last edge


def test_a_scalar_beyond_float32_is_an_infinity_as_protobuf_writes_it() -> None:
    for value, expected in ((1e39, math.inf), (-1e300, -math.inf), (3.4028235e38, 3.4028234663852886e38)):
        data = event_file.event(summary=event_file.summary([event_file.scalar_value("x", value)]))
        assert parse(data).summary.value[0].simple_value == expected


@pytest.mark.parametrize("step", [2**63, -(2**63) - 1, 2**64 + 5])
def test_a_step_beyond_int64_is_refused(step: int) -> None:
    with pytest.raises(ValueError, match="out of the int64 range"):
        event_file.event(step=step)


def test_event_files_opened_in_one_second_get_their_own_names(tmp_path: Path) -> None:
    files = [event_file.EventFile(str(tmp_path), suffix) for suffix in ("", "", "1", "11")]
    for file in files:
        file.close()
    assert len({file.path for file in files}) == 4
