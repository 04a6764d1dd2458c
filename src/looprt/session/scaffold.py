"""``Scaffold``: what a session needs besides the program itself.

Mirrors ``tf.compat.v1.train.Scaffold``: the ops (or steps) that initialize
the state, check that it is ready, initialize local state, produce summaries,
and the saver that writes and restores checkpoints. ``finalize()`` fills in
defaults and freezes the program, so nothing can be added to it once a
session exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from looprt.program.program import Program, get_default_program

__all__ = ["Scaffold"]


class Scaffold:
    """Initialization, readiness, summary and saving pieces of a program.

    ``program`` is the ``Program`` (or a ``Step`` of it) to run; without one,
    the default program is used. ``init_fn(scaffold, session)`` runs after
    ``init_op`` when the state was not restored from a checkpoint.
    ``copy_from_scaffold`` copies every field not given here from another
    scaffold.
    """

    def __init__(
        self,
        init_op: Any = None,
        init_feed_dict: Any = None,
        init_fn: Callable[[Scaffold, Any], None] | None = None,
        ready_op: Any = None,
        ready_for_local_init_op: Any = None,
        local_init_op: Any = None,
        summary_op: Any = None,
        saver: Any = None,
        copy_from_scaffold: Scaffold | None = None,
        local_init_feed_dict: Any = None,
        *,
        program: Any = None,
    ) -> None:
        if copy_from_scaffold is not None:
            if not isinstance(copy_from_scaffold, Scaffold):
                raise TypeError("copy_from_scaffold is not a Scaffold instance.")

            def pick(mine: Any, theirs: Any) -> Any:
                return mine if mine is not None else theirs

            other: Scaffold = copy_from_scaffold
            init_op = pick(init_op, other._init_op)
            init_feed_dict = pick(init_feed_dict, other._init_feed_dict)
            init_fn = pick(init_fn, other._user_init_fn)
            ready_op = pick(ready_op, other._ready_op)
            ready_for_local_init_op = pick(ready_for_local_init_op, other._ready_for_local_init_op)
            local_init_op = pick(local_init_op, other._local_init_op)
            local_init_feed_dict = pick(local_init_feed_dict, other._local_init_feed_dict)
            summary_op = pick(summary_op, other._summary_op)
            saver = pick(saver, other._saver)
            program = pick(program, other._program)
        program = getattr(program, "program", program)
        if program is not None and not isinstance(program, Program):
            raise TypeError(
                f"Scaffold program must be a looprt Program or Step, "
                f"got {type(program).__name__}"
            )
        self._program: Program | None = program
        self._init_op: Any = init_op
        self._init_feed_dict: Any = init_feed_dict
        self._user_init_fn: Callable[[Scaffold, Any], None] | None = init_fn
        self._ready_op: Any = ready_op
        self._ready_for_local_init_op: Any = ready_for_local_init_op
        self._local_init_op: Any = local_init_op
        self._local_init_feed_dict: Any = local_init_feed_dict
        self._summary_op: Any = summary_op
        self._saver: Any = saver
        self._finalized = False

    def finalize(self) -> Scaffold:
        """Fill in defaults from the program and freeze it. Idempotent."""
        if self._finalized:
            return self
        program = self.program
        if self._init_op is None:
            self._init_op = program.initializer
        if self._summary_op is None and program.summaries:
            self._summary_op = dict(program.summaries)
        if self._saver is None:
            self._saver = program.backend.default_saver(program)
        program.finalize()
        self._finalized = True
        return self

    @property
    def finalized(self) -> bool:
        return self._finalized

    @property
    def program(self) -> Program:
        """The program this scaffold prepares (the default program if none was given)."""
        if self._program is None:
            self._program = get_default_program()
        return self._program

    @property
    def init_fn(self) -> Callable[[Any], None] | None:
        """``init_fn`` bound to this scaffold: call it with the session."""
        user = self._user_init_fn
        if user is None:
            return None
        return lambda session: user(self, session)

    @property
    def init_op(self) -> Any:
        return self._init_op

    @property
    def init_feed_dict(self) -> Any:
        return self._init_feed_dict

    @property
    def ready_op(self) -> Any:
        return self._ready_op

    @property
    def ready_for_local_init_op(self) -> Any:
        return self._ready_for_local_init_op

    @property
    def local_init_op(self) -> Any:
        return self._local_init_op

    @property
    def local_init_feed_dict(self) -> Any:
        return self._local_init_feed_dict

    @property
    def summary_op(self) -> Any:
        return self._summary_op

    @property
    def saver(self) -> Any:
        return self._saver
