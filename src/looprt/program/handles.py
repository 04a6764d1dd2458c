"""The handles of a program: what a session can fetch and feed.

* ``Input``: fed through ``feed_dict``, pulled from an iterable, or a default;
* ``State``: a live object a checkpoint holds;
* ``Step``: a function of inputs and state, run at most once per ``run``;
* ``Output``: one named result of a step (fetching it runs the step).

A step changes state in place (a module, an optimizer, an array written
into) or functionally: it names the state in ``updates`` and returns new
values for it, which the session assigns after the step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from looprt.errors import FetchError, OutOfRangeError

if TYPE_CHECKING:
    from looprt.program.program import Program

__all__ = ["REQUIRED", "Handle", "Input", "Output", "State", "Step"]

REQUIRED: Any = object()  # an input's default when it has none


class Handle:
    """Something a session can fetch: an input, state, a step or a step's output."""

    __slots__ = ("program", "name")

    kind = "handle"

    def __init__(self, program: Program, name: str) -> None:
        self.program = program
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of {self.program.name!r}>"


class Input(Handle):
    """A named input: fed, pulled from ``iterable`` (once per run), or ``default``."""

    __slots__ = ("default", "iterable", "_iterator", "position")

    kind = "input"

    def __init__(self, program: Program, name: str, default: Any = REQUIRED, iterable: Any = None) -> None:
        super().__init__(program, name)
        self.default = default
        self.iterable = iterable
        self._iterator: Iterator[Any] | None = None
        self.position = 0  # items pulled so far, for resuming

    @property
    def required(self) -> bool:
        """Whether a run that needs this input fails unless it is fed."""
        return self.iterable is None and self.default is REQUIRED

    def restart(self, iterator: Iterator[Any] | None, position: int) -> None:
        """Continue from ``iterator``, counting ``position`` items pulled so far.

        For restoring where an input stood (a backend that replays or reloads
        its iterable). ``iterator=None`` makes the next pull iterate the
        iterable afresh.
        """
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"input {self.name!r}: position must be an int >= 0, got {position!r}")
        self._iterator = iterator
        self.position = position

    def pull(self) -> Any:
        """The next item of the iterable; ``OutOfRangeError`` once it is exhausted.

        Not serialised: like the iterator it draws from, an input is pulled
        by one thread at a time (the thread that runs the sessions of its
        program). A lock here cost several microseconds a run after a real
        training step (benchmarks/bench_cold.py).
        """
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = iter(self.iterable)
        try:
            item = next(iterator)
        except StopIteration:
            raise OutOfRangeError(
                f"input {self.name!r} of {self.program.name!r} is exhausted after {self.position} items"
            ) from None
        self.position += 1
        return item


class State(Handle):
    """A named piece of state; ``value`` is the live object the steps use.

    ``initial`` is a copy of the value the state is initialized with, taken
    only while a later session could need it (see ``Program.initializer``);
    None when no copy is held. ``updated_in_place`` maps each step that
    changes the state with an augmented assignment to where it does and the
    operator (``("`w += g` (line 12)", "+=")``): a functional update must
    keep such state a value that changes in place.
    """

    __slots__ = ("value", "initial", "updated_in_place")

    kind = "state"

    def __init__(self, program: Program, name: str, value: Any) -> None:
        super().__init__(program, name)
        self.value = value
        self.initial: Any = None
        self.updated_in_place: dict[str, tuple[str, str]] = {}


# Whether values of a type are mappings, by type: ``isinstance(x, Mapping)`` goes through
# the ABC's caches, about 14 us for a step's bare value right after a training step
# (benchmarks/bench_cold.py); a dict lookup by type costs a fraction of that. A type
# registered with ``Mapping`` after a step has returned it is not seen as one.
_MAPPING_TYPES: dict[type, bool] = {}


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    kind = type(value)
    known = _MAPPING_TYPES.get(kind)
    if known is None:
        known = isinstance(value, Mapping)
        if len(_MAPPING_TYPES) < 256:  # bounded: types made on the fly are not all kept
            _MAPPING_TYPES[kind] = known
    return known


