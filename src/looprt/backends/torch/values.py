"""Moving values between the host and the device: fetched results, feeds, and state copies.

* ``to_host``: what a caller gets for a fetched value. Tensors become NumPy
  arrays (0-d: NumPy scalars, as TF gives), copied, so a later in-place update
  of the tensor does not change what was fetched; dtypes NumPy lacks
  (bfloat16, float8) come back as float32. Lists, tuples and dicts are
  converted item by item; anything else is returned as it is.
* ``to_device``: what a step gets for a fed or pulled value. NumPy arrays of
  numbers become tensors (sharing memory where possible); tensors move to
  ``device`` when one is given, without waiting for the copy (a pinned source
  makes the copy truly asynchronous). Structures are converted item by item.
* ``cpu_copy``: an independent copy of a state dict on the CPU.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["cpu_copy", "feeder", "to_device", "to_host", "to_numpy"]

_PLAIN = (int, float, bool, str, bytes, complex, type(None))
_Tensor = torch.Tensor  # read on every pulled batch: a module global, not an attribute of torch
_NUMERIC_KINDS = frozenset("biufc")


def _map_structure(fn: Callable[[Any], Any], value: Any) -> Any:
    """``value`` with ``fn`` applied to each item of its lists, tuples and dicts (one level)."""
    if isinstance(value, dict):
        items = {key: fn(item) for key, item in value.items()}
        if type(value) is dict:
            return items
        try:
            return type(value)(items)
        except TypeError:  # a mapping type that cannot be built from a dict
            return items
    if isinstance(value, list):
        return [fn(item) for item in value]
    if isinstance(value, tuple):
        converted = [fn(item) for item in value]
        return type(value)(*converted) if hasattr(value, "_fields") else tuple(converted)
    return value


def to_numpy(tensor: torch.Tensor) -> Any:
    """A NumPy copy of ``tensor`` (a NumPy scalar when it is 0-d)."""
    t = tensor.detach()
    try:
        array = t.numpy(force=True)
    except TypeError:  # a dtype NumPy does not have
        array = (t.to(torch.complex64) if t.is_complex() else t.float()).numpy(force=True)
    if array.ndim == 0:
        return array[()]
    # A CPU tensor's array shares its memory; a fetched value must not change later.
    return array.copy() if t.device.type == "cpu" else array


def to_host(value: Any) -> Any:
    """A fetched value as the caller gets it (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        return to_numpy(value)
    if isinstance(value, (dict, list, tuple)):
        return _map_structure(to_host, value)
    return value


def to_device(value: Any, device: torch.device | None = None) -> Any:
    """A fed or pulled value as a step gets it (see the module docstring)."""
    if device is None and (type(value) is tuple or type(value) is list):
        # A DataLoader's usual batch, with nowhere to move it: once per step, kept cheap
        # (a loop, not all() over a generator, which costs a frame per item).
        for item in value:
            if type(item) is not _Tensor:
                break
        else:
            return value
    if isinstance(value, torch.Tensor):
        return value if device is None else value.to(device, non_blocking=True)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            return value
        tensor = torch.from_numpy(value) if value.flags.writeable else torch.tensor(value)
        return tensor if device is None else tensor.to(device, non_blocking=True)
    if isinstance(value, (dict, list, tuple)):
        return _map_structure(lambda item: to_device(item, device), value)
    return value


def feeder(device: torch.device | None) -> Callable[[Any], Any]:
    """``to_device`` for one ``device`` as a function of the value: what a session calls on every feed.

    Cheap after a training step has left the caches cold: no ``functools.partial``
    with a keyword (about 3 µs then, against 1 µs for this; benchmarks/bench_cold.py).
    """
    if device is None:
        return to_device

    def feed(value: Any) -> Any:
        return to_device(value, device)

    return feed


def cpu_copy(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    """A deep copy of ``value`` with every tensor copied to the CPU (dict metadata kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        out: dict[Any, Any] = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            out[key] = cpu_copy(item)
        metadata = getattr(value, "_metadata", None)  # module state dicts carry versions here
        if metadata is not None and isinstance(out, OrderedDict):
            out._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]
        return out
    if isinstance(value, list):
        return [cpu_copy(item) for item in value]
    if isinstance(value, tuple):
        items = [cpu_copy(item) for item in value]
        if hasattr(value, "_fields"):
            return type(value)(*items)
        return type(value)(items) if type(value) is not tuple else tuple(items)
    return copy.deepcopy(value)
