"""Catch, when a step is declared, state updates that would silently do nothing.

A step gets its state by reference. Two ways of "updating" it change only a
name, so training runs, checkpoints are written, and the state never moves:

* assigning to the name (``w = w - lr * g``): a new object is bound to it;
* an augmented assignment to state that cannot change in place (``b += 1``
  on a Python number, a tuple, a read-only array, a JAX array).

The name is a state parameter of the step, a parameter a nested function
rebinds through ``nonlocal``, or a closed-over or global name holding the
state under the state's own name (``looprt.wrap`` lets a step close over its
state). ``check_rebinding`` reads the compiled function (its bytecode, which
every Python function has, source or not) and raises ``StateUpdateError``
for either case unless the step declares the state in ``updates`` (then it
returns the new value and the session assigns it). It finds the function
through ``functools.wraps``, ``functools.partial``, bound methods and
callable objects; a function with no Python code (built in, a C extension)
is not checked.

Two more ways are caught when a step runs (``ProgramSession`` calls these):
a result that holds state the step does not declare in ``updates``
(``refuse_strays``: the value would be dropped), and a functional update
that makes state another step changes with ``+=`` a value that cannot
change in place (``check_in_place``).
"""

from __future__ import annotations

import bisect
import dis
import functools
import inspect
import io
import linecache
import tokenize
import types
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from looprt.errors import StateUpdateError

if TYPE_CHECKING:
    from looprt.program.handles import State, Step
    from looprt.program.program import Program

__all__ = ["changes_in_place", "check_in_place", "check_rebinding", "refuse_strays", "stray_names"]


class _Store(NamedTuple):
    """One instruction that binds a name: where, how, and in which code object."""

    name: str
    code: types.CodeType
    offset: int
    augmented: str | None  # the operator ("+=") of an augmented assignment, else None
    scope: str  # "local", "nested" (a nested function's ``nonlocal``), "closed" or "global"


def check_rebinding(
    step_name: str,
    fn: Callable[..., Any],
    states: Mapping[str, Any],
    params: Collection[str],
    updates: Collection[str],
    in_place: Callable[[Any], bool],
) -> dict[str, tuple[str, str]]:
    """Raise ``StateUpdateError`` if ``fn`` rebinds state it does not declare updated.

    ``states`` maps the program's state names to their live values;
    ``params`` are the parameters of ``fn`` that take the state of the same
    name; ``updates`` names the state the step returns new values for;
    ``in_place(value)`` says whether an augmented assignment changes
    ``value`` itself. Returns, for each state the step changes with an
    augmented assignment in place, where it does and with which operator
    (``("`w += g` (line 12)", "+=")``), so that a later value that cannot
    change in place is refused.
    """
    function = _python_function(fn)
    if function is None:
        return {}
    code = function.__code__
    in_place_sites: dict[str, tuple[str, str]] = {}
    for store in _stores(code, frozenset(params) & frozenset(code.co_cellvars)):
        if store.name in updates or store.name not in states:
            continue
        value = states[store.name]
        if store.scope == "local" and store.name not in params:
            continue  # a local variable under the state's name
        if store.scope in ("closed", "global") and _current(function, store) is not value:
            continue  # another object under the state's name: not the state
        where = _WHERE[store.scope]
        site = _site(store)
        if store.augmented is not None and changes_in_place(value, store.augmented, in_place):
            in_place_sites.setdefault(store.name, (site, store.augmented))
            continue
        target = store.name
        if store.augmented is not None:
            why = (
                f"state {target!r} is a {type(value).__name__}, which cannot change in place, so "
                f"{site} only rebinds {where}"
            )
        else:
            why = f"{site} binds a new object to {where} {target!r}"
        fix = (
            f"declare updates=({target!r},) and return the new value under {target!r}"
            if store.scope in ("local", "nested")
            else f"take the state as a parameter named {target!r}, declare updates=({target!r},) "
            f"and return the new value under {target!r}"
        )
        raise StateUpdateError(
            f"step {step_name!r}: {why}; the state would never change. Update it in place "
            f"(`{target}[...] = ...`, `{target} -= ...` on an array, a module's parameters), "
            f"or {fix}."
        )
    return in_place_sites


_MISSING = object()
_WHERE = {
    "local": "the local name",
    "nested": "the local name",
    "closed": "the closed-over name",
    "global": "the global name",
}


def _python_function(fn: Any) -> types.FunctionType | None:
    """The Python function a call of ``fn`` runs (through wrappers, partials, methods, ``__call__``)."""
    for _ in range(16):  # a bound on chains of wrappers
        fn = inspect.unwrap(fn)
        if isinstance(fn, types.FunctionType):
            return fn
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            fn = fn.__func__
        else:
            call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's method, not callable()
            if not isinstance(call, types.FunctionType):
                return None  # built in, a C extension, a class
            fn = call
    return None


