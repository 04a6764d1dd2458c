"""TensorBoard summaries: ``SummaryWriter`` and ``SummaryWriterCache``.

Events are encoded and framed by ``looprt.event_file`` (no framework, no
protobuf library: writing summaries imports neither) into a buffer, as TF's
writer does: once ``flush()`` returns, everything added so far is in the
file, readable by TensorBoard and safe from a kill of the process. Pending
writes also reach the file with the first write ``flush_secs`` seconds or
more after the last flush, on ``close()``, and at interpreter exit; and
``SummaryWriterCache.flush_all()`` (which ``CheckpointSaverHook`` calls
before every save) flushes every cached writer, so that every summary at or
before a checkpoint's step is on disk when that checkpoint commits.

``add_summary`` takes what a summary op produces: a serialized ``Summary``
proto (TF graph mode), a ``Summary`` proto object (TF's, TensorBoard's,
tensorboardX's), or, for looprt programs, a ``{tag: value}`` dict whose
one-element values are written as scalars and larger arrays as histograms.
``SummaryWriterCache.get(logdir)`` gives one shared writer per directory, as
TF's ``FileWriterCache`` does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from looprt import event_file

__all__ = ["SummaryWriter", "SummaryWriterCache"]

logger = logging.getLogger(__name__)

_SERIALIZED = (bytes, bytearray, memoryview)


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    """A host NumPy array of ``value`` (NumPy, Python numbers, framework tensors)."""
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
    if not isinstance(value, np.ndarray) and hasattr(value, "numpy"):  # torch, TF eager
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"a summary value must be numeric, got {type(value).__name__} of dtype {array.dtype}")
    return array


def _serialized(message: Any, what: str) -> bytes:
    """The bytes of a serialized ``what`` message (checked), or of a protobuf object's serialization."""
    if isinstance(message, _SERIALIZED):
        data = bytes(message)
        event_file.check_message(data, what)
        return data
    serialize = getattr(message, "SerializeToString", None)
    if callable(serialize):
        return bytes(serialize())
    raise TypeError(f"expected a serialized {what} or a {what} proto, got {type(message).__name__}")


