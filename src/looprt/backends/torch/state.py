"""The kinds of state a torch program holds, and how each is copied, checked and restored.

=============  =====================================  ===============================
kind           live object                            its saved value
=============  =====================================  ===============================
module         ``nn.Module``                          its state dict on the CPU
optimizer      ``torch.optim.Optimizer``              its state dict on the CPU
stateful       anything with ``state_dict`` and       its state dict on the CPU
               ``load_state_dict`` (LR schedulers,
               ``GradScaler``, ...)
tensor         ``torch.Tensor``                       a CPU copy
generator      ``torch.Generator``                    its state (a uint8 tensor)
numpy_rng      ``numpy.random.Generator``             its bit generator's state
array          ``numpy.ndarray`` (the global step)    a CPU tensor, or an int if 0-d
value          anything else                          a deep copy
=============  =====================================  ===============================

Restoring is two passes: ``check`` raises (naming the state and the key)
before anything changes, then ``load`` sets the live object in place, so the
steps that hold references to it see the new values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from looprt.backends.torch.values import cpu_copy, to_numpy

__all__ = ["check", "kind_of", "load", "saved_value", "snapshot"]


def kind_of(value: Any) -> str:  # noqa: PLR0911 - one return per kind of value
    """Which row of the module docstring's table ``value`` falls in."""
    if isinstance(value, np.ndarray):
        return "array"
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, torch.nn.Module):
        return "module"
    if isinstance(value, torch.optim.Optimizer):
        return "optimizer"
    if isinstance(value, torch.Generator):
        return "generator"
    if isinstance(value, np.random.Generator):
        return "numpy_rng"
    if callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None)):
        return "stateful"
    return "value"


def snapshot(value: Any) -> Any:
    """A host copy of live state: what fetching it gives, and its initial value.

    Tensors and arrays come back as NumPy values (as TF gives a variable);
    modules, optimizers and other stateful objects as their state dicts on
    the CPU.
    """
    if type(value) is np.ndarray:  # the global step, on every run that fetches it
        return value[()] if value.ndim == 0 else value.copy()
    kind = kind_of(value)
    if kind == "tensor":
        return to_numpy(value)
    if kind == "array":
        return value[()] if value.ndim == 0 else value.copy()
    return saved_value(value)


def saved_value(value: Any, *, copy_tensors: bool = True) -> Any:
    """What a checkpoint holds for live state: tensors and plain values only.

    With ``copy_tensors=False`` tensors are the live ones (detached), not CPU
    copies: for a save that is written before the next step runs.
    """
    kind = kind_of(value)
    if kind in ("module", "optimizer", "stateful"):
        state = value.state_dict()
        return cpu_copy(state) if copy_tensors else state
    if kind == "tensor":
        return value.detach().to("cpu", copy=True) if copy_tensors else value.detach()
    if kind == "array":
        return value.item() if value.ndim == 0 else torch.from_numpy(value.copy())
    if kind == "generator":
        return value.get_state()
    if kind == "numpy_rng":
        return copy.deepcopy(value.bit_generator.state)
    return copy.deepcopy(value)


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