def _takes_in_order(fn: Callable[..., Any], bindings: Sequence[tuple[str, Handle]]) -> bool:
    """Whether the bound parameters are ``fn``'s first ones, in order, each positional."""
    if not bindings:
        return True
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read: pass by name
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return len(bindings) <= len(params) and all(
        param.name == name and param.kind in positional for (name, _), param in zip(bindings, params)  # noqa: B905 - equal lengths by construction
    )


class Output(Handle):
    """One named result of a step; fetching it runs the step."""

    __slots__ = ("step", "key")

    kind = "output"

    def __init__(self, step: Step, key: str) -> None:
        super().__init__(step.program, f"{step.name}/{key}")
        self.step = step
        self.key = key


class Step(Handle):
    """A step operation; fetching it runs ``fn`` and gives None, like a TF op.

    Its declared outputs are ``step.<name>`` (``step.outputs`` maps every
    one); ``step["name"]`` also reaches an output of a step that declared
    none, checked against what the function returns when it runs.
    ``updates`` are the state handles the step assigns from its results.
    """

    __slots__ = (
        "fn",
        "bindings",
        "declared",
        "updates",
        "advance_global_step",
        "_outputs",
        "index",
        "_names",
        "keywords",
    )

    kind = "step"

    def __init__(
        self,
        program: Program,
        name: str,
        fn: Callable[..., Any],
        bindings: Sequence[tuple[str, Handle]],
        declared: tuple[str, ...] | None,
        advance_global_step: bool,
        index: int,
        updates: Sequence[State] = (),
    ) -> None:
        super().__init__(program, name)
        self.fn = fn
        self.bindings = tuple(bindings)
        self.declared = declared
        self.updates = tuple(updates)
        # What a step returning values rather than a mapping names, in order (see results).
        self._names = (*(state.name for state in self.updates), *(declared or ()))
        self.advance_global_step = advance_global_step
        self._outputs: dict[str, Output] = {}
        self.index = index
        # How a session passes the bound values: positionally (None), or by these names.
        self.keywords: tuple[str, ...] | None = (
            None if _takes_in_order(fn, self.bindings) else tuple(param for param, _ in self.bindings)
        )

    def __getitem__(self, key: str) -> Output:
        output = self._outputs.get(key)
        if output is None:
            if self.declared is not None and key not in self.declared:
                raise FetchError(
                    f"step {self.name!r} has no output {key!r}; "
                    f"its outputs are {', '.join(map(repr, self.declared)) or 'none'}"
                )
            output = self._outputs[key] = Output(self, key)
        return output

    def __getattr__(self, key: str) -> Output:
        # Only declared outputs: a typo must not become a handle that fails a run later.
        if key.startswith("_") or self.declared is None or key not in self.declared:
            if key.startswith("_"):
                raise AttributeError(key)
            declared = ", ".join(map(repr, self.declared or ()))
            hint = (
                f"its declared outputs are {declared}"
                if declared
                else "it declares no outputs (declare outputs=(...) or write step[name])"
            )
            raise AttributeError(f"step {self.name!r} has no attribute or output {key!r}; {hint}")
        return self[key]

    @property
    def outputs(self) -> dict[str, Output]:
        """Every declared output by name (empty when none were declared)."""
        return {key: self[key] for key in self.declared or ()}

    def results(self, returned: Any) -> Mapping[str, Any]:
        """Name what ``fn`` returned: a mapping, or values for ``updates`` then ``outputs`` in order."""
        if type(returned) is dict:
            return returned
        names = self._names
        if returned is None and not names:
            return {}
        if _is_mapping(returned):
            return returned
        if len(names) == 1:
            return {names[0]: returned}
        if names and isinstance(returned, (tuple, list)) and len(returned) == len(names):
            return dict(zip(names, returned))  # noqa: B905 - equal lengths by construction
        expected = f" or a sequence of {len(names)} values for {names}" if names else ""
        raise TypeError(
            f"step {self.name!r} returned {type(returned).__name__}; it must return a "
            f"mapping of outputs{expected}"
        )
