"""Random number generator states: captured and set again, for checkpoints and input replay.

The process-wide generators are PyTorch's (CPU, and CUDA once CUDA is
initialized), NumPy's legacy global one and Python's ``random``. A captured
state holds only tensors and plain values, so it goes into a checkpoint that
``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["attached_generators", "capture", "capture_generators", "restore", "restore_generators"]

# Attributes that lead from a data loader to the torch.Generator objects that decide its order.
_GENERATOR_PATHS = (
    ("generator",),
    ("sampler", "generator"),
    ("batch_sampler", "sampler", "generator"),
    ("loader", "generator"),
    ("loader", "sampler", "generator"),
)


def capture() -> dict[str, Any]:
    """The state of every process-wide generator."""
    legacy: Any = np.random.get_state(legacy=True)  # a tuple: (name, keys, pos, has_gauss, cached)
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    # Asking for CUDA's state initializes CUDA; a process that never used it has none to keep.
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Set the process-wide generators from ``capture()``'s result (missing parts are left)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[: torch.cuda.device_count()])


def attached_generators(iterable: Any) -> dict[str, torch.Generator]:
    """The ``torch.Generator`` objects a data loader shuffles with, by attribute path."""
    found: dict[str, torch.Generator] = {}
    seen: set[int] = set()
    for path in _GENERATOR_PATHS:
        obj = iterable
        for attribute in path:
            obj = getattr(obj, attribute, None)
            if obj is None:
                break
        if isinstance(obj, torch.Generator) and id(obj) not in seen:
            seen.add(id(obj))
            found[".".join(path)] = obj
    return found


def capture_generators(iterable: Any) -> dict[str, torch.Tensor]:
    """The states of ``attached_generators(iterable)``, by attribute path."""
    return {path: generator.get_state() for path, generator in attached_generators(iterable).items()}


def restore_generators(iterable: Any, states: dict[str, Any]) -> None:
    """Set the generators of ``iterable`` from ``capture_generators``'s result."""
    generators = attached_generators(iterable)
    for path, state in states.items():
        generator = generators.get(path)
        if generator is not None:
            generator.set_state(state)
