"""``Program``: the eager stand-in for a TF graph.

A program names what a session can fetch and feed:

* inputs (``Input``): fed through ``feed_dict``, pulled from an iterable, or
  taken from a default;
* state (``State``): the live objects a checkpoint holds (NumPy arrays,
  PyTorch modules and optimizers, ...), plus the global step;
* steps (``Step``): a function of inputs and state, run at most once per
  ``run``, whose named results are outputs (``Output``).

>>> import numpy as np
>>> prog = Program(backend="numpy")
>>> w = prog.state("w", np.zeros(3))
>>> x = prog.input("x")
>>> @prog.step(outputs=("loss",))
... def train(x, w):
...     w += x
...     return {"loss": float(w.sum())}
>>> train.loss.name
'train/loss'

A step function's parameters are bound by name to the program's inputs and
state. ``wrap`` makes a program from an existing step function in one line.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from looprt.errors import FetchError, OutOfRangeError

if TYPE_CHECKING:
    from looprt.backends.protocol import Backend

__all__ = [
    "Handle",
    "Input",
    "Output",
    "Program",
    "State",
    "Step",
    "get_default_program",
    "wrap",
]

_REQUIRED: Any = object()
GLOBAL_STEP = "global_step"


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

    __slots__ = ("default", "iterable", "_iterator", "_lock", "position")

    kind = "input"

    def __init__(
        self, program: Program, name: str, default: Any = _REQUIRED, iterable: Any = None
    ) -> None:
        super().__init__(program, name)
        self.default = default
        self.iterable = iterable
        self._iterator: Iterator[Any] | None = None
        self._lock = threading.Lock()
        self.position = 0  # items pulled so far, for resuming

    @property
    def required(self) -> bool:
        """Whether a run that needs this input fails unless it is fed."""
        return self.iterable is None and self.default is _REQUIRED

    def restart(self, iterator: Iterator[Any] | None, position: int) -> None:
        """Continue from ``iterator``, counting ``position`` items pulled so far.

        For restoring where an input stood (a backend that replays or reloads
        its iterable). ``iterator=None`` makes the next pull iterate the
        iterable afresh.
        """
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(f"input {self.name!r}: position must be an int >= 0, got {position!r}")
        with self._lock:
            self._iterator = iterator
            self.position = position

    def pull(self) -> Any:
        """The next item of the iterable; ``OutOfRangeError`` once it is exhausted."""
        with self._lock:
            if self._iterator is None:
                self._iterator = iter(self.iterable)
            try:
                item = next(self._iterator)
            except StopIteration:
                raise OutOfRangeError(
                    f"input {self.name!r} of {self.program.name!r} is exhausted "
                    f"after {self.position} items"
                ) from None
            self.position += 1
            return item


class State(Handle):
    """A named piece of state; ``value`` is the live object the steps use."""

    __slots__ = ("value", "initial")

    kind = "state"

    def __init__(self, program: Program, name: str, value: Any, initial: Any) -> None:
        super().__init__(program, name)
        self.value = value
        self.initial = initial


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

    Its outputs are ``step.<name>`` or ``step["name"]`` (``step.outputs`` maps
    every declared one). With ``outputs`` undeclared, any name is accepted and
    checked against what the function returns when it runs.
    """

    __slots__ = ("fn", "bindings", "declared", "advance_global_step", "_outputs", "index")

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
    ) -> None:
        super().__init__(program, name)
        self.fn = fn
        self.bindings = tuple(bindings)
        self.declared = declared
        self.advance_global_step = advance_global_step
        self._outputs: dict[str, Output] = {}
        self.index = index

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
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except FetchError as e:
            raise AttributeError(str(e)) from None

    @property
    def outputs(self) -> dict[str, Output]:
        """Every declared output by name (empty when none were declared)."""
        return {key: self[key] for key in self.declared or ()}

    def results(self, returned: Any) -> Mapping[str, Any]:
        """Name what ``fn`` returned: a mapping, or values in declared order."""
        if isinstance(returned, Mapping):
            return returned
        declared = self.declared
        if returned is None and not declared:
            return {}
        if declared is not None:
            if len(declared) == 1:
                return {declared[0]: returned}
            if isinstance(returned, (tuple, list)) and len(returned) == len(declared):
                return dict(zip(declared, returned))
        raise TypeError(
            f"step {self.name!r} returned {type(returned).__name__}; it must return a "
            f"mapping of outputs"
            + (f" or a sequence of {len(declared)} values for {declared}" if declared else "")
        )


_default_programs: list[Program] = []