def _check_keys(name: str, live: Mapping[str, Any], saved: Any, what: str) -> None:
    if not isinstance(saved, Mapping):
        raise TypeError(f"state {name!r}: the value to restore is a {type(saved).__name__}, not a {what}")
    missing = [key for key in live if key not in saved]
    unexpected = [key for key in saved if key not in live]
    if missing or unexpected:
        raise KeyError(
            f"state {name!r} ({what}) does not match the value to restore: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )


def _check_module(name: str, module: torch.nn.Module, saved: Any) -> None:
    live = module.state_dict()
    _check_keys(name, live, saved, "module state dict")
    for key, tensor in live.items():
        want, got = _shape(tensor), _shape(saved[key])
        if want is not None and want != got:
            raise ValueError(
                f"state {name!r}: {key!r} has shape {list(want)} in the model, "
                f"{'no shape' if got is None else list(got)} in the value to restore"
            )


def _check_optimizer(name: str, optimizer: torch.optim.Optimizer, saved: Any) -> None:
    _check_keys(name, {"state": None, "param_groups": None}, saved, "optimizer state dict")
    groups = optimizer.param_groups
    saved_groups = saved["param_groups"]
    if len(saved_groups) != len(groups):
        raise ValueError(
            f"state {name!r}: the optimizer has {len(groups)} parameter groups, "
            f"the value to restore {len(saved_groups)}"
        )
    params: dict[Any, torch.Tensor] = {}
    for index, (group, saved_group) in enumerate(zip(groups, saved_groups)):  # noqa: B905 - equal lengths by construction
        ids = saved_group.get("params", ())
        if len(ids) != len(group["params"]):
            raise ValueError(
                f"state {name!r}: parameter group {index} has {len(group['params'])} parameters, "
                f"the value to restore {len(ids)}"
            )
        params.update(zip(ids, group["params"]))  # noqa: B905 - equal lengths by construction
    for param_id, entries in saved["state"].items():
        param = params.get(param_id)
        if param is None:
            raise KeyError(
                f"state {name!r}: the value to restore has state for unknown parameter {param_id!r}"
            )
        for key, value in entries.items():
            # Per-parameter buffers (exp_avg, momentum_buffer, ...) have the parameter's shape.
            shape = _shape(value)
            if shape and shape != tuple(param.shape):
                raise ValueError(
                    f"state {name!r}: {key!r} of parameter {param_id!r} has shape {list(shape)}; "
                    f"the parameter has {list(param.shape)}"
                )


def check(name: str, live: Any, saved: Any) -> None:
    """Raise if ``saved`` cannot be restored into ``live``; change nothing."""
    kind = kind_of(live)
    if kind == "module":
        _check_module(name, live, saved)
    elif kind == "optimizer":
        _check_optimizer(name, live, saved)
    elif kind == "stateful":
        _check_keys(name, live.state_dict(), saved, f"{type(live).__name__} state dict")
    elif kind in ("tensor", "array"):
        shape = _shape(saved) if not isinstance(saved, (int, float, bool)) else ()
        if shape != tuple(live.shape):
            raise ValueError(
                f"state {name!r} has shape {list(live.shape)}; the value to restore has "
                f"{'no shape' if shape is None else list(shape)}"
            )
    elif kind == "generator":
        if not isinstance(saved, torch.Tensor) or saved.shape != live.get_state().shape:
            raise ValueError(
                f"state {name!r}: the value to restore is not the state of a {live.device} generator"
            )
    elif kind == "numpy_rng":
        want = live.bit_generator.state.get("bit_generator")
        if not isinstance(saved, Mapping) or saved.get("bit_generator") != want:
            raise ValueError(f"state {name!r}: the value to restore is not the state of a {want} generator")


def load(live: Any, saved: Any) -> Any:
    """Set ``live`` from ``saved`` (already checked) in place; returns the live object.

    Only state of kind "value" is replaced rather than updated: the caller
    stores what this returns.
    """
    kind = kind_of(live)
    if kind == "module":
        live.load_state_dict(saved, strict=True)  # copies into the existing parameters
    elif kind in ("optimizer", "stateful"):
        # A copy: optimizers keep the tensors they are given, and would update ``saved``.
        live.load_state_dict(cpu_copy(saved))
    elif kind == "tensor":
        with torch.no_grad():
            live.copy_(torch.as_tensor(saved))
    elif kind == "array":
        live[...] = saved.numpy() if isinstance(saved, torch.Tensor) else np.asarray(saved)
    elif kind == "generator":
        live.set_state(saved)
    elif kind == "numpy_rng":
        live.bit_generator.state = copy.deepcopy(saved)
    else:
        return copy.deepcopy(saved)
    return live
