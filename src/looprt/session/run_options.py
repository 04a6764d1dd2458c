"""Run options and run metadata, and how hooks' options combine.

``RunOptions`` mirrors the fields of TF's ``RunOptions`` that hooks use;
``RunMetadata`` is where a backend reports what a traced run did. When several
hooks ask for options in one run they are merged: numeric fields take the
maximum, flags are or-ed. The merge works on TF's protobufs too, field by
field, so TF's own hooks can pass their options through looprt unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["RunMetadata", "RunOptions", "merge_run_options"]


@dataclasses.dataclass
class RunOptions:
    """Per-run options a hook may request; ``trace_level > 0`` asks for a trace."""

    NO_TRACE = 0
    SOFTWARE_TRACE = 1
    HARDWARE_TRACE = 2
    FULL_TRACE = 3

    trace_level: int = 0
    timeout_in_ms: int = 0
    inter_op_thread_pool: int = 0
    output_partition_graphs: bool = False
    report_tensor_allocations_upon_oom: bool = False


@dataclasses.dataclass
class RunMetadata:
    """What a traced run reports; ``step_stats`` is the backend's trace, if any."""

    step_stats: Any = None
    partition_graphs: list[Any] = dataclasses.field(default_factory=list)


_MAX_FIELDS = ("trace_level", "timeout_in_ms", "inter_op_thread_pool")
_OR_FIELDS = ("output_partition_graphs", "report_tensor_allocations_upon_oom")


def merge_run_options(options: Any, incoming: Any) -> None:
    """Merge ``incoming`` into ``options`` in place: max of numbers, or of flags.

    Works on ``RunOptions`` and on TF's ``RunOptions`` protobuf alike; fields
    one side lacks are left alone.
    """
    for name in _MAX_FIELDS:
        if hasattr(options, name) and hasattr(incoming, name):
            setattr(options, name, max(getattr(options, name), getattr(incoming, name)))
    for name in _OR_FIELDS:
        if hasattr(options, name) and hasattr(incoming, name):
            setattr(options, name, bool(getattr(options, name) or getattr(incoming, name)))
    debug, incoming_debug = getattr(options, "debug_options", None), getattr(incoming, "debug_options", None)
    if debug is not None and incoming_debug is not None:
        debug.debug_tensor_watch_opts.extend(incoming_debug.debug_tensor_watch_opts)
        debug.reset_disk_byte_usage = debug.reset_disk_byte_usage or incoming_debug.reset_disk_byte_usage