def get_default_program() -> Program:
    """The program of the innermost ``with program.as_default():`` block."""
    if not _default_programs:
        raise ValueError(
            "no program given and no default program: pass Scaffold(program=prog) "
            "or enter `with prog.as_default():`"
        )
    return _default_programs[-1]


class Program:
    """The inputs, state and steps a session runs, on one backend.

    ``backend`` is a registered backend name ("numpy", "torch", "tensorflow")
    or a backend object. A finalized program (see ``Scaffold.finalize``)
    accepts no new inputs, state or steps.
    """

    def __init__(self, backend: str | Backend = "numpy", name: str = "program") -> None:
        if not isinstance(name, str):
            raise TypeError(f"Program name must be a str, got {type(name).__name__}")
        if not isinstance(backend, str) and not callable(getattr(backend, "new_global_step", None)):
            raise TypeError(
                f"Program backend must be a backend name or a Backend, "
                f"got {type(backend).__name__}"
            )
        self.name = name
        self._backend_spec = backend
        self._backend: Backend | None = None
        self._handles: dict[str, Handle] = {}
        self.inputs: dict[str, Input] = {}
        self.states: dict[str, State] = {}
        self.steps: dict[str, Step] = {}
        self.summaries: dict[str, Handle] = {}
        self.finalized = False
        self.ready = threading.Event()
        self._initializer: Step | None = None
        self.global_step = self._add_state(GLOBAL_STEP, self.backend.new_global_step())

    @property
    def backend(self) -> Backend:
        """The backend object that runs this program."""
        if self._backend is None:
            from looprt.backends.registry import get_backend

            self._backend = get_backend(self._backend_spec)
        return self._backend

    def __repr__(self) -> str:
        return f"<Program {self.name!r} on {self.backend.name}>"

    def _check_new(self, name: str) -> None:
        if self.finalized:
            raise RuntimeError(
                f"program {self.name!r} is finalized; add inputs, state and steps "
                "before the session is created"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"a name must be a non-empty string, got {name!r}")
        if name in self._handles:
            raise ValueError(f"program {self.name!r} already has a {self._handles[name].kind} named {name!r}")

    def input(self, name: str, *, default: Any = _REQUIRED, iterable: Iterable[Any] | None = None) -> Input:
        """Declare an input: fed, pulled from ``iterable`` once per run, or ``default``."""
        self._check_new(name)
        handle = Input(self, name, default, iterable)
        self._handles[name] = self.inputs[name] = handle
        return handle

    def state(self, name: str, value: Any) -> State:
        """Declare state: ``value`` is the live object; a snapshot of it is the initial value."""
        self._check_new(name)
        return self._add_state(name, value)

    def _add_state(self, name: str, value: Any) -> State:
        handle = State(self, name, value, self.backend.snapshot(value))
        self._handles[name] = self.states[name] = handle
        return handle

    @overload
    def step(
        self,
        fn: Callable[..., Any],
        /,
        *,
        outputs: Sequence[str] | None = None,
        name: str | None = None,
        advance_global_step: bool = True,
    ) -> Step: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        outputs: Sequence[str] | None = None,
        name: str | None = None,
        advance_global_step: bool = True,
    ) -> Callable[[Callable[..., Any]], Step]: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        outputs: Sequence[str] | None = None,
        name: str | None = None,
        advance_global_step: bool = True,
    ) -> Step | Callable[[Callable[..., Any]], Step]:
        """Declare a step (usable as a decorator). Its parameters name inputs or state.

        ``outputs`` names what the step returns; ``advance_global_step`` adds
        one to the global step each time the step runs.
        """

        if isinstance(outputs, str):
            raise TypeError(
                f"outputs must be a sequence of names, got the string {outputs!r}; "
                f"write outputs=({outputs!r},)"
            )

        def declare(f: Callable[..., Any]) -> Step:
            step_name = name or str(getattr(f, "__name__", "step"))
            self._check_new(step_name)
            bindings = self._bind(step_name, f)
            declared = None if outputs is None else tuple(outputs)
            step = Step(self, step_name, f, bindings, declared, advance_global_step, len(self.steps))
            self._handles[step_name] = self.steps[step_name] = step
            return step

        return declare(fn) if fn is not None else declare

    def _bind(self, step_name: str, fn: Callable[..., Any]) -> list[tuple[str, Handle]]:
        bindings: list[tuple[str, Handle]] = []
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            handle = self._handles.get(param.name)
            if isinstance(handle, (Input, State)):
                bindings.append((param.name, handle))
            elif param.default is param.empty:
                raise ValueError(
                    f"step {step_name!r} takes {param.name!r}, which is not an input or state "
                    f"of {self.name!r} (inputs: {', '.join(self.inputs) or 'none'}; "
                    f"state: {', '.join(self.states)})"
                )
        return bindings

    def summary(self, tag: str, handle: Handle | str) -> None:
        """Record ``handle`` under ``tag`` in the default summaries (a scalar or a histogram).

        ``SummarySaverHook`` and ``MonitoredTrainingSession`` write these every
        ``save_summaries_steps``; it is the program's stand-in for TF's merged
        summary op.
        """
        if self.finalized:
            raise RuntimeError(f"program {self.name!r} is finalized; declare summaries before the session")
        resolved = self.lookup(handle) if isinstance(handle, str) else handle
        if not isinstance(resolved, Handle) or resolved.program is not self:
            raise ValueError(f"summary {tag!r}: {handle!r} is not a handle of program {self.name!r}")
        self.summaries[tag] = resolved

    @property
    def handles(self) -> Mapping[str, Handle]:
        """Every input, state and step by name."""
        return self._handles

    def lookup(self, name: str) -> Handle | None:
        """The handle ``name`` names: an input, state, step, or ``"step/output"``."""
        handle = self._handles.get(name)
        if handle is None and "/" in name:
            step_name, _, key = name.rpartition("/")
            step = self.steps.get(step_name)
            if step is not None and (step.declared is None or key in step.declared):
                return step[key]
        return handle

    @property
    def initializer(self) -> Step:
        """A step that sets every piece of state to its initial value (TF's init op)."""
        if self._initializer is None:
            backend = self.backend
            states = self.states

            def initialize() -> None:
                for state in states.values():
                    backend.assign(state, state.initial)

            self._initializer = Step(self, "initializer", initialize, (), (), False, -1)
        return self._initializer

    def finalize(self) -> None:
        """Accept no new inputs, state or steps from now on."""
        self.finalized = True

    def unfinalize(self) -> None:
        self.finalized = False

    @contextlib.contextmanager
    def as_default(self) -> Iterator[Program]:
        """Make this the program a ``Scaffold()`` without one uses."""
        _default_programs.append(self)
        try:
            yield self
        finally:
            _default_programs.remove(self)


