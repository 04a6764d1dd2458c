"""``ProgramSession``: the raw session of the eager backends; runs a ``Program``.

One ``run`` evaluates a fetch structure in a fixed order:

1. state is read (host snapshots taken before any step runs, which is what
   TF's hooks assume of the global step);
2. every step needed by a fetched step or output runs once, in the order the
   steps were declared; each input it takes is resolved at most once per run
   (the fed value, else the next item of its iterable, else its default);
3. outputs and fetched inputs are converted to host values.

Inputs are never pulled for a run that fetches only state.

The commonest run, ``sess.run(train_step)`` with no feeds (one step, nothing
fetched), takes a short path: no per-run objects, no plan lookup when the
same handle was fetched last time, the global step counted in place. Every
Python frame saved there matters: a training step evicts the caches, so each
one costs about a microsecond after a real step (benchmarks/README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from looprt.backends.protocol import ProgramBackend
from looprt.errors import ClosedSessionError, FeedError
from looprt.program import Handle, Input, Output, Program, State, Step
from looprt.structure import FetchPlan, PlanCache

__all__ = ["ProgramSession"]


class _Resolved:
    """A plan's leaves, sorted by what evaluating them takes."""

    __slots__ = ("reads", "steps", "outputs", "inputs", "lone", "runner")

    def __init__(self, plan: FetchPlan, program: Program) -> None:
        self.reads: list[tuple[int, State]] = []
        self.outputs: list[tuple[int, Output]] = []
        self.inputs: list[tuple[int, Input]] = []
        steps: set[Step] = set()
        for position, leaf in enumerate(plan.leaves):
            handle = _handle_for(plan, position, leaf, program)
            if isinstance(handle, State):
                self.reads.append((position, handle))
            elif isinstance(handle, Step):
                steps.add(handle)
            elif isinstance(handle, Output):
                steps.add(handle.step)
                self.outputs.append((position, handle))
            else:
                self.inputs.append((position, handle))  # type: ignore[arg-type]
        self.steps = sorted(steps, key=lambda s: s.index)
        # The step of a run whose fetch is one step itself (a train op): its result is None.
        bare_step = plan.paths == ("",) and len(self.steps) == 1 and not self.outputs
        self.lone = self.steps[0] if bare_step else None
        self.runner: Callable[[], None] | None = None  # made by the session on first use


def _handle_for(plan: FetchPlan, position: int, leaf: Any, program: Program) -> Handle:
    if isinstance(leaf, Handle):
        if leaf.program is not program:
            raise plan.error(
                position,
                f"is {leaf!r}, which belongs to program {leaf.program.name!r}, "
                f"not to the session's program {program.name!r}",
            )
        return leaf
    if isinstance(leaf, str):
        handle = program.lookup(leaf)
        if handle is None:
            raise plan.error(
                position,
                f"names {leaf!r}, which program {program.name!r} does not have "
                f"(it has {', '.join(map(repr, program.handles))})",
            )
        return handle
    raise plan.error(
        position,
        f"is a {type(leaf).__name__} ({leaf!r:.60}), not a handle or a name of "
        f"program {program.name!r}",
    )


class _RunInputs:
    """Input values for one run: the fed ones, the others resolved on first use."""

    __slots__ = ("values", "backend")

    def __init__(self, values: dict[Input, Any], backend: Any) -> None:
        self.values = values  # starts as the run's (converted) feeds
        self.backend = backend

    def get(self, handle: Input) -> Any:
        values = self.values
        if handle in values:
            return values[handle]
        value = handle.pull() if handle.iterable is not None else _default(handle)
        value = values[handle] = self.backend.from_feed(value)
        return value


_NO_COUNTER = object()


def _default(handle: Input) -> Any:
    if handle.required:
        raise FeedError(
            f"input {handle.name!r} of {handle.program.name!r} must be fed: it has no "
            "default and no iterable"
        )
    return handle.default


