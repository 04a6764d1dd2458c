"""``HookedSession``: one run = every hook's ``before_run``, one backend run, ``after_run``.

The caller's fetches and every hook's fetches become one request to the raw
session (which evaluates each unique leaf once); each requester gets its own
structure back, keyed by the hook's position (hooks need not be hashable,
and two equal hooks are two requesters). Hooks whose methods are the base
no-ops are never called; every other hook is called on every run. On a run
where no hook fetches anything the caller's fetches go to the raw session
untouched, with no merged structure built.

Epoch ends (a looprt extension): hooks that define ``after_epoch(run_context,
epoch_end)`` are called with each ``EpochEnd`` the raw session reports
(``epoch_ends()``, ``looprt.backends.EpochSession``) after the raw run that
pulled the epoch's last item and before every hook's ``after_run`` of that
run, in hook order; so a checkpoint saved in that ``after_run`` holds the
epoch-end work. With no such hook, runs cost nothing more (the call rides in
the ``after_run`` list).

A raw session that reads its global step on the host
(``looprt.backends.CountingSession``) has it read once before each run and
handed to the hooks as ``run_context.global_step``, so periodic hooks decide
whether to act without a fetch.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from looprt.errors import FeedConflictError, HookRequestError, StopRequestedError
from looprt.hooks.dispatch import calls, overrides
from looprt.hooks.session_run_hook import SessionRunArgs, SessionRunContext, SessionRunValues
from looprt.session.run_options import RunMetadata, RunOptions, merge_run_options
from looprt.session.wrapped import WrappedSession

__all__ = ["HookedSession"]

logger = logging.getLogger(__name__)

_ARGS_FIELDS = SessionRunArgs._fields
# SessionRunValues((results, options, run_metadata)) without the Python-level __new__ a
# NamedTuple has: a fetching run makes one per fetching hook.
_run_values: Callable[[tuple[Any, Any, Any]], SessionRunValues] = functools.partial(
    tuple.__new__, SessionRunValues
)
_CALLER = -1  # the caller's key in a merged request; hooks are keyed by position
_EPOCHS = -2  # the key of the epoch-end call in the after_run list: never in a request


def _no_step() -> None:
    return None


def _no_ends() -> list[Any]:
    return []


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
        hooks = list(hooks)
        before = _positioned(hooks, "before_run")
        after = _positioned(hooks, "after_run")
        # Plain lists of bound methods keep the per-run loops short; each hook's position
        # (its key in a merged request), in a parallel list, is read only on a run where a
        # hook asks for something.
        self._before_run_methods = [method for _, _, method in before]
        self._after_run_methods = [method for _, _, method in after]
        self._before_run_keys = [position for position, _, _ in before]
        self._after_run_keys = [position for position, _, _ in after]
        self._before_run_hooks = [hook for _, hook, _ in before]
        self._after_epoch_methods = [method for _, method in calls(hooks, "after_epoch")]
        self._epoch_ends: Callable[[], Any] = getattr(sess, "epoch_ends", _no_ends)
        if self._after_epoch_methods:
            if self._epoch_ends is _no_ends:
                logger.warning(
                    "hooks %s define after_epoch, but %s reports no epoch ends: it will not be called",
                    [type(hook).__name__ for hook in hooks if callable(getattr(hook, "after_epoch", None))],
                    type(sess).__name__,
                )
            else:
                # First in the after_run list: after the raw run, before every after_run.
                self._after_run_methods.insert(0, self._after_epoch)
                self._after_run_keys.insert(0, _EPOCHS)
        self._any_hooks = bool(before or self._after_run_methods)
        self._new_options = new_options
        self._new_metadata = new_metadata
        self._share_defaults = share_defaults
        self._default_options = new_options()
        self._default_metadata = new_metadata()
        self._default_values = SessionRunValues(None, self._default_options, self._default_metadata)
        self._should_stop = False
        self._global_step: Callable[[], int | None] = getattr(sess, "global_step_value", _no_step)

    def check_stop(self) -> bool:
        return self._should_stop

    def _after_epoch(self, context: Any, values: Any) -> None:
        """Call every ``after_epoch`` for each epoch the run just ended."""
        for end in self._epoch_ends():
            for after_epoch in self._after_epoch_methods:
                after_epoch(context, end)

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
        if not self._any_hooks:
            return sess.run(fetches, feed_dict, options, run_metadata)
        context: _RunContext = _new_context(_RunContext)  # fields set here: no __init__ frame
        context._fetches = fetches
        context._feed_dict = feed_dict
        context._session = sess
        context._stop_requested = False
        context.global_step = self._global_step()
        # The common run, kept lean: no hook asks for anything and the caller passes no
        # options, so the caller's fetches go to the raw session untouched and every hook
        # sees one shared SessionRunValues. The first hook that asks for something hands
        # the rest of the run (the later hooks' before_run included) to _merged_run.
        request = None
        index = 0
        for before_run in self._before_run_methods:
            request = before_run(context)
            if request is not None:
                break
            index += 1
        if request is not None or options is not None or run_metadata is not None or not self._share_defaults:
            return self._merged_run(context, index, request, options, run_metadata)
        result = sess.run(fetches, feed_dict)  # positional: the Session protocol's order
        values = self._default_values
        for after_run in self._after_run_methods:
            after_run(context, values)
        if context._stop_requested:
            self._should_stop = True
        return result

    def _merged_run(  # noqa: PLR0912 - the one run path, kept in one function
        self,
        context: _RunContext,
        first: int,
        request: Any,
        options: Any,
        run_metadata: Any,
    ) -> Any:
        """The rest of a run in which a hook asked for something, or options were given.

        ``request`` came from the ``first``-th ``before_run`` (None when every
        hook has been called already). The hooks after it are called here, in
        order, each request merged as it comes, so a conflict is raised
        before the next hook is called, as in TF.
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
            befores, keys, hooks = self._before_run_methods, self._before_run_keys, self._before_run_hooks
            requests.add(keys[first], hooks[first], request)
            for index in range(first + 1, len(befores)):
                request = befores[index](context)
                if request is not None:
                    requests.add(keys[index], hooks[index], request)
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
            for key, after_run in zip(self._after_run_keys, self._after_run_methods):  # noqa: B905 - equal lengths by construction
                if key in merged:
                    after_run(context, _run_values((outputs[key], seen_options, seen_metadata)))
                else:
                    after_run(context, shared_values)
            result = outputs[_CALLER]
        if context._stop_requested:
            self._should_stop = True
        return result


