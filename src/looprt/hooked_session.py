"""``HookedSession``: one run = every hook's ``before_run``, one backend run, ``after_run``.

The caller's fetches and every hook's fetches become one request to the raw
session (which evaluates each unique leaf once); each requester gets its own
structure back. Hooks whose methods are the base no-ops are never called, and
on a run where no hook fetches anything the caller's fetches go to the raw
session untouched, with no merged structure built. When every hook is idle
(``looprt.hooks.idle``), runs between their triggers call no hook at all.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from looprt.errors import FeedConflictError, HookRequestError, StopRequestedError
from looprt.hooks import idle
from looprt.hooks.dispatch import calls
from looprt.hooks.session_run_hook import SessionRunArgs, SessionRunContext, SessionRunValues
from looprt.run_options import RunMetadata, RunOptions, merge_run_options
from looprt.wrapped_session import WrappedSession

__all__ = ["HookedSession"]

_ARGS_FIELDS = SessionRunArgs._fields
# SessionRunValues((results, options, run_metadata)) without the Python-level __new__ a
# NamedTuple has: a fetching run makes one per fetching hook.
_run_values: Callable[[tuple[Any, Any, Any]], SessionRunValues] = functools.partial(
    tuple.__new__, SessionRunValues
)
_CALLER = "caller"
_NO_FETCH = object()  # what no fetch is: no idle span
_INF = math.inf


class HookedSession(WrappedSession):
    """Calls the hooks around each run of the raw session ``sess``.

    ``new_options`` and ``new_metadata`` make the options and metadata objects
    hooks see. With ``share_defaults`` (the default) the raw session gets
    options and metadata only when the caller or a hook gave some (or asked for
    a trace), and a run nobody asked anything of shows every hook one shared,
    reused pair. Without it, every run makes a fresh pair and passes it to the
    raw session, exactly as TF does (the TF backend's drop-in uses that).
    """

    def __init__(
        self,
        sess: Any,
        hooks: Sequence[Any],
        *,
        new_options: Callable[[], Any] = RunOptions,
        new_metadata: Callable[[], Any] = RunMetadata,
        share_defaults: bool = True,
    ) -> None:
        super().__init__(sess)
        self._hooks = list(hooks)
        before = calls(self._hooks, "before_run")
        after = calls(self._hooks, "after_run")
        # Plain lists of bound methods keep the per-run loops short; the hooks that own
        # them, in parallel lists, are looked up only on a run where a hook asks for
        # something.
        self._before_run_methods = [method for _, method in before]
        self._after_run_methods = [method for _, method in after]
        self._before_run_hooks = [hook for hook, _ in before]
        self._after_run_hooks = [hook for hook, _ in after]
        self._any_hooks = bool(before or after)
        self._new_options = new_options
        self._new_metadata = new_metadata
        self._share_defaults = share_defaults
        self._default_options = new_options()
        self._default_metadata = new_metadata()
        self._default_values = SessionRunValues(None, self._default_options, self._default_metadata)
        self._should_stop = False
        # Idle runs (see looprt.hooks.idle): possible when every hook called is idle,
        # the session shares defaults, and the raw session can read its global step.
        called = list(dict.fromkeys(self._before_run_hooks + self._after_run_hooks))
        # A hook listed twice sees its own calls in between: it is called on every run.
        listed_once = all(
            len(set(map(id, hooks))) == len(hooks)
            for hooks in (self._before_run_hooks, self._after_run_hooks)
        )
        gs_view = getattr(sess, "global_step_view", None)
        self._idle_hooks: list[Any] | None = None
        if (
            called
            and listed_once
            and share_defaults
            and gs_view is not None
            and all(map(idle.idle_capable, called))
        ):
            self._idle_hooks = called
        # Everything the per-run check of an idle span reads, in one compact object.
        self._idle = _IdleSpan()
        self._checked_fetch: Any = _NO_FETCH  # the last fetch asked about, and the answer
        self._checked_ok = False

    def wake(self) -> None:
        """End the idle span: the hooks are called from the next run."""
        self._idle.fetch = _NO_FETCH

    def catch_up(self) -> None:
        """Tell idle hooks about the runs they skipped (before any other call of theirs)."""
        skipped, self._idle.skipped = self._idle.skipped, None
        if skipped is not None:
            for hook in self._idle_hooks:  # type: ignore[union-attr]
                hook.after_idle_runs(skipped)

    def _prepare_idle(self, fetches: Any) -> None:
        """Before a run that calls the hooks: catch up, note the global step, vet the fetch."""
        self._idle.fetch = _NO_FETCH
        if self._idle.skipped is not None:
            self.catch_up()
        sess = self._sess
        state = self._idle.state
        if state is None or state.value is not self._idle.counter:
            found = sess.global_step_view()
            self._idle.state, self._idle.counter, self._idle.view = found or (None, None, None)
        self._idle.last = math.inf if self._idle.view is None else self._idle.view[()]
        if fetches is not self._checked_fetch:
            self._checked_fetch = fetches
            vouch = getattr(sess, "advances_global_step_by_one", None)
            self._checked_ok = vouch is not None and bool(vouch(fetches))

    def _plan_idle(self) -> None:
        """After the hooks' after_run: start an idle span if every hook allows one."""
        if not self._checked_ok or self._idle.view is None:
            return
        idle.register(self)
        woken = idle.generation()
        step, until = math.inf, math.inf
        for hook in self._idle_hooks:  # type: ignore[union-attr]
            span = hook.idle_until()
            if span is None:
                return
            step, until = min(step, span[0]), min(until, span[1])
        if step > self._idle.last + 1:
            self._idle.step, self._idle.until = step, until
            lone_runner = getattr(self._sess, "lone_runner", None)
            self._idle.runner = None if lone_runner is None else lone_runner(self._checked_fetch)
            self._idle.fetch = self._checked_fetch
            if idle.generation() != woken:  # a signal came while the hooks answered
                self._idle.fetch = _NO_FETCH

    def check_stop(self) -> bool:
        return self._should_stop

    def run(
        self,
        fetches: Any,
        feed_dict: Any = None,
        options: Any = None,
        run_metadata: Any = None,
    ) -> Any:
        if self._should_stop:
            raise StopRequestedError("Run called even after should_stop requested.")
        sess = self._sess
        # An idle run: every hook has said it has nothing to do on it (one step on).
        idle = self._idle
        if (
            fetches is idle.fetch
            and options is None
            and run_metadata is None
            and idle.state.value is idle.counter
        ):
            step = idle.view[()]
            if idle.last < step < idle.step and (idle.until == _INF or time.time() < idle.until):
                skipped, idle.last, idle.skipped = idle.skipped, step, step
                try:
                    runner = idle.runner
                    if runner is not None and not feed_dict:
                        return runner()  # the raw session's run of this train op, in one call
                    return sess.run(fetches, feed_dict, None, None)
                except BaseException:
                    # The hooks would have seen no after_run: it was not one of their runs.
                    idle.skipped = skipped
                    idle.fetch = _NO_FETCH
                    raise
        if not self._any_hooks:
            return sess.run(
                fetches=fetches, feed_dict=feed_dict, options=options, run_metadata=run_metadata
            )
        if self._idle_hooks is not None:
            self._prepare_idle(fetches)
        context = _RunContext(fetches, feed_dict, sess)
        # The common run, kept lean: no hook asks for anything and the caller passes no
        # options, so the caller's fetches go to the raw session untouched and every hook
        # sees one shared SessionRunValues. The first hook that asks for something hands
        # the rest of the run (the later hooks' before_run included) to _merged_run.
        request = before_run = None
        for before_run in self._before_run_methods:
            request = before_run(context)
            if request is not None:
                break
        if request is not None or options is not None or run_metadata is not None or not self._share_defaults:
            return self._merged_run(context, before_run, request, options, run_metadata)
        result = sess.run(fetches=fetches, feed_dict=feed_dict, options=None, run_metadata=None)
        values = self._default_values
        for after_run in self._after_run_methods:
            after_run(context, values)
        if context._stop_requested:
            self._should_stop = True
        elif self._idle_hooks is not None:
            self._plan_idle()
        return result

    def _merged_run(
        self,
        context: _RunContext,
        asked: Any,
        request: Any,
        options: Any,
        run_metadata: Any,
    ) -> Any:
        """The rest of a run in which a hook asked for something, or options were given.

        ``asked`` is the ``before_run`` method that returned ``request`` (a
        request is None when every hook has been called already). The hooks
        after it are called here, in order, each request merged as it comes,
        so a conflict is raised before the next hook is called, as in TF.
        """
        fetches, feed_dict, sess = context._fetches, context._feed_dict, context._session
        if not self._share_defaults:
            # TF's way: fresh options and metadata for every run, passed to the raw session.
            if options is None:
                options = self._new_options()
            if run_metadata is None:
                run_metadata = self._new_metadata()
        requests = _Requests(fetches, options)
        if request is not None:
            befores = self._before_run_methods
            # By identity: two entries may be equal bound methods (one hook listed twice).
            first = 0
            while befores[first] is not asked:
                first += 1
            requests.add(self._before_run_hooks[first], request)
            for index in range(first + 1, len(befores)):
                request = befores[index](context)
                if request is not None:
                    requests.add(self._before_run_hooks[index], request)
        options, merged = requests.options, requests.merged
        if requests.hook_feeds is not None:
            feed_dict = _merge_caller_feeds(requests.hook_feeds, requests.feeders, feed_dict)

        # The raw session gets only what someone asked for (None otherwise, which any
        # session accepts); hooks always see an options and a metadata object.
        if options is None and run_metadata is None:
            seen_options, seen_metadata = self._default_options, self._default_metadata
            shared_values = self._default_values
        else:
            trace_level: Any = getattr(options, "trace_level", 0)
            if run_metadata is None and trace_level:
                run_metadata = _metadata_like(options, self._new_metadata)
            seen_options = self._default_options if options is None else options
            seen_metadata = self._default_metadata if run_metadata is None else run_metadata
            shared_values = SessionRunValues(None, seen_options, seen_metadata)

        if merged is None:
            result = sess.run(
                fetches=fetches, feed_dict=feed_dict, options=options, run_metadata=run_metadata
            )
            for after_run in self._after_run_methods:
                after_run(context, shared_values)
        else:
            outputs = sess.run(
                fetches=merged, feed_dict=feed_dict, options=options, run_metadata=run_metadata
            )
            for hook, after_run in zip(self._after_run_hooks, self._after_run_methods):
                if hook in merged:
                    after_run(context, _run_values((outputs[hook], seen_options, seen_metadata)))
                else:
                    after_run(context, shared_values)
            result = outputs[_CALLER]
        if context._stop_requested:
            self._should_stop = True
        elif self._idle_hooks is not None:
            self._plan_idle()
        return result


class _IdleSpan:
    """What an idle run is checked against (see ``looprt.hooks.idle``); slots keep it compact.

    ``fetch``: the fetch whose runs may skip the hooks (``_NO_FETCH``: no
    span); ``step`` / ``until``: runs with a global step below ``step`` that
    start before ``until`` (``time.time()``) may; ``last``: the global step
    before the previous run; ``skipped``: before the last skipped run, to
    catch up; ``state``, ``counter``, ``view``: the global step's handle, live
    counter and a memoryview reading it; ``runner``: the raw session's run of
    ``fetch`` in one call, if it offers one.
    """

    __slots__ = ("fetch", "step", "until", "last", "skipped", "state", "counter", "view", "runner")

    def __init__(self) -> None:
        self.fetch: Any = _NO_FETCH
        self.step: float = -math.inf
        self.until = math.inf
        self.last: float = math.inf
        self.skipped: Any = None
        self.state: Any = None
        self.counter: Any = None
        self.view: Any = None
        self.runner: Callable[[], Any] | None = None


class _Requests:
    """The hooks' requests of one run, merged as they come."""

    __slots__ = ("merged", "hook_feeds", "feeders", "options", "_caller")

    def __init__(self, fetches: Any, options: Any) -> None:
        self.merged: dict[Any, Any] | None = None  # {"caller": fetches, hook: its fetches, ...}
        self.hook_feeds: dict[Any, Any] | None = None
        self.feeders: dict[Any, Any] = {}  # fed key -> the hook that fed it
        self.options = options
        self._caller = fetches

    def add(self, hook: Any, request: Any) -> None:
        if type(request) is not SessionRunArgs:
            _check_request(hook, request)
        if request.fetches is not None:
            if self.merged is None:
                self.merged = {_CALLER: self._caller}
            self.merged[hook] = request.fetches
        if request.feed_dict:
            if self.hook_feeds is None:
                self.hook_feeds = {}
            _add_hook_feeds(self.hook_feeds, self.feeders, request.feed_dict, hook)
        if request.options:
            if self.options is None:
                # Same family as the request's (TF protobufs for TF's hooks), so a raw
                # TF session accepts it.
                self.options = type(request.options)()
            merge_run_options(self.options, request.options)


class _RunContext(SessionRunContext):
    """The context ``HookedSession`` makes per run: ``original_args`` built on first read."""

    __slots__ = ("_fetches", "_feed_dict")

    def __init__(self, fetches: Any, feed_dict: Any, session: Any) -> None:
        # SessionRunContext.__init__ is skipped on purpose: it needs a SessionRunArgs.
        self._fetches = fetches
        self._feed_dict = feed_dict
        self._session = session
        self._stop_requested = False

    @property
    def original_args(self) -> SessionRunArgs:
        try:
            return self._original_args
        except AttributeError:  # first read in this run
            args = self._original_args = SessionRunArgs(self._fetches, self._feed_dict)
            return args


def _metadata_like(options: Any, default: Callable[[], Any]) -> Any:
    """A fresh run metadata of the same family as ``options`` (TF's protobufs, or looprt's)."""
    if isinstance(options, RunOptions):
        return default()
    module = sys.modules.get(type(options).__module__)
    factory = getattr(module, "RunMetadata", None)
    return factory() if factory is not None else default()


def _check_request(hook: Any, request: Any) -> None:
    """Accept ``SessionRunArgs`` from any framework (TF's too) and look-alikes; reject the rest."""
    if all(hasattr(request, field) for field in _ARGS_FIELDS):
        return
    raise HookRequestError(
        f"{type(hook).__name__}.before_run returned {type(request).__name__} {request!r:.80}; "
        "it must return SessionRunArgs(fetches, feed_dict, options) or None"
    )


def _add_hook_feeds(hook_feeds: dict[Any, Any], feeders: dict[Any, Any], feeds: Any, hook: Any) -> None:
    clash = [key for key in feeds if key in hook_feeds]
    if clash:
        detail = ", ".join(
            f"{key!r} (fed by {type(feeders[key]).__name__} and {type(hook).__name__})"
            for key in clash
        )
        raise FeedConflictError(f"Same tensor is fed by two hooks. Conflict(s): {detail}")
    hook_feeds.update(feeds)
    for key in feeds:
        feeders[key] = hook


def _merge_caller_feeds(
    hook_feeds: dict[Any, Any], feeders: dict[Any, Any], caller_feeds: Any
) -> dict[Any, Any]:
    if not caller_feeds:
        return hook_feeds
    clash = [key for key in caller_feeds if key in hook_feeds]
    if clash:
        detail = ", ".join(f"{key!r} (fed by {type(feeders[key]).__name__})" for key in clash)
        raise FeedConflictError(
            f"Same tensor is fed by a SessionRunHook and user. Conflict(s): {detail}"
        )
    hook_feeds.update(caller_feeds)
    return hook_feeds