def _counter_view(backend: Any, counter: Any) -> memoryview | None:
    """A memoryview to count ``counter`` through, where the backend counts it as NumPy does.

    That is the default counter (a 0-d int64 NumPy array) of a backend that
    keeps the default ``increment`` and ``incrementer``: counted through its
    buffer, about 15x cheaper than a NumPy ``+= 1`` and with the same result,
    so the counter still fetches and checkpoints as before.
    """
    if type(backend).increment is not ProgramBackend.increment:
        return None
    if getattr(type(backend), "incrementer", ProgramBackend.incrementer) is not ProgramBackend.incrementer:
        return None
    return _int64_scalar_view(counter)


def _int64_scalar_view(counter: Any) -> memoryview | None:
    """A writable memoryview of ``counter`` if it is a 0-d native int64 NumPy array, else None."""
    import numpy as np

    if type(counter) is not np.ndarray or counter.shape != () or counter.dtype != np.int64:
        return None
    view = counter.data
    # Only a native, writable int64 buffer ("l" or "q"; "<q" etc. name other byte orders).
    if view.readonly or view.format not in ("l", "q") or view.itemsize != 8:
        return None
    return view


def _incrementer(backend: Any, counter: Any) -> Callable[[], None]:
    """``backend.incrementer(counter)``, or ``increment`` for a backend without one."""
    incrementer = getattr(backend, "incrementer", None)
    if incrementer is not None:
        return incrementer(counter)  # type: ignore[no-any-return]
    return functools.partial(backend.increment, counter)