def _current(function: types.FunctionType, store: _Store) -> Any:
    """The object a closed-over or global name of ``function`` holds now."""
    if store.scope == "global":
        return function.__globals__.get(store.name, _MISSING)
    cell = (function.__closure__ or ())[function.__code__.co_freevars.index(store.name)]
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return _MISSING


def _stores(code: types.CodeType, shared: frozenset[str], nested: bool = False) -> Iterator[_Store]:
    """Every name ``code`` binds, and the shared parameters its nested functions rebind.

    ``shared`` names the step's parameters that nested code sees as cells;
    in nested code only stores to those (``nonlocal``) are reported.
    """
    instructions = [i for i in dis.get_instructions(code) if i.opname != "EXTENDED_ARG"]
    previous: dis.Instruction | None = None
    comprehensions = _InlinedComprehensions()
    for index, instruction in enumerate(instructions):
        opname = instruction.opname
        if opname.startswith("STORE_FAST") or opname in ("STORE_DEREF", "STORE_GLOBAL"):
            augmented = _augmented_operator(previous)
            for name in _stored_names(instruction):
                scope = _scope(opname, name, code, shared if nested else None)
                if comprehensions.owns(name) or _restores_on_error(instructions, index):
                    continue
                if scope is not None:
                    yield _Store(name, code, instruction.offset, augmented, scope)
        else:
            comprehensions.see(instruction)
        previous = instruction
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            inner = shared & frozenset(constant.co_freevars)
            if inner:
                yield from _stores(constant, inner, nested=True)


class _InlinedComprehensions:
    """Python 3.12+ inlines comprehensions: their variables are the function's own names.

    ``LOAD_FAST_AND_CLEAR name`` saves the outer value; the comprehension's
    stores of ``name`` and the store that restores it after its loop
    (``END_FOR``) rebind nothing the step sees, so they are not reported.
    Before 3.12 no code has this instruction and nothing is skipped.
    """

    __slots__ = ("_depth", "_saved", "_restoring")

    def __init__(self) -> None:
        self._depth = 0  # loops open at this point of the code
        self._saved: list[tuple[str, int]] = []  # (name, the loop depth its comprehension starts at)
        self._restoring: set[str] = set()  # names whose next store is the restore

    def see(self, instruction: dis.Instruction) -> None:
        opname = instruction.opname
        if opname == "LOAD_FAST_AND_CLEAR":
            self._saved.append((instruction.argval, self._depth))
        elif opname == "FOR_ITER":
            self._depth += 1
        elif opname in ("END_FOR", "END_ASYNC_FOR"):
            self._depth -= 1
            while self._saved and self._saved[-1][1] >= self._depth:
                self._restoring.add(self._saved.pop()[0])

    def owns(self, name: str) -> bool:
        """Whether a store of ``name`` here is the comprehension's (its variable, or the restore)."""
        if name in self._restoring:
            self._restoring.discard(name)
            return True
        return any(saved == name for saved, _ in self._saved)


def _restores_on_error(instructions: list[dis.Instruction], index: int) -> bool:
    """Whether the store at ``index`` is an inlined comprehension's restore before ``RERAISE``."""
    for instruction in instructions[index + 1 :]:
        if instruction.opname == "RERAISE":
            return True
        if not instruction.opname.startswith("STORE_FAST"):
            return False
    return False


def _scope(opname: str, name: str, code: types.CodeType, shared: frozenset[str] | None) -> str | None:
    """Which name a store binds; None for a nested function's own names (``shared``: nested)."""
    if shared is not None:
        return "nested" if opname == "STORE_DEREF" and name in shared else None
    if opname == "STORE_GLOBAL":
        return "global"
    if opname == "STORE_DEREF" and name in code.co_freevars:
        return "closed"
    return "local"


def _stored_names(instruction: dis.Instruction) -> tuple[str, ...]:
    value = instruction.argval
    if instruction.opname == "STORE_FAST_LOAD_FAST":  # Python 3.13+: (stored, loaded)
        return (value[0],) if isinstance(value, tuple) else (value,)
    return tuple(value) if isinstance(value, tuple) else (value,)


