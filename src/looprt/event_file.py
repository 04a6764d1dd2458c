"""TensorBoard event files, written without a framework or a protobuf library.

An event file is a sequence of TFRecords (a little-endian uint64 length, its
masked CRC-32C, the data, the data's masked CRC-32C), each holding one
serialized ``Event`` protocol buffer; the first event names the file
version. This module encodes the few messages a summary writer needs
(``Event``, ``Summary`` with scalar and histogram values, ``SessionLog``)
straight into protobuf's wire format, and writes records to a file.

Messages serialized elsewhere (a TF summary op's bytes, a TF or TensorBoard
``Summary`` proto) are embedded as they are: a message field holds its
bytes, and appending fields to a serialized message merges them into it (a
repeated field gains entries, a singular scalar field takes the last value),
which is how ``event`` stamps a foreign event with its step and time.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import struct
import tempfile
import time
from collections.abc import Iterable
from typing import Any, BinaryIO

import google_crc32c
import numpy as np

from looprt.checkpoint.storage import Location, is_url

__all__ = [
    "FILE_VERSION",
    "SESSION_LOG_STATUS",
    "EventFile",
    "check_message",
    "crc32c",
    "default_edges",
    "event",
    "histogram_value",
    "record",
    "scalar_value",
    "session_log",
    "summary",
]

FILE_VERSION = "brain.Event:2"
SESSION_LOG_STATUS = {"STATUS_UNSPECIFIED": 0, "START": 1, "STOP": 2, "CHECKPOINT": 3}

# Wire types.
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_FIXED_SIZES = {_FIXED64: 8, _FIXED32: 4}
_UINT64 = (1 << 64) - 1
_DBL_MAX = float(np.finfo(np.float64).max)
_file_ids = itertools.count()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC-32C (Castagnoli) of ``data``, by ``google-crc32c`` (hardware-accelerated C)."""
    return int(google_crc32c.value(data if type(data) is bytes else bytes(data)))


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


# --- protobuf's wire format ----------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= _UINT64  # negative integers: two's complement in ten bytes, as int64 fields are
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _int64_field(field: int, value: int) -> bytes:
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} is out of the int64 range")
    return _key(field, _VARINT) + _varint(value)


def _double_field(field: int, value: float) -> bytes:
    return _key(field, _FIXED64) + struct.pack("<d", value)


def _float_field(field: int, value: float) -> bytes:
    # Rounded to float32 as a protobuf library does: beyond its range, an infinity.
    with np.errstate(over="ignore"):
        return _key(field, _FIXED32) + np.array(value, dtype="<f4").tobytes()


def _bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, _BYTES) + _varint(len(value)) + value


# What ``check_message`` looks into: per message, the fields that hold a message (by its
# name here; "message" is one whose fields are not known) or UTF-8 text. Any other field,
# or one of another wire type (which parsers keep as an unknown field), is checked for
# its shape only.
_SCHEMAS: dict[str, dict[int, str]] = {
    "Event": {3: "text", 5: "Summary", 6: "LogMessage", 7: "SessionLog", 8: "message", 10: "message"},
    "Summary": {1: "Value"},
    "Value": {1: "text", 4: "message", 5: "message", 6: "message", 7: "text", 8: "message", 9: "Metadata"},
    "Metadata": {1: "PluginData", 2: "text", 3: "text"},
    "PluginData": {1: "text"},
    "SessionLog": {2: "text", 3: "text"},
    "LogMessage": {2: "text"},
    "message": {},
}
_MAX_FIELD = (1 << 29) - 1


def check_message(data: bytes, message: str = "message") -> None:
    """Raise ``ValueError`` unless ``data`` parses as a serialized ``message``.

    ``message`` is ``"Event"``, ``"Summary"`` (then the fields that hold
    messages or text are checked in turn, as a protobuf parser reads them)
    or ``"message"``: any message, checked for its fields' shapes.
    """
    _check(memoryview(bytes(data)), message)