class ProgramSession:
    """Evaluates fetches of one ``Program`` on its backend.

    ``graph`` is the program (the eager stand-in for a TF graph). Running the
    session directly calls no hooks.
    """

    def __init__(self, program: Program, target: str = "", config: Any = None) -> None:
        self.program = program
        self.backend = program.backend
        self.target = target
        self.config = config
        self._plans = PlanCache()
        self._feed_keys: dict[Any, Input] = {}
        self._closed = False
        # The handle fetched by the last run, and what its plan resolved to: a loop that
        # runs one train op skips the plan lookup. Only handles (immutable) are kept.
        self._last_fetch: Any = None
        self._last_plan: FetchPlan | None = None
        # A backend whose from_feed is the identity is not called for pulled values.
        from_feed = self.backend.from_feed
        self._from_feed: Callable[[Any], Any] | None = (
            None if getattr(from_feed, "__func__", None) is ProgramBackend.from_feed else from_feed
        )
        # The global step's live counter and how to add one to it: a memoryview of a
        # NumPy counter (counted in place, no call) or the backend's function. Made
        # again if the counter object is ever replaced.
        self._counter: Any = _NO_COUNTER
        self._counter_view: memoryview | None = None
        self._add_one: Callable[[], None] | None = None

    @property
    def graph(self) -> Program:
        return self.program

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ProgramSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(
        self,
        fetches: Any,
        feed_dict: Mapping[Any, Any] | None = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        """Evaluate ``fetches`` (a structure of handles or names) and return host values."""
        if self._closed:
            raise ClosedSessionError("Attempted to use a closed Session.")
        if options is not None and not hasattr(options, "trace_level"):
            raise TypeError(
                f"options must be a RunOptions (looprt's or TF's), got {type(options).__name__}"
            )
        if fetches is self._last_fetch:
            plan: FetchPlan = self._last_plan  # type: ignore[assignment]
        else:
            plan = self._plan(fetches)
            if isinstance(fetches, Handle):
                self._last_fetch, self._last_plan = fetches, plan
        if plan.resolved.lone is None or feed_dict:
            return self._run_plan(plan, feed_dict)
        # The short path: one step, its inputs pulled or defaulted, nothing fetched.
        (plan.resolved.runner or self._runner(plan.resolved))()
        return None

    def _plan(self, fetches: Any) -> FetchPlan:
        """The plan of ``fetches``, its handles resolved against the program."""
        plan = self._plans.plan(fetches)
        if plan.resolved is None:
            plan.resolved = _Resolved(plan, self.program)
        return plan

    def lone_runner(self, fetches: Any) -> Callable[[], None] | None:
        """A function that does what ``run(fetches)`` does, for a train op fetched alone.

        None for any other fetch. Calling it is ``run(fetches)`` with no
        feeds or options, in one call: ``HookedSession`` uses it on runs that
        skip idle hooks.
        """
        if not isinstance(fetches, Handle):
            return None
        try:
            resolved: _Resolved = self._plan(fetches).resolved
        except Exception:  # noqa: BLE001 - a bad fetch is reported by the run itself
            return None
        if resolved.lone is None:
            return None
        return resolved.runner or self._runner(resolved)

    def _runner(self, resolved: _Resolved) -> Callable[[], None]:
        """Make (once per plan) the function that runs ``resolved.lone`` as ``run`` does.

        Straight-line code with everything it needs bound in advance: after a
        real training step each attribute lookup and call of Python costs
        several times what it does in a loop (benchmarks/README.md).
        """
        step: Step = resolved.lone  # type: ignore[assignment]
        namespace: dict[str, Any] = {
            "session": self,
            "fn": step.fn,
            "ClosedSessionError": ClosedSessionError,
            "ff": self._from_feed,
            "default": _default,
        }
        arguments = []
        for i, (param, handle) in enumerate(step.bindings):
            namespace[f"h{i}"] = handle
            if type(handle) is Input:
                value = f"h{i}.pull()" if handle.iterable is not None else f"default(h{i})"
                if self._from_feed is not None:
                    value = f"ff({value})"
            else:
                value = f"h{i}.value"
            arguments.append(f"{param}={value}")
        lines = [
            "def run():",
            "    if session._closed:",
            "        raise ClosedSessionError('Attempted to use a closed Session.')",
            "    try:",
            f"        fn({', '.join(arguments)})",
            "    except Exception as error:",
            "        session._raise_translated(error)",
            "        raise",
        ]
        if step.advance_global_step:
            self._bind_counter()
            namespace.update(state=self.program.global_step, counter=self._counter, view=self._counter_view)
            if self._counter_view is not None:
                lines += [
                    "    if state.value is counter:",
                    "        view[()] += 1",
                    "    else:",
                    "        session._advance()",
                ]
            else:
                lines.append("    session._advance()")
        exec("\n".join(lines) + "\n", namespace)  # noqa: S102 - parameter names and fixed text only
        runner: Callable[[], None] = namespace["run"]
        resolved.runner = runner
        return runner

    def global_step_view(self) -> tuple[State, Any, memoryview] | None:
        """The global step's handle, its live counter and a view reading it without a call.

        None unless the counter is a 0-d int64 NumPy array (the default).
        ``HookedSession`` reads the step before each run through it to skip
        idle hooks (``looprt.hooks.idle``); the view is valid while
        ``state.value`` is that counter.
        """
        state = self.program.global_step
        counter = state.value
        view = _int64_scalar_view(counter)
        return None if view is None else (state, counter, view)

    def advances_global_step_by_one(self, fetches: Any) -> bool:
        """Whether every run of ``fetches`` runs one step that adds one to the global step.

        True for a step, or one of its outputs, fetched alone (a handle or a
        name), when the step advances the global step and does not take it as
        an argument (so cannot change it).
        """
        if not isinstance(fetches, (Handle, str)):
            return False
        try:
            steps = self._plan(fetches).resolved.steps
        except Exception:  # noqa: BLE001 - a bad fetch is reported by the run itself
            return False
        if len(steps) != 1 or not steps[0].advance_global_step:
            return False
        step = steps[0]
        return all(handle is not self.program.global_step for _, handle in step.bindings)

    def _run_plan(self, plan: FetchPlan, feed_dict: Mapping[Any, Any] | None) -> Any:
        """Any run: reads, the steps needed, outputs and fetched inputs, host values."""
        resolved: _Resolved = plan.resolved
        backend = self.backend
        inputs = _RunInputs(self._feeds(feed_dict) if feed_dict else {}, backend)
        values: list[Any] = [None] * len(plan.leaves)
        for position, state in resolved.reads:
            values[position] = backend.snapshot(state.value)
        results: dict[Step, Mapping[str, Any]] = {}
        for step in resolved.steps:
            results[step] = self._run_step(step, inputs)
        for position, output in resolved.outputs:
            step_results = results[output.step]
            try:
                value = step_results[output.key]
            except KeyError:
                raise plan.error(
                    position,
                    f"asks for output {output.key!r} of step {output.step.name!r}, which it did "
                    f"not return (it returned {', '.join(map(repr, step_results)) or 'nothing'})",
                ) from None
            values[position] = backend.to_host(value)
        for position, handle in resolved.inputs:
            values[position] = backend.to_host(inputs.get(handle))
        return plan.rebuild(values)

    def _run_step(self, step: Step, inputs: _RunInputs) -> Mapping[str, Any]:
        kwargs: dict[str, Any] = {}
        for param, handle in step.bindings:
            if type(handle) is Input:
                kwargs[param] = inputs.get(handle)
            else:
                kwargs[param] = handle.value  # type: ignore[attr-defined]
        try:
            returned = step.fn(**kwargs)
        except Exception as error:
            self._raise_translated(error)
            raise
        # A dict is what most steps return: no need to ask Step.results to name it.
        results = returned if type(returned) is dict else step.results(returned)
        if step.advance_global_step:
            self._advance()
        return results

    def _raise_translated(self, error: Exception) -> None:
        """Raise the looprt error the backend says ``error`` means; return if none."""
        translated = self.backend.translate_error(error)
        if translated is not None and translated is not error:
            raise translated from error

    def _bind_counter(self) -> None:
        """Find how to count the live global step counter, if it is not the one known."""
        counter = self.program.global_step.value
        if counter is not self._counter:
            self._counter = counter
            self._counter_view = _counter_view(self.backend, counter)
            self._add_one = None if self._counter_view is not None else _incrementer(self.backend, counter)

    def _advance(self) -> None:
        """Add one to the global step."""
        self._bind_counter()
        if self._counter_view is not None:
            self._counter_view[()] += 1
        else:
            self._add_one()  # type: ignore[misc]

    def _feeds(self, feed_dict: Mapping[Any, Any]) -> dict[Input, Any]:
        if not isinstance(feed_dict, Mapping):
            raise FeedError(
                f"feed_dict must be a mapping of inputs (or their names) to values, "
                f"got {type(feed_dict).__name__}"
            )
        feeds: dict[Input, Any] = {}
        from_feed = self.backend.from_feed
        for key, value in feed_dict.items():
            try:
                handle = self._feed_keys.get(key)
            except TypeError:
                raise FeedError(f"feed key {key!r:.60} is unhashable; feed inputs or their names") from None
            if handle is None:
                handle = self._feed_keys[key] = self._feed_key(key)
            if handle in feeds:
                raise FeedError(f"input {handle.name!r} is fed twice in one feed_dict (as {key!r})")
            feeds[handle] = from_feed(value)
        return feeds

    def _feed_key(self, key: Any) -> Input:
        program = self.program
        handle = program.lookup(key) if isinstance(key, str) else key
        if isinstance(handle, Input) and handle.program is program:
            return handle
        if isinstance(handle, Handle):
            if handle.program is not program:
                raise FeedError(
                    f"feed key {key!r} belongs to program {handle.program.name!r}, not to "
                    f"the session's program {program.name!r}"
                )
            raise FeedError(
                f"feed key {key!r} is {handle.kind} {handle.name!r}; only inputs can be fed "
                f"(inputs of {program.name!r}: {', '.join(program.inputs) or 'none'})"
            )
        raise FeedError(
            f"feed key {key!r} names no input of program {program.name!r} "
            f"(inputs: {', '.join(program.inputs) or 'none'})"
        )