_IN_PLACE_METHODS = {
    "+=": "__iadd__", "-=": "__isub__", "*=": "__imul__", "/=": "__itruediv__",
    "//=": "__ifloordiv__", "%=": "__imod__", "**=": "__ipow__", "@=": "__imatmul__",
    "<<=": "__ilshift__", ">>=": "__irshift__", "&=": "__iand__", "|=": "__ior__", "^=": "__ixor__",
}
_PYTHON_310_OPERATORS = {  # INPLACE_<name> -> the operator
    "ADD": "+=", "SUBTRACT": "-=", "MULTIPLY": "*=", "TRUE_DIVIDE": "/=", "FLOOR_DIVIDE": "//=",
    "MODULO": "%=", "POWER": "**=", "MATRIX_MULTIPLY": "@=", "LSHIFT": "<<=", "RSHIFT": ">>=",
    "AND": "&=", "OR": "|=", "XOR": "^=",
}


def _augmented_operator(instruction: dis.Instruction | None) -> str | None:
    """``"+="`` if ``instruction`` is the operation of an augmented assignment, else None."""
    if instruction is None:
        return None
    if instruction.opname == "BINARY_OP" and instruction.argrepr.endswith("="):  # Python 3.11+
        return instruction.argrepr
    if instruction.opname.startswith("INPLACE_"):  # Python 3.10
        return _PYTHON_310_OPERATORS.get(instruction.opname.removeprefix("INPLACE_"), "op=")
    return None


def changes_in_place(value: Any, operator: str, in_place: Callable[[Any], bool]) -> bool:
    """Whether ``value <operator> x`` (``+=``, ...) changes ``value`` itself.

    The backend must say the value can change in place, and its type must
    define the operator's in-place method (``__iadd__``): without one, Python
    falls back to ``__add__`` and rebinds the name (a ``Fraction``, a
    ``Decimal``, a TF tensor).
    """
    method = _IN_PLACE_METHODS.get(operator)
    return in_place(value) and (method is None or hasattr(type(value), method))


def _site(store: _Store) -> str:
    """``"`w = w - 1.0` (line 6)"``: the source line when it can be read, else the kind of binding."""
    code = store.code
    starts = sorted((offset, line) for offset, line in dis.findlinestarts(code) if line is not None)
    index = bisect.bisect_right([offset for offset, _ in starts], store.offset) - 1
    line = starts[index][1] if index >= 0 else code.co_firstlineno
    text = _without_comment(linecache.getline(code.co_filename, line))
    if not text:
        text = f"{store.name} {store.augmented or '='} ..."
    where = f"line {line}"
    if store.scope == "nested":
        where += f", in the nested function {code.co_name!r}"
    return f"`{text}` ({where})"


def _without_comment(line: str) -> str:
    """``line`` stripped, less a trailing ``# comment``."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type == tokenize.COMMENT:
                return line[: token.start[1]].strip()
    except (tokenize.TokenError, SyntaxError):  # a line of a statement that spans several
        pass
    return line.strip()


# -- at run time: what a step returns


def stray_names(step: Step, program: Program) -> frozenset[str]:
    """The names of state a result of ``step`` may not hold: it would be dropped, not assigned.

    Every state the step does not declare in ``updates``, unless it declares
    an output of that name.
    """
    kept = {state.name for state in step.updates} | set(step.declared or ())
    return frozenset(name for name in program.states if name not in kept)


def check_in_place(step: Step, state: State, value: Any, in_place: Callable[[Any], bool]) -> None:
    """Raise for a new value of ``state`` that a step updating it in place could not change."""
    refused = next(
        (
            (other, site)
            for other, (site, operator) in state.updated_in_place.items()
            if not changes_in_place(value, operator, in_place)
        ),
        None,
    )
    if refused is None:
        return
    other, site = refused
    raise StateUpdateError(
        f"step {step.name!r} returned a {type(value).__name__} for state {state.name!r}, which "
        f"cannot change in place, but step {other!r} updates {state.name!r} in place ({site}): "
        f"that update would only rebind a local name. Return a value that changes in place "
        f"(an array, not a NumPy scalar: np.asarray(...)), or declare updates=({state.name!r},) "
        f"on step {other!r} too and return the new value there. The state keeps its value."
    )


def refuse_strays(step: Step, strays: frozenset[str], returned: Mapping[str, Any]) -> None:
    """Raise for a result that holds state ``step`` does not declare updated: it would be dropped.

    The live object itself under its state's name (returned for logging,
    changed in place) is not dropped: it is the state.
    """
    states = step.program.states
    names = sorted(name for name in strays.intersection(returned) if returned[name] is not states[name].value)
    if not names:
        return
    listed = ", ".join(map(repr, names))
    raise StateUpdateError(
        f"step {step.name!r} returned {listed}, which {'is' if len(names) == 1 else 'are'} state it "
        f"does not declare updated: the value would be dropped and the state would never change. "
        f"Declare updates=({', '.join(map(repr, names))},) to assign it, or, for an output of that "
        f"name, declare it in outputs. None of the values the step returned was assigned."
    )
