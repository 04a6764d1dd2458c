"""TensorBoard event files: ``SummaryWriter`` and ``SummaryWriterCache``.

Events are encoded with tensorboardX's protos and record writer (imported on
first use, so ``import looprt`` stays light) and written synchronously: once
``flush()`` returns, everything added so far is on disk and readable by
TensorBoard while the writer stays open. (tensorboardX's own ``FileWriter``
queues events to a thread, and its ``flush()`` does not wait for the queue.)
Pending writes also reach the disk every ``flush_secs`` seconds, on
``close()``, and at interpreter exit.

``add_summary`` takes what a summary op produces: a serialized ``Summary``
proto (TF graph mode), a ``Summary`` proto object, or, for looprt programs, a
``{tag: value}`` dict whose one-element values are written as scalars and
larger arrays as histograms. ``SummaryWriterCache.get(logdir)`` gives one
shared writer per directory, as TF's ``FileWriterCache`` does.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["SummaryWriter", "SummaryWriterCache"]

logger = logging.getLogger("looprt")

_file_ids = itertools.count()


@functools.cache
def _histogram_bins() -> list[float]:
    """TensorBoard's default bucket edges: +-1e-12 growing by 10% up to 1e20, and 0."""
    edges: list[float] = []
    edge = 1e-12
    while edge < 1e20:
        edges.append(edge)
        edge *= 1.1
    return [-e for e in reversed(edges)] + [0.0] + edges


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
    ) -> None:
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(
                f"SummaryWriter logdir must be a path (str or os.PathLike), "
                f"got {type(logdir).__name__}"
            )
        self._logdir = os.fspath(logdir)
        self._flush_secs = flush_secs
        self._filename_suffix = filename_suffix
        self._clock = clock
        self._lock = threading.RLock()
        self._events: Any = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._last_flush = 0.0
        self._open()

    def _open(self) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.record_writer import directory_check

        directory_check(self._logdir)
        # pid and a per-process counter keep two writers of one directory (in one
        # second) from truncating each other's file.
        suffix = f".{os.getpid()}.{next(_file_ids)}{self._filename_suffix}"
        self._events = EventsWriter(os.path.join(self._logdir, "events"), suffix)
        self._finalizer = weakref.finalize(self, self._events.close)
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
        return self._events is None

    @property
    def file_name(self) -> str | None:
        """The path of the current event file (None once closed)."""
        return None if self._events is None else str(self._events._file_name)

    def add_event(self, event: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write a tensorboardX ``Event`` proto, stamping its step and wall time."""
        with self._lock:
            if self._events is None:
                logger.warning(
                    "Attempting to use a closed SummaryWriter (%s). The operation will be a "
                    "noop unless the SummaryWriter is explicitly reopened.",
                    self._logdir,
                )
                return
            event.wall_time = time.time() if walltime is None else walltime
            if step is not None:
                event.step = int(step)
            self._events.write_event(event)
            if self._clock() - self._last_flush >= self._flush_secs:
                self.flush()

    def add_scalar(self, tag: str, value: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write one scalar (anything with exactly one number) under ``tag``."""
        from tensorboardX.proto.summary_pb2 import Summary

        self._add_proto(Summary(value=[self._scalar_value(tag, _as_array(value))]), step, walltime)

    def add_histogram(self, tag: str, values: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write a histogram of ``values`` (any shape, at least one element) under ``tag``."""
        from tensorboardX.proto.summary_pb2 import Summary

        self._add_proto(Summary(value=[self._histogram_value(tag, _as_array(values))]), step, walltime)

    def add_summary(self, summary: Any, step: Any = None, walltime: float | None = None) -> None:
        """Write what a summary op gave: serialized ``Summary`` bytes, a proto, or ``{tag: value}``.

        In a dict, values with one element are scalars, larger arrays are
        histograms, and bytes are serialized ``Summary`` protos (whose own tags
        are kept); all go into one event.
        """
        self._add_proto(self._to_proto(summary), step, walltime)

    def add_session_log_start(self, step: Any = None, walltime: float | None = None) -> None:
        """Write a ``SessionLog`` START: TensorBoard drops older events at this step or later."""
        self._add_session_log("START", "", step, walltime)

    def add_session_log_checkpoint(self, path: str, step: Any = None, walltime: float | None = None) -> None:
        """Write a ``SessionLog`` CHECKPOINT naming the checkpoint saved at ``step``."""
        self._add_session_log("CHECKPOINT", os.fspath(path), step, walltime)

    def flush(self) -> None:
        """Put everything written so far on disk."""
        with self._lock:
            if self._events is not None:
                self._events.flush()
                self._last_flush = self._clock()

    def close(self) -> None:
        """Flush and close the event file. Idempotent."""
        with self._lock:
            if self._events is not None and self._finalizer is not None:
                self._finalizer()
            self._events = self._finalizer = None

    def reopen(self) -> None:
        """After ``close()``, continue in a new event file; otherwise do nothing."""
        with self._lock:
            if self._events is None:
                self._open()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SummaryWriter {self._logdir!r}{' (closed)' if self.closed else ''}>"

    # -- encoding --------------------------------------------------------------

    def _add_session_log(self, status: str, path: str, step: Any, walltime: float | None) -> None:
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        log = SessionLog(status=getattr(SessionLog, status), checkpoint_path=path)
        self.add_event(Event(session_log=log), step, walltime)

    def _add_proto(self, summary: Any, step: Any, walltime: float | None) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self.add_event(Event(summary=summary), step, walltime)

    def _to_proto(self, summary: Any) -> Any:
        from tensorboardX.proto.summary_pb2 import Summary

        if isinstance(summary, Summary):
            return summary
        if isinstance(summary, (bytes, bytearray, memoryview)):
            return Summary.FromString(bytes(summary))
        if isinstance(summary, Mapping):
            proto = Summary()
            for tag, value in summary.items():
                if isinstance(value, (bytes, bytearray, memoryview)):
                    proto.MergeFrom(Summary.FromString(bytes(value)))
                    continue
                array = _as_array(value)
                if array.size == 1:
                    proto.value.append(self._scalar_value(str(tag), array))
                else:
                    proto.value.append(self._histogram_value(str(tag), array))
            return proto
        serialize = getattr(summary, "SerializeToString", None)
        if callable(serialize):  # another library's Summary proto (TF's)
            return Summary.FromString(serialize())
        raise TypeError(
            f"add_summary takes serialized Summary bytes, a Summary proto or a {{tag: value}} "
            f"dict, got {type(summary).__name__}"
        )

    @staticmethod
    def _scalar_value(tag: str, array: np.ndarray[Any, Any]) -> Any:
        from tensorboardX.proto.summary_pb2 import Summary

        if array.size != 1:
            raise ValueError(f"scalar summary {tag!r} must have one element, got shape {array.shape}")
        return Summary.Value(tag=tag, simple_value=float(array.reshape(())))

    @staticmethod
    def _histogram_value(tag: str, array: np.ndarray[Any, Any]) -> Any:
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import make_histogram

        if array.size == 0:
            raise ValueError(f"histogram summary {tag!r} has no element")
        return Summary.Value(tag=tag, histo=make_histogram(array.astype(float), _histogram_bins()))


class SummaryWriterCache:
    """One shared ``SummaryWriter`` per directory, like TF's ``SummaryWriterCache``.

    Directories are compared by absolute path. ``clear()`` closes every cached
    writer (writers still held elsewhere then drop what they are given).
    """

    _cache: dict[str, SummaryWriter] = {}
    _lock = threading.RLock()

    @staticmethod
    def _key(logdir: str | os.PathLike[str]) -> str:
        path = os.fspath(logdir)
        return path if "://" in path else os.path.abspath(path)

    @staticmethod
    def get(logdir: str | os.PathLike[str]) -> SummaryWriter:
        """The writer for ``logdir``, created (with a new event file) on first use."""
        key = SummaryWriterCache._key(logdir)
        with SummaryWriterCache._lock:
            writer = SummaryWriterCache._cache.get(key)
            if writer is None or writer.closed:
                writer = SummaryWriterCache._cache[key] = SummaryWriter(key)
            return writer

    @staticmethod
    def clear() -> None:
        """Close and forget every cached writer."""
        with SummaryWriterCache._lock:
            writers = list(SummaryWriterCache._cache.values())
            SummaryWriterCache._cache = {}
        for writer in writers:
            writer.close()
