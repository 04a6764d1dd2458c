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

from looprt.errors import StateUpdateError
from looprt.program.handles import REQUIRED, Handle, Input, State, Step
from looprt.program.rebinding import check_rebinding

if TYPE_CHECKING:
    from looprt.backends.protocol import Backend

__all__ = ["GLOBAL_STEP", "Program", "get_default_program", "wrap"]

GLOBAL_STEP = "global_step"


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
        # The initial-value lifecycle (see ``initializer``).
        self._lock = threading.Lock()
        self.pristine = True  # no step has run and nothing was restored
        self.checkpointed = False
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

    def input(self, name: str, *, default: Any = REQUIRED, iterable: Iterable[Any] | None = None) -> Input:
        """Declare an input: fed, pulled from ``iterable`` once per run, or ``default``."""
        self._check_new(name)
        handle = Input(self, name, default, iterable)
        self._handles[name] = self.inputs[name] = handle
        return handle

    def state(self, name: str, value: Any) -> State:
        """Declare state: ``value`` is the live object the steps use and a checkpoint holds.

        No copy is taken here (see ``initializer`` for when one is).
        """
        self._check_new(name)
        return self._add_state(name, value)

    def _add_state(self, name: str, value: Any) -> State:
        handle = State(self, name, value)
        self._handles[name] = self.states[name] = handle
        return handle

    @overload
    def step(
        self,
        fn: Callable[..., Any],
        /,
        *,
        outputs: Sequence[str] | None = None,
        updates: Sequence[str | State] = (),
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
        updates: Sequence[str | State] = (),
        name: str | None = None,
        advance_global_step: bool = True,
    ) -> Callable[[Callable[..., Any]], Step]: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        outputs: Sequence[str] | None = None,
        updates: Sequence[str | State] = (),
        name: str | None = None,
        advance_global_step: bool = True,
    ) -> Step | Callable[[Callable[..., Any]], Step]:
        """Declare a step (usable as a decorator). Its parameters name inputs or state.

        ``outputs`` names what the step returns. ``updates`` names state the
        step replaces: it returns each new value under the state's name (in a
        mapping, or first in a returned sequence: ``updates`` then
        ``outputs``), and the session assigns it after the step.
        ``advance_global_step`` adds one to the global step each time the
        step runs. ``StateUpdateError`` if the function rebinds a state
        parameter it does not declare in ``updates`` (the state would never
        change).
        """
        for argument, names in (("outputs", outputs), ("updates", updates)):
            if isinstance(names, str):
                raise TypeError(
                    f"{argument} must be a sequence of names, got the string {names!r}; "
                    f"write {argument}=({names!r},)"
                )

        def declare(f: Callable[..., Any]) -> Step:
            step_name = name or str(getattr(f, "__name__", "step"))
            self._check_new(step_name)
            updated = self._updated_states(step_name, updates)
            declared = None if outputs is None else tuple(outputs)
            clash = sorted({s.name for s in updated} & set(declared or ()))
            if clash:
                raise ValueError(f"step {step_name!r}: {clash} are declared as both outputs and updates")
            bindings = self._bind(step_name, f, {s.name for s in updated})
            step = Step(self, step_name, f, bindings, declared, advance_global_step, len(self.steps), updated)
            self._handles[step_name] = self.steps[step_name] = step
            return step

        return declare(fn) if fn is not None else declare

    def _updated_states(self, step_name: str, updates: Sequence[str | State]) -> tuple[State, ...]:
        states: list[State] = []
        for item in updates:
            state = self.states.get(item) if isinstance(item, str) else item
            if not isinstance(state, State) or state.program is not self:
                raise ValueError(
                    f"step {step_name!r} updates {item!r}, which is not state of {self.name!r} "
                    f"(state: {', '.join(self.states)})"
                )
            if state is self.global_step:
                raise StateUpdateError(
                    f"step {step_name!r} cannot update the global step; it advances by one per "
                    "run of a step declared with advance_global_step=True"
                )
            if state not in states:
                states.append(state)
        return tuple(states)

    def _bind(self, step_name: str, fn: Callable[..., Any], updated: set[str]) -> list[tuple[str, Handle]]:
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
        params = {param for param, h in bindings if isinstance(h, State)}
        values = {name: state.value for name, state in self.states.items()}
        in_place = check_rebinding(step_name, fn, values, params, updated, self.backend.updatable_in_place)
        for name, site_and_operator in in_place.items():
            self.states[name].updated_in_place[step_name] = site_and_operator
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
        """A step that sets every piece of state to its initial value (TF's init op).

        The initial value is the live value until a step first runs. Only
        then, and only if no checkpoint of the program has been written or
        restored, is a copy kept (``State.initial``), for a later session
        that initializes again (a recovery with no checkpoint to restore);
        the copy is dropped when a checkpoint commits or is restored. A
        program whose copies were dropped cannot be initialized again once
        it has run: ``RuntimeError`` (restore a checkpoint instead).
        """
        if self._initializer is None:
            self._initializer = Step(self, "initializer", self._initialize, (), (), False, -1)
        return self._initializer

    def _initialize(self) -> None:
        if self.pristine:
            return  # nothing has run: the live values are the initial ones
        backend = self.backend
        for state in self.states.values():
            if state.initial is None:
                raise RuntimeError(
                    f"state {state.name!r} of {self.name!r} cannot be initialized again: its "
                    "initial value was not kept, since a checkpoint was written or restored "
                    "before the program first ran. Restore a checkpoint instead."
                )
            backend.assign(state, state.initial)

    def about_to_run(self) -> None:
        """Called by a session before the first step of the program runs (``pristine`` is True)."""
        with self._lock:
            if self.pristine:
                if not self.checkpointed:
                    snapshot = self.backend.snapshot
                    for state in self.states.values():
                        state.initial = snapshot(state.value)
                self.pristine = False

    def note_checkpoint(self, *, restored: bool = False) -> None:
        """A checkpoint of this program committed (or was ``restored``): the initial copies can go."""
        with self._lock:
            self.checkpointed = True
            if restored:
                self.pristine = False
            for state in self.states.values():
                state.initial = None

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
    updates: Sequence[str] = (),
    backend: str | Backend | None = None,
    name: str | None = None,
    advance_global_step: bool = True,
) -> Step:
    """Make a program from an existing step function; return its step.

    ``state`` names the objects a checkpoint holds (the function may close
    over them or take them by name). ``inputs`` is an iterable that feeds the
    function's first non-state parameter, or a mapping of parameter name to
    iterable (None: fed). Remaining parameters without defaults become fed
    inputs. ``outputs`` and ``updates`` are as in ``Program.step``: a
    functional step (``return params, opt_state, loss``) names its state in
    ``updates`` and its other results in ``outputs``. The backend is
    inferred from the state's types unless given.

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
    return program.step(
        fn, outputs=outputs, updates=updates, name=step_name, advance_global_step=advance_global_step
    )


def snapshot_copy(value: Any) -> Any:
    """A deep copy; the default snapshot of state for backends with no better one."""
    return copy.deepcopy(value)