def _infer_backend(objects: Iterable[Any]) -> str:
    for obj in objects:
        root = type(obj).__module__.partition(".")[0]
        if root == "torch":
            return "torch"
        if root in ("tensorflow", "keras", "tf_keras"):
            return "tensorflow"
    return "numpy"


def wrap(
    fn: Callable[..., Any],
    *,
    state: Mapping[str, Any] | None = None,
    inputs: Iterable[Any] | Mapping[str, Iterable[Any] | None] | None = None,
    outputs: Sequence[str] | None = None,
    backend: str | Backend | None = None,
    name: str | None = None,
    advance_global_step: bool = True,
) -> Step:
    """Make a program from an existing step function; return its step.

    ``state`` names the objects a checkpoint holds (the function may close
    over them or take them by name). ``inputs`` is an iterable that feeds the
    function's first non-state parameter, or a mapping of parameter name to
    iterable (None: fed). Remaining parameters without defaults become fed
    inputs. The backend is inferred from the state's types unless given.

    >>> step = wrap(lambda batch: {"double": 2 * batch}, inputs=[1, 2, 3])
    >>> step.program.inputs["batch"].iterable
    [1, 2, 3]
    """
    if state is not None and not isinstance(state, Mapping):
        raise TypeError(f"wrap(state=...) must be a mapping of name to object, got {type(state).__name__}")
    if inputs is not None and not isinstance(inputs, (Mapping, Iterable)):
        raise TypeError(f"wrap(inputs=...) must be an iterable or a mapping, got {type(inputs).__name__}")
    state = dict(state or {})
    fn_name: str = getattr(fn, "__name__", "program")
    program = Program(backend or _infer_backend(state.values()), name=name or fn_name)
    for key, value in state.items():
        program.state(key, value)
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in program.handles
    ]
    sources: dict[str, Iterable[Any] | None]
    if inputs is None:
        sources = {}
    elif isinstance(inputs, Mapping):
        sources = dict(inputs)
    else:
        if not params:
            raise ValueError(f"{fn!r} takes no parameter that the inputs could feed")
        sources = {params[0].name: inputs}
    for key, iterable in sources.items():
        program.input(key, iterable=iterable)
    for p in params:
        if p.name not in program.handles and p.default is p.empty:
            program.input(p.name)
    step_name = fn_name if fn_name.isidentifier() and fn_name not in program.handles else "step"
    return program.step(fn, outputs=outputs, name=step_name, advance_global_step=advance_global_step)


def snapshot_copy(value: Any) -> Any:
    """A deep copy; the default snapshot of state for backends with no better one."""
    return copy.deepcopy(value)