def _positioned(hooks: list[Any], name: str) -> list[tuple[int, Any, Any]]:
    """``(position, hook, bound method)`` for each hook whose ``name`` method does something."""
    return [
        (position, hook, getattr(hook, name))
        for position, hook in enumerate(hooks)
        if overrides(hook, name)
    ]


class _Requests:
    """The hooks' requests of one run, merged as they come."""

    __slots__ = ("merged", "hook_feeds", "feeders", "options", "_caller")

    def __init__(self, fetches: Any, options: Any) -> None:
        self.merged: dict[int, Any] | None = None  # {-1: the caller's fetches, position: a hook's, ...}
        self.hook_feeds: dict[Any, Any] | None = None
        self.feeders: dict[Any, Any] = {}  # fed key -> the hook that fed it
        self.options = options
        self._caller = fetches

    def add(self, key: int, hook: Any, request: Any) -> None:
        if type(request) is not SessionRunArgs:
            _check_request(hook, request)
        if request.fetches is not None:
            if self.merged is None:
                self.merged = {_CALLER: self._caller}
            self.merged[key] = request.fetches
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


_new_context = object.__new__


class _RunContext(SessionRunContext):
    """The context ``HookedSession`` makes per run: ``original_args`` built on first read.

    ``HookedSession.run`` makes it with ``object.__new__`` and sets its fields
    itself (``_fetches``, ``_feed_dict``, ``_session``, ``_stop_requested``,
    ``global_step``): no ``__init__`` frame per run, and none of
    ``SessionRunContext.__init__``, which needs a ``SessionRunArgs``.
    """

    __slots__ = ("_fetches", "_feed_dict")
    _fetches: Any
    _feed_dict: Any

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
