"""Finding backends by name: built-ins, registered ones, and entry points."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

__all__ = ["available_backends", "get_backend", "register_backend"]

ENTRY_POINT_GROUP = "looprt.backends"

_BUILTIN: dict[str, str] = {
    "numpy": "looprt.backends.numpy:NumpyBackend",
    "torch": "looprt.backends.torch:TorchBackend",
    "tensorflow": "looprt.backends.tensorflow:TensorFlowBackend",
    "jax": "looprt.backends.jax:JaxBackend",
}

_factories: dict[str, Callable[[], Any]] = {}
_instances: dict[str, Any] = {}


def register_backend(name: str, factory: Callable[[], Any]) -> None:
    """Make ``get_backend(name)`` return ``factory()`` (made once, on first use)."""
    _factories[name] = factory
    _instances.pop(name, None)


def _load(target: str) -> Callable[[], Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def _from_entry_points(name: str) -> Callable[[], Any] | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    return None


def available_backends() -> list[str]:
    """Names of every backend that ``get_backend`` can find."""
    names = set(_BUILTIN) | set(_factories)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get_backend(spec: Any) -> Any:
    """The backend named ``spec``, or ``spec`` itself if it is a backend object."""
    if not isinstance(spec, str):
        return spec
    backend = _instances.get(spec)
    if backend is not None:
        return backend
    factory = _factories.get(spec)
    if factory is None and spec in _BUILTIN:
        factory = _load(_BUILTIN[spec])
    if factory is None:
        factory = _from_entry_points(spec)
    if factory is None:
        raise ValueError(
            f"no backend named {spec!r}; available: {', '.join(available_backends())}. "
            f"Third-party backends register through the {ENTRY_POINT_GROUP!r} entry point group."
        )
    backend = _instances[spec] = factory()
    return backend
