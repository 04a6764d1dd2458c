"""Streaming metrics: reductions over the runs of an evaluation pass, written once for every backend.

A metric is a Keras-style object: ``update_state(...)`` folds in one batch,
``result()`` is the value so far, ``reset_state()`` starts over. It works on
host values (what a session returns: NumPy arrays and Python numbers;
PyTorch and TensorFlow tensors are converted), so the same ``Mean`` serves
NumPy, PyTorch, TensorFlow and JAX programs and TF graphs alike.

Bound to fetchables at construction (``Mean(evaluate.loss)``,
``Accuracy(labels=evaluate.labels, predictions=evaluate.logits)``), a metric
tells ``looprt.evaluate_once`` and ``looprt.MetricsHook`` what to fetch on every run: the
fetched values are passed to ``update_state`` by keyword.

>>> m = Mean()
>>> m.update_state([1.0, 2.0]); m.update_state(6.0)
>>> m.result()
3.0
>>> a = Accuracy()
>>> a.update_state(labels=[0, 1, 1], predictions=[[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
>>> round(a.result(), 4)
0.6667

The metrics reset at the start of each evaluation session (TF's metric
variables are local variables, initialized by every new session).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["Accuracy", "Mean", "Metric", "Reduce", "Sum", "results", "to_numpy"]


def to_numpy(value: Any) -> np.ndarray[Any, Any]:
    """``value`` as a host NumPy array (NumPy, Python numbers and lists, PyTorch, TF or JAX arrays)."""
    if hasattr(value, "detach"):  # torch: off the autograd graph and the device first
        value = value.detach().cpu()
    if not isinstance(value, np.ndarray) and hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def _weighted(values: Any, weights: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    array = to_numpy(values).astype(np.float64)
    if weights is None:
        return array, np.ones_like(array)
    try:
        return array, np.broadcast_to(to_numpy(weights).astype(np.float64), array.shape)
    except ValueError:
        raise ValueError(
            f"weights of shape {np.shape(to_numpy(weights))} do not broadcast to values of "
            f"shape {array.shape}"
        ) from None


def _scalar(array: np.ndarray[Any, Any]) -> Any:
    return float(array) if array.ndim == 0 else array


class Metric(abc.ABC):
    """A streaming reduction: ``update_state`` per batch, ``result``, ``reset_state``.

    ``fetches`` (keyword name -> fetchable, from the constructor) is what an
    evaluation fetches on every run and passes to ``update_state`` by
    keyword. Subclass for a custom reduction: implement the three methods.
    """

    def __init__(self, name: str | None = None, **fetches: Any) -> None:
        self.name = name or type(self).__name__.lower()
        self.fetches: dict[str, Any] = {key: value for key, value in fetches.items() if value is not None}
        self.reset_state()

    @abc.abstractmethod
    def update_state(self, *args: Any, **kwargs: Any) -> None:
        """Fold in one batch of host values."""

    @abc.abstractmethod
    def result(self) -> Any:
        """The value over every batch folded in since the last reset."""

    @abc.abstractmethod
    def reset_state(self) -> None:
        """Forget every batch folded in."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.result()!r}>"


class Sum(Metric):
    """The (weighted) sum of every element of ``values``."""

    total: float

    def __init__(self, values: Any = None, weights: Any = None, *, name: str | None = None) -> None:
        super().__init__(name, values=values, weights=weights)

    def update_state(self, values: Any, weights: Any = None) -> None:
        array, w = _weighted(values, weights)
        self.total += float((array * w).sum())

    def result(self) -> float:
        return self.total

    def reset_state(self) -> None:
        self.total = 0.0


class Mean(Metric):
    """The (weighted) mean of every element of ``values`` (``tf.compat.v1.metrics.mean``).

    0.0 before any element (TF's and Keras's ``div_no_nan``).
    """

    total: float
    count: float

    def __init__(self, values: Any = None, weights: Any = None, *, name: str | None = None) -> None:
        super().__init__(name, values=values, weights=weights)

    def update_state(self, values: Any, weights: Any = None) -> None:
        array, w = _weighted(values, weights)
        self.total += float((array * w).sum())
        self.count += float(w.sum())

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0.0


class Accuracy(Metric):
    """How often ``predictions`` equal ``labels`` (``tf.compat.v1.metrics.accuracy``).

    Predictions with one more axis than the labels are scores per class:
    their argmax over the last axis is the predicted class (Keras's sparse
    categorical accuracy).
    """

    total: float
    count: float

    def __init__(
        self, labels: Any = None, predictions: Any = None, weights: Any = None, *, name: str | None = None
    ) -> None:
        super().__init__(name, labels=labels, predictions=predictions, weights=weights)

    def update_state(self, labels: Any, predictions: Any, weights: Any = None) -> None:
        truth, guess = to_numpy(labels), to_numpy(predictions)
        if guess.ndim == truth.ndim + 1:
            guess = guess.argmax(axis=-1)
        if guess.shape != truth.shape:
            raise ValueError(
                f"accuracy: predictions of shape {guess.shape} do not match labels of shape {truth.shape}"
            )
        array, w = _weighted(truth == guess, weights)
        self.total += float((array * w).sum())
        self.count += float(w.sum())

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0.0


class Reduce(Metric):
    """A custom fold: ``state = fn(state, values)`` per batch, from ``initial``; ``result_fn(state)``.

    >>> peak = Reduce(lambda state, v: max(state, float(np.max(v))), initial=float("-inf"))
    >>> peak.update_state([1.0, 5.0]); peak.update_state(3.0)
    >>> peak.result()
    5.0
    """

    state: Any

    def __init__(
        self,
        fn: Callable[[Any, np.ndarray[Any, Any]], Any],
        values: Any = None,
        *,
        initial: Any = 0.0,
        result_fn: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> None:
        self._fn, self._initial, self._result_fn = fn, initial, result_fn
        super().__init__(name or getattr(fn, "__name__", "reduce"), values=values)

    def update_state(self, values: Any) -> None:
        self.state = self._fn(self.state, to_numpy(values))

    def result(self) -> Any:
        value = self.state if self._result_fn is None else self._result_fn(self.state)
        return _scalar(value) if isinstance(value, np.ndarray) else value

    def reset_state(self) -> None:
        self.state = self._initial


def results(metrics: Mapping[str, Metric]) -> dict[str, Any]:
    """Each metric's ``result()``, by name."""
    return {name: metric.result() for name, metric in metrics.items()}