class SummaryWriter:
    """Writes summaries and session logs to a new event file in ``logdir``.

    ``step`` arguments are global steps (any integer, NumPy ones included).
    After ``close()`` every ``add_*`` call is a no-op that logs a warning, as
    with TF's ``FileWriter``; ``reopen()`` starts a new event file.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        flush_secs: float = 120,
        filename_suffix: str = "",
        clock: Callable[[], float] = time.time,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(
                f"SummaryWriter logdir must be a path (str or os.PathLike), got {type(logdir).__name__}"
            )
        self._logdir = os.fspath(logdir)
        self._flush_secs = flush_secs
        self._filename_suffix = filename_suffix
        self._clock = clock
        self._storage_options = storage_options
        self._lock = threading.RLock()
        self._file: event_file.EventFile | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._last_flush = 0.0
        self._open()

    def _open(self) -> None:
        self._file = event_file.EventFile(self._logdir, self._filename_suffix, self._storage_options)
        self._finalizer = weakref.finalize(self, self._file.close)
        self._last_flush = self._clock()

    @property
    def logdir(self) -> str:
        """The directory the event file is in."""
        return self._logdir

    def get_logdir(self) -> str:
        """The directory the event file is in (TF's name)."""
        return self._logdir

    @property
    def closed(self) -> bool:
        return self._file is None

    @property
    def file_name(self) -> str | None:
        """The path of the current event file (None once closed)."""
        return None if self._file is None else self._file.path

    def add_event(self, event: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write an ``Event`` (serialized, or any library's proto), stamped with ``step`` and the time."""
        self._write(_serialized(event, "Event"), step, walltime)

    def _write(self, data: bytes, step: Any, walltime: float | None) -> None:
        """Write the serialized event ``data`` (checked, or made here), stamped."""
        with self._lock:
            if self._file is None:
                logger.warning(
                    "Attempting to use a closed SummaryWriter (%s). The operation will be a "
                    "noop unless the SummaryWriter is explicitly reopened.",
                    self._logdir,
                )
                return
            stamp = time.time() if walltime is None else walltime
            self._file.write(
                event_file.event(base=data, wall_time=stamp, step=None if step is None else int(step))
            )
            if self._clock() - self._last_flush >= self._flush_secs:
                self.flush()

    def add_scalar(self, tag: str, value: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write one scalar (anything with exactly one number) under ``tag``."""
        self._add_summary(event_file.summary([self._scalar_value(tag, _as_array(value))]), step, walltime)

    def add_histogram(self, tag: str, values: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write a histogram of ``values`` (any shape, at least one element) under ``tag``."""
        value = event_file.histogram_value(tag, _as_array(values))
        self._add_summary(event_file.summary([value]), step, walltime)

    def add_summary(self, summary: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write what a summary op gave: serialized ``Summary`` bytes, a proto, or ``{tag: value}``.

        In a dict, values with one element are scalars, larger arrays are
        histograms, and bytes are serialized ``Summary`` protos (whose own tags
        are kept); all go into one event.
        """
        self._add_summary(self._encode(summary), step, walltime)

    def add_session_log_start(self, step: Any = None, walltime: float | None = None) -> None:
        """Write a ``SessionLog`` START: TensorBoard drops older events at this step or later."""
        self._write(event_file.event(session_log=event_file.session_log("START")), step, walltime)

    def add_session_log_checkpoint(self, path: str, step: Any = None, walltime: float | None = None) -> None:
        """Write a ``SessionLog`` CHECKPOINT naming the checkpoint saved at ``step``."""
        log = event_file.session_log("CHECKPOINT", os.fspath(path))
        self._write(event_file.event(session_log=log), step, walltime)

    def flush(self, durable: bool = False) -> None:
        """Put everything written so far in the file (``durable``: and fsync it)."""
        with self._lock:
            if self._file is not None:
                self._file.flush(durable)
                self._last_flush = self._clock()

    def close(self) -> None:
        """Flush and close the event file. Idempotent; closed even if the last flush fails (which raises)."""
        with self._lock:
            try:
                if self._file is not None and self._finalizer is not None:
                    self._finalizer()
            finally:
                self._file = self._finalizer = None

    def reopen(self) -> None:
        """After ``close()``, continue in a new event file; otherwise do nothing."""
        with self._lock:
            if self._file is None:
                self._open()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SummaryWriter {self._logdir!r}{' (closed)' if self.closed else ''}>"

    # -- encoding --------------------------------------------------------------

    def _add_summary(self, summary: bytes, step: Any, walltime: float | None) -> None:
        self._write(event_file.event(summary=summary), step, walltime)

    def _encode(self, summary: Any) -> bytes:
        """A serialized ``Summary`` of what ``add_summary`` takes."""
        if isinstance(summary, Mapping):
            parts = []
            for tag, value in summary.items():
                if isinstance(value, _SERIALIZED):  # a serialized Summary: its values join this one
                    parts.append(_serialized(value, "Summary"))
                    continue
                array = _as_array(value)
                if array.size == 1:
                    parts.append(event_file.summary([self._scalar_value(str(tag), array)]))
                else:
                    parts.append(event_file.summary([event_file.histogram_value(str(tag), array)]))
            return b"".join(parts)
        if isinstance(summary, _SERIALIZED) or callable(getattr(summary, "SerializeToString", None)):
            return _serialized(summary, "Summary")
        raise TypeError(
            f"add_summary takes serialized Summary bytes, a Summary proto or a {{tag: value}} "
            f"dict, got {type(summary).__name__}"
        )

    @staticmethod
    def _scalar_value(tag: str, array: np.ndarray[Any, Any]) -> bytes:
        if array.size != 1:
            raise ValueError(f"scalar summary {tag!r} must have one element, got shape {array.shape}")
        return event_file.scalar_value(tag, float(array.reshape(())))


class SummaryWriterCache:
    """One shared ``SummaryWriter`` per directory, like TF's ``SummaryWriterCache``.

    Directories are compared by absolute path. ``clear()`` closes every cached
    writer (writers still held elsewhere then drop what they are given).
    """

    _cache: dict[str, SummaryWriter] = {}  # noqa: RUF012 - a class-level default, never mutated
    _options: dict[str, Mapping[str, Any]] = {}  # noqa: RUF012 - a class-level default, never mutated
    _lock = threading.RLock()

    @staticmethod
    def _key(logdir: str | os.PathLike[str]) -> str:
        path = os.fspath(logdir)
        return path.rstrip("/") if "://" in path else os.path.abspath(path)

    @staticmethod
    def get(
        logdir: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ) -> SummaryWriter:
        """The writer for ``logdir``, created (with a new event file) on first use.

        ``storage_options`` (a looprt extension, for a URL ``logdir``; see
        ``looprt.checkpoint.storage``) are remembered for ``logdir``: later
        calls without them, and writers made again after ``clear()``, use them.
        """
        key = SummaryWriterCache._key(logdir)
        with SummaryWriterCache._lock:
            if storage_options is not None:
                SummaryWriterCache._options[key] = dict(storage_options)
            writer = SummaryWriterCache._cache.get(key)
            if writer is None or writer.closed:
                writer = SummaryWriterCache._cache[key] = SummaryWriter(
                    key, storage_options=SummaryWriterCache._options.get(key)
                )
            return writer

    @staticmethod
    def flush_all(durable: bool = True) -> None:
        """Flush (and with ``durable``, fsync) every cached writer: what ``CheckpointSaverHook`` does
        before each save, so a checkpoint never commits ahead of the summaries of its steps.

        Every writer is flushed even when one fails; then the first error is
        raised, with a note for each other writer that failed (Python 3.11+).
        """
        with SummaryWriterCache._lock:
            writers = list(SummaryWriterCache._cache.values())
        _each(writers, lambda writer: writer.flush(durable), "flushing")

    @staticmethod
    def clear() -> None:
        """Close and forget every cached writer (each closed even when one fails, as in ``flush_all``)."""
        with SummaryWriterCache._lock:
            writers = list(SummaryWriterCache._cache.values())
            SummaryWriterCache._cache = {}
        _each(writers, SummaryWriter.close, "closing")


def _each(writers: list[SummaryWriter], action: Callable[[SummaryWriter], None], doing: str) -> None:
    """``action`` on every writer; then the first error, noting the others (where notes exist)."""
    errors: list[Exception] = []
    for writer in writers:
        try:
            action(writer)
        except Exception as e:  # noqa: BLE001 - raised below, once every writer has had its turn
            errors.append(e)
    if errors:
        first = errors[0]
        if hasattr(first, "add_note"):  # Python 3.11+
            for other in errors[1:]:
                first.add_note(f"{doing} another summary writer failed too: {type(other).__name__} {other}")
        raise first
