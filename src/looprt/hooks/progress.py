"""``ProgressBarHook``: a tqdm progress bar of the global step, with the latest metrics.

Not in TF. The bar counts global steps: it starts at the global step found
when the session is created (so a restored run resumes where it was) and
goes to ``total`` (e.g. a ``StopAtStepHook``'s last step; None: no end; a
callable is asked when the session is created, after earlier hooks' setup,
e.g. ``lambda: stop_hook.last_step``).
The global step is fetched with every run (a host-side read) and the bar
moves to the predicted step (the value read plus one); on runs that also
fetch ``tensors`` and in ``end`` the exact step is read again.

``tensors`` (a dict of tag to fetchable) is fetched every ``every_n_steps``
global steps and shown as the bar's postfix (``loss=0.123``). Output goes
through tqdm (stderr by default); ``disable=None``, the default, lets tqdm
hide the bar when its output is not a terminal, ``False`` forces it. Other
keyword arguments go to ``tqdm.tqdm``. The bar is closed in ``end``; ``bar``
is the tqdm object (None before the session exists).

While the bar is shown, log records that the root logger or the ``looprt``
logger would write to standard error or output go through ``tqdm.write``
(tqdm's ``logging_redirect_tqdm``) so that they print above the bar instead
of over it; ``end`` (or the next ``begin``, after a session that failed)
puts the handlers back.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import numbers
import sys
from collections.abc import Callable, Mapping
from typing import Any

from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.timer import SecondOrStepTimer
from looprt.training_util import get_global_step

__all__ = ["ProgressBarHook"]


class ProgressBarHook(SessionRunHook):
    """Shows the global step as a tqdm bar up to ``total``, with ``tensors`` as postfix."""

    def __init__(
        self,
        total: int | Callable[[], int | None] | None = None,
        every_n_steps: int = 1,
        tensors: Mapping[str, Any] | None = None,
        *,
        desc: str | None = None,
        disable: bool | None = None,
        unit: str = "step",
        **tqdm_kwargs: Any,
    ) -> None:
        if every_n_steps is None or every_n_steps <= 0:
            raise ValueError(f"invalid every_n_steps={every_n_steps}.")
        if tensors is not None and not isinstance(tensors, Mapping):
            raise TypeError(f"tensors must be a dict of tag to fetchable, got {type(tensors).__name__}")
        if isinstance(total, numbers.Real) and total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self._total = total
        self._tensors = dict(tensors) if tensors else None
        self._timer = SecondOrStepTimer(every_steps=every_n_steps)
        self._tqdm_kwargs = dict(tqdm_kwargs, desc=desc, disable=disable, unit=unit)
        self._bar: Any = None
        self._redirect: contextlib.ExitStack | None = None
        self._global_step: Any = None
        self._step = 0
        self._fetch_tensors = False

    @property
    def bar(self) -> Any:
        """The ``tqdm.tqdm`` bar (None until the session is created)."""
        return self._bar

    def begin(self) -> None:
        """A new bar for each session the hook is used in."""
        self._restore_logging()
        self._bar = None
        self._timer.reset()

    def after_create_session(self, session: Any, coord: Any) -> None:
        try:
            self._global_step = get_global_step(session.graph)
        except RuntimeError as error:
            raise RuntimeError("Global step should be created to use ProgressBarHook.") from error
        step = int(session.run(self._global_step))
        if self._bar is None:
            tqdm = importlib.import_module("tqdm").tqdm  # imported on first use; untyped

            total = self._total() if callable(self._total) else self._total
            self._bar = tqdm(total=total, initial=step, **self._tqdm_kwargs)
            self._step = step
            if not self._bar.disable:
                self._redirect_logging()
        else:  # recovery: the new session may have restored an older step
            self._move_to(step)

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        self._fetch_tensors = self._tensors is not None and self._timer.should_trigger_for_step(
            self._step + 1
        )
        requests: dict[str, Any] = {}
        if getattr(run_context, "global_step", None) is None:
            requests["global_step"] = self._global_step
        if self._fetch_tensors:
            requests["tensors"] = self._tensors
        return SessionRunArgs(requests) if requests else None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        results = run_values.results or {}
        try:
            before = run_context.global_step
        except AttributeError:  # TF's own run context has none
            before = None
        step = int(before if before is not None else results["global_step"]) + 1
        if self._fetch_tensors:
            step = int(run_context.session.run(self._global_step))
            self._timer.update_last_triggered_step(step)
            self._bar.set_postfix(results["tensors"], refresh=False)
        self._move_to(step)

    def end(self, session: Any) -> None:
        if self._bar is None:
            return
        self._move_to(int(session.run(self._global_step)))
        self._bar.close()
        self._restore_logging()

    def _redirect_logging(self) -> None:
        """Send console log records through ``tqdm.write`` while the bar is shown."""
        redirect = importlib.import_module("tqdm.contrib.logging").logging_redirect_tqdm
        console = (sys.stdout, sys.stderr)
        package = logging.root.manager.loggerDict.get("looprt")  # looprt's own, if anyone configured it
        loggers = [
            logger
            for logger in (logging.root, package)
            if isinstance(logger, logging.Logger)
            and any(isinstance(h, logging.StreamHandler) and h.stream in console for h in logger.handlers)
        ]
        if loggers:
            stack = contextlib.ExitStack()
            stack.enter_context(redirect(loggers=loggers))
            self._redirect = stack

    def _restore_logging(self) -> None:
        redirect, self._redirect = self._redirect, None
        if redirect is not None:
            redirect.close()

    def _move_to(self, step: int) -> None:
        if step != self._step:
            self._bar.update(step - self._step)
            self._step = step
