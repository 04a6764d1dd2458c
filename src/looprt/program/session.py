"""``ProgramSession``: the raw session of the eager backends; runs a ``Program``.

One ``run`` evaluates a fetch structure in a fixed order:

1. state is read (host snapshots taken before any step runs, which is what
   TF's hooks assume of the global step);
2. every step needed by a fetched step or output runs once, in the order the
   steps were declared; each input it takes is resolved at most once per run
   (the fed value, else the next item of its iterable, else its default);
3. outputs and fetched inputs are converted to host values.

Inputs are never pulled for a run that fetches only state.

After a step runs, the state it declares in ``updates`` is assigned from its
results, and the global step advances if the step says so. A run that fails
part way keeps what happened before the failure (state changed in place or
assigned, global-step advances, input pulls).

The session reads the global step on the host without a run
(``global_step_value``), so hooks decide their triggers without fetching it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from looprt.errors import ClosedSessionError, FeedError, FetchError, TrainingEndedError
from looprt.program.handles import Handle, Input, Output, State, Step
from looprt.program.program import Program
from looprt.program.rebinding import check_in_place, refuse_strays, stray_names
from looprt.structure import FetchPlan, PlanCache

__all__ = ["ProgramSession"]


class _Resolved:
    """A plan's leaves sorted by what evaluating them takes: what a run reads, once per plan."""

    __slots__ = ("plan", "reads", "steps", "outputs", "inputs", "trains", "calls", "no_values")

    def __init__(self, plan: FetchPlan, program: Program) -> None:
        self.plan = plan
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
        # The first step that advances the global step, which a run after end() refuses.
        self.trains = next((s for s in self.steps if s.advance_global_step), None)
        # Per step, all a run reads of it: (step, its function, its arguments as (input or
        # None, state or None), the names they are passed by (None: in order), the state it
        # updates, whether it advances the global step, the names its result may not hold).
        self.calls = [
            (
                step,
                step.fn,
                _arguments(step),
                step.keywords,
                step.updates,
                step.advance_global_step,
                stray_names(step, program),
            )
            for step in self.steps
        ]
        # A fetch of steps alone (a train op): the result is None, no value is converted.
        fetches_values = bool(self.reads or self.outputs or self.inputs)
        self.no_values = not fetches_values and plan.rebuild([None] * len(plan.leaves)) is None


def _arguments(step: Step) -> tuple[tuple[Input | None, State | None], ...]:
    """Each bound parameter's source, in order: (input, None) or (None, state)."""
    return tuple(
        (handle, None) if type(handle) is Input else (None, handle)  # type: ignore[misc]
        for _, handle in step.bindings
    )


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