def _check(data: memoryview, message: str) -> None:
    schema = _SCHEMAS[message]
    position, end = 0, len(data)

    def varint() -> int:
        nonlocal position
        value = shift = 0
        while True:
            if position >= end or shift > 63:
                raise ValueError("not a serialized protocol buffer: a truncated or overlong varint")
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < end:
        key = varint()
        field, wire_type = key >> 3, key & 7
        if not 0 < field <= _MAX_FIELD or wire_type not in (_VARINT, _FIXED64, _BYTES, _FIXED32):
            raise ValueError(f"not a serialized protocol buffer: field {field}, wire type {wire_type}")
        if wire_type == _VARINT:
            varint()
            continue
        size = _FIXED_SIZES.get(wire_type) or varint()
        if position + size > end:
            raise ValueError("not a serialized protocol buffer: a field runs past the end")
        kind = schema.get(field) if wire_type == _BYTES else None
        if kind == "text":
            try:
                str(data[position : position + size], "utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"not a serialized {message}: field {field} is not UTF-8 text") from None
        elif kind is not None:
            _check(data[position : position + size], kind)
        position += size


# --- messages ------------------------------------------------------------------------------------


def scalar_value(tag: str, value: float) -> bytes:
    """A ``Summary.Value`` holding ``value`` as a float32 ``simple_value``."""
    return _bytes_field(1, tag.encode()) + _float_field(2, value)


@functools.cache
def default_edges() -> tuple[float, ...]:
    """TensorBoard's default bucket edges: +-1e-12 growing by 10% up to 1e20, and 0."""
    edges: list[float] = []
    edge = 1e-12
    while edge < 1e20:
        edges.append(edge)
        edge *= 1.1
    return (*(-e for e in reversed(edges)), 0.0, *edges)


def histogram_value(tag: str, values: Any, edges: Iterable[float] | None = None) -> bytes:
    """A ``Summary.Value`` holding a ``HistogramProto`` of ``values``, as TF's histogram summary makes it.

    The buckets end at ``edges`` (default: ``default_edges()``) and, outside
    them, at minus and plus the largest double; a value counts in the first
    bucket whose end is above it. Each run of empty buckets is written as
    one, ending where the run ends, so the proto holds the non-empty
    buckets and the gaps between them. Infinities count in the outermost
    buckets and NaN in the last (TF's summary op refuses both); min, max
    and sum then carry them.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ValueError(f"histogram summary {tag!r} has no element")
    limits = np.array([-_DBL_MAX, *(default_edges() if edges is None else edges), _DBL_MAX])
    index = np.minimum(np.searchsorted(limits, flat, side="right"), limits.size - 1)
    counts = np.bincount(index, minlength=limits.size).astype(np.float64)
    filled = counts > 0
    keep = filled | np.append(filled[1:], True)  # an empty bucket stays only at the end of its run
    with np.errstate(over="ignore", invalid="ignore"):
        total, squares = float(flat.sum()), float(flat.dot(flat))
    histogram = b"".join(
        [
            _double_field(1, float(flat.min())),
            _double_field(2, float(flat.max())),
            _double_field(3, float(flat.size)),
            _double_field(4, total),
            _double_field(5, squares),
            _bytes_field(6, limits[keep].astype("<f8").tobytes()),  # packed repeated doubles
            _bytes_field(7, counts[keep].astype("<f8").tobytes()),
        ]
    )
    return _bytes_field(1, tag.encode()) + _bytes_field(5, histogram)


def summary(values: Iterable[bytes]) -> bytes:
    """A ``Summary`` of serialized ``Summary.Value`` messages."""
    return b"".join(_bytes_field(1, value) for value in values)


def session_log(status: str, checkpoint_path: str = "") -> bytes:
    """A ``SessionLog`` with ``status`` (a name of ``SESSION_LOG_STATUS``) and a checkpoint path."""
    out = _int64_field(1, SESSION_LOG_STATUS[status])
    return out + _bytes_field(2, checkpoint_path.encode()) if checkpoint_path else out


def event(
    *,
    wall_time: float | None = None,
    step: int | None = None,
    file_version: str | None = None,
    graph_def: bytes | None = None,
    summary: bytes | None = None,
    session_log: bytes | None = None,
    base: bytes = b"",
) -> bytes:
    """A serialized ``Event``: ``base`` (a serialized event, or nothing) with the given fields set."""
    parts = [base]
    if wall_time is not None:
        parts.append(_double_field(1, wall_time))
    if step is not None:
        parts.append(_int64_field(2, step))
    if file_version is not None:
        parts.append(_bytes_field(3, file_version.encode()))
    if graph_def is not None:
        parts.append(_bytes_field(4, graph_def))
    if summary is not None:
        parts.append(_bytes_field(5, summary))
    if session_log is not None:
        parts.append(_bytes_field(7, session_log))
    return b"".join(parts)


class EventFile:
    """A new event file in ``logdir`` (created if needed), opened for appending records.

    Its name is ``events.out.tfevents.<seconds>.<host>.<pid>.<n><suffix>``
    (``n``, zero-padded to six digits, counts the files this process opened,
    so that files opened in one second sort, and TensorBoard reads them, in
    the order they were written), as TensorBoard looks for;
    it is created exclusively, so a file of another writer is never
    truncated. The file-version event is written first.

    ``logdir`` may be a URL (``s3://bucket/run``; see
    ``looprt.checkpoint.storage``): object stores cannot append, so the
    records go to a local spool file and every flush uploads the whole file
    in one request (as TF's S3 file system does): readers see every record
    up to the last flush, never a torn one.
    """

    def __init__(self, logdir: str, suffix: str = "", storage_options: Any = None) -> None:
        now = time.time()
        host, pid, n = socket.gethostname(), os.getpid(), next(_file_ids)
        name = f"events.out.tfevents.{int(now):010d}.{host}.{pid}.{n:06d}{suffix}"
        self._remote: Any = None
        if is_url(logdir):
            self._remote = Location(logdir, storage_options)
            self._remote_name = name
            self.path = self._remote.url_of(name)
            spool = tempfile.NamedTemporaryFile(prefix="looprt-events-", delete=False)  # noqa: SIM115
            self._spool = spool.name
            self._file: BinaryIO = spool  # type: ignore[assignment]
        else:
            os.makedirs(logdir, exist_ok=True)
            self.path = os.path.join(logdir, name)
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed by close()
        self.write(event(wall_time=now, file_version=FILE_VERSION))

    def write(self, serialized_event: bytes) -> None:
        """Append one serialized ``Event``."""
        self._file.write(record(serialized_event))

    def flush(self, durable: bool = False) -> None:
        """Hand everything written so far to the operating system (readable, and safe from a kill).

        ``durable``: also ``fsync`` it, so a power loss does not lose it either.
        """
        self._file.flush()
        if self._remote is not None:
            if not self._file.closed:
                self._remote.upload(self._spool, self._remote_name)
        elif durable:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush and close. Idempotent."""
        if self._remote is not None and not self._file.closed:
            self.flush()
            self._file.close()
            os.unlink(self._spool)
        self._file.close()