def _resolve(handle: Input, values: dict[Input, Any], from_feed: Callable[[Any], Any] | None) -> Any:
    """An input's value in a run that has not resolved it yet: the next item, or the default."""
    value = handle.pull() if handle.iterable is not None else _default(handle)
    if from_feed is not None:
        value = from_feed(value)
    values[handle] = value
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
    """``backend.counter_view(counter)``, or None for a backend without one."""
    view = getattr(backend, "counter_view", None)
    return None if view is None else view(counter)


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
        self._ended = False
        # A subclass's wrapper of every run while it needs one (it sets this to None
        # around its own call of run): one attribute read a run, no extra frame after.
        self.run_through: Callable[..., Any] | None = None
        # The handle fetched by the last run and its resolved plan: a loop that runs one
        # train op skips the plan lookup. Only handles (immutable) are kept.
        self._last_fetch: Any = None
        self._last_resolved: _Resolved | None = None
        self._may_be_pristine = True  # until a run sees the program has run
        # How pulled and default input values become what a step gets; None: as they are.
        converter = getattr(self.backend, "feed_converter", None)
        self._from_feed: Callable[[Any], Any] | None = (
            self.backend.from_feed if converter is None else converter()
        )
        # The global step's live counter and how to add one to it: a memoryview of a
        # NumPy counter (counted in place, no call) or the backend's function. Made
        # again if the counter object is ever replaced.
        self._global_step = program.global_step
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

    def end_training(self) -> None:
        """From now on, refuse runs that would run a step advancing the global step.

        ``MonitoredSession`` calls it before the hooks' ``end``: fetching a
        training step's output there would train one step past the end
        (``TrainingEndedError``). State and steps declared with
        ``advance_global_step=False`` (evaluation steps) can still be fetched.
        """
        self._ended = True

    def __enter__(self) -> ProgramSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def global_step_value(self) -> int | None:
        """The global step on the host, read without a run; None if that needs the device.

        A number where the counter is the default (a 0-d int64 NumPy array),
        so hooks decide their triggers without fetching the global step.
        """
        if self._global_step.value is not self._counter:
            self._bind_counter()
        view = self._counter_view
        return None if view is None else view[()]

    def run(  # noqa: PLR0912 - the one run path, kept in one function
        self,
        fetches: Any,
        feed_dict: Mapping[Any, Any] | None = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        """Evaluate ``fetches`` (a structure of handles or names) and return host values."""
        if self.run_through is not None:
            return self.run_through(fetches, feed_dict, options, run_metadata)
        if self._closed:
            raise ClosedSessionError("Attempted to use a closed Session.")
        if options is not None and not hasattr(options, "trace_level"):
            raise TypeError(
                f"options must be a RunOptions (looprt's or TF's), got {type(options).__name__}"
            )
        if fetches is self._last_fetch:
            resolved: _Resolved = self._last_resolved  # type: ignore[assignment]
        else:
            resolved = self._resolved(fetches)
        if self._ended and resolved.trains is not None:
            raise TrainingEndedError(
                f"fetching {fetches!r:.80} after training ended would run step "
                f"{resolved.trains.name!r}, which advances the global step. In end(), fetch state or "
                "outputs of a step declared with advance_global_step=False (an evaluation step)."
            )
        backend = self.backend
        inputs = self._feeds(feed_dict) if feed_dict else {}
        values: list[Any] | None = None
        if resolved.reads:
            values = [None] * len(resolved.plan.leaves)
            for position, state in resolved.reads:
                values[position] = backend.snapshot(state.value)
        results: dict[Step, Mapping[str, Any]] = {}
        from_feed = self._from_feed
        for step, fn, arguments, keywords, updates, advances, strays in resolved.calls:
            if self._may_be_pristine:
                self._first_step(step)
            args: list[Any] = []
            for fed, held in arguments:
                if fed is None:
                    args.append(held.value)  # type: ignore[union-attr]
                elif fed in inputs:
                    args.append(inputs[fed])
                else:
                    args.append(_resolve(fed, inputs, from_feed))
            try:
                # In order where the function allows (a call by keyword costs about 1 us more
                # after a training step; benchmarks/bench_cold.py).
                returned = fn(*args) if keywords is None else fn(**dict(zip(keywords, args, strict=True)))
            except Exception as error:
                self._raise_translated(error)
                raise
            # A dict is what most steps return: no need to ask Step.results to name it.
            if type(returned) is not dict:
                returned = step.results(returned)
            if not strays.isdisjoint(returned):
                refuse_strays(step, strays, returned)
            if updates:
                self._assign(step, returned)
            results[step] = returned
            if advances:
                if self._global_step.value is self._counter and self._counter_view is not None:
                    self._counter_view[()] += 1  # the default counter, counted in place
                else:
                    self._advance()
        if resolved.no_values:
            return None
        return self._values(resolved, inputs, results, values)

    def _resolved(self, fetches: Any) -> _Resolved:
        """The resolved plan of ``fetches``; kept as the last one when ``fetches`` is a handle."""
        plan = self._plans.plan(fetches)
        if plan.resolved is None:
            plan.resolved = _Resolved(plan, self.program)
        if isinstance(fetches, Handle):
            self._last_fetch, self._last_resolved = fetches, plan.resolved
        return plan.resolved  # type: ignore[no-any-return]

    def _values(
        self,
        resolved: _Resolved,
        inputs: dict[Input, Any],
        results: dict[Step, Mapping[str, Any]],
        values: list[Any] | None,
    ) -> Any:
        """A run's fetched outputs and inputs as host values, in the fetched structure."""
        plan, backend = resolved.plan, self.backend
        if values is None:
            values = [None] * len(plan.leaves)
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
            value = inputs[handle] if handle in inputs else _resolve(handle, inputs, self._from_feed)
            values[position] = backend.to_host(value)
        return plan.rebuild(values)

    def _first_step(self, step: Step) -> None:
        """Before a step runs on a program where none may have: it may keep its initial values."""
        program = self.program
        if program.pristine and step is not program.initializer:
            program.about_to_run()
        self._may_be_pristine = program.pristine  # once False, it stays so

    def _assign(self, step: Step, results: Mapping[str, Any]) -> None:
        """Assign the state ``step`` declares in ``updates`` from its ``results``."""
        for state in step.updates:
            try:
                value = results[state.name]
            except KeyError:
                raise FetchError(
                    f"step {step.name!r} declares updates of {state.name!r} but returned no "
                    f"{state.name!r} (it returned {', '.join(map(repr, results)) or 'nothing'})"
                ) from None
            if state.updated_in_place:
                check_in_place(step, state, value, self.backend.updatable_in_place)
            state.value = value

    def _raise_translated(self, error: Exception) -> None:
        """Raise the looprt error the backend says ``error`` means; return if none."""
        translated = self.backend.translate_error(error)
        if translated is not None and translated is not error:
            raise translated from error

    def _bind_counter(self) -> None:
        """Find how to count the live global step counter, if it is not the one known."""
        counter = self._global_step.value
        if counter is not self._counter:
            self._counter = counter
            self._counter_view = _counter_view(self.backend, counter)
            self._add_one = None if self._counter_view is not None else _incrementer(self.backend, counter)

    def _advance(self) -> None:
        """Add one to the global step."""
        if self._global_step.value is not self._counter:
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
