"""``PreemptionHook``: on SIGTERM, checkpoint at the next step boundary and end cleanly.

Schedulers (Kubernetes, Slurm, preemptible VMs) send SIGTERM and kill the
process a grace period later. With this hook in the session, the signal
handler only records the signal (Python runs it in the main thread between
two bytecodes, so it never interrupts a step or a save halfway). After the
run in progress, at the next step boundary:

1. every ``CheckpointSaverHook`` of the session saves a checkpoint of that
   step, unless it just did, and waits until it is committed (an
   asynchronous save included);
2. this hook requests a stop, so the loop ends, every hook's ``end`` runs
   and the ``with`` block closes as after any stop.

If that has not finished ``grace_secs`` after the signal (a step that hangs,
a save to a stalled disk), the process logs what happened and exits at once
with status ``exit_code`` (default ``128 + signum``, the status of a process
killed by that signal). What is on disk is then still consistent: the save
protocol survives a kill at any point.

Put the hook after the ``CheckpointSaverHook`` (``MonitoredTrainingSession``
puts user hooks last), so that its ``end`` runs after the final save.
``preempted`` tells the script, after the loop, whether it was preempted.
"""

from __future__ import annotations

import logging
import numbers
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from looprt.hooks.session_run_hook import SessionRunContext, SessionRunHook, SessionRunValues

__all__ = ["PreemptionHook", "PreemptionNotice", "notice"]

logger = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class PreemptionNotice:
    """The process-wide record of a preemption signal (signals are process-wide).

    ``signum`` is the signal received, or None; ``saved_step`` the step a
    ``CheckpointSaverHook`` saved because of it, or None.
    """

    __slots__ = ("signum", "saved_step")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.saved_step: int | None = None

    def clear(self) -> None:
        self.signum = None
        self.saved_step = None


notice = PreemptionNotice()


class PreemptionHook(SessionRunHook):
    """Stops the loop at the next step boundary after ``signals``, with a final checkpoint.

    ``grace_secs`` bounds the time from the signal to the end of the session
    (the hook's ``end``); past it the process exits with ``exit_code``
    (default ``128 + signum``). The hook must be created and begun in the
    main thread, where Python delivers signals; it installs its handlers in
    ``begin`` and puts the previous ones back in ``end``.
    """

    def __init__(
        self,
        grace_secs: float = 30.0,
        signals: Iterable[int] = (signal.SIGTERM,),
        *,
        exit_code: int | None = None,
    ) -> None:
        real = isinstance(grace_secs, numbers.Real) and not isinstance(grace_secs, bool)
        if not real or not float(grace_secs) > 0:  # NaN fails >
            raise ValueError(f"grace_secs must be a number of seconds > 0, got {grace_secs!r}")
        self._signals = tuple(signal.Signals(s) for s in signals)
        if not self._signals:
            raise ValueError("signals must name at least one signal, such as signal.SIGTERM")
        self._grace_secs = float(grace_secs)
        self._exit_code = exit_code
        self._previous: dict[signal.Signals, _Handler] = {}
        self._watchdog: threading.Timer | None = None
        self.preempted = False

    def begin(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "PreemptionHook must run in the main thread, where Python delivers signals; "
                "run the training loop there"
            )
        notice.clear()
        self.preempted = False
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if notice.signum is not None:
            logger.warning("Received %s again; already stopping at the next step boundary", name)
            return
        notice.signum = signum
        logger.warning(
            "Received %s: saving a checkpoint at the next step boundary, then stopping "
            "(grace period %gs)", name, self._grace_secs,
        )
        watchdog = threading.Timer(self._grace_secs, self._deadline_passed, args=(signum,))
        watchdog.name = "looprt-preemption-deadline"
        watchdog.daemon = True
        self._watchdog = watchdog
        watchdog.start()

    def _deadline_passed(self, signum: int) -> None:
        code = self._exit_code if self._exit_code is not None else 128 + signum
        saved = (
            f"the checkpoint of step {notice.saved_step} was saved"
            if notice.saved_step is not None
            else "no final checkpoint was saved (the last committed one is intact)"
        )
        logger.error(
            "The session did not end within the %gs grace period after %s; %s. Exiting now with status %d.",
            self._grace_secs, signal.Signals(signum).name, saved, code,
        )
        source: logging.Logger | None = logger  # every handler the record may have reached
        while source is not None:
            for handler in source.handlers:
                handler.flush()
            source = source.parent if source.propagate else None
        sys.stderr.flush()
        os._exit(code)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if notice.signum is not None:
            self.preempted = True
            run_context.request_stop()

    def end(self, session: Any) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        if self.preempted and notice.saved_step is None:
            logger.warning(
                "Stopped after %s without a final checkpoint: the session has no CheckpointSaverHook",
                signal.Signals(notice.signum or signal.SIGTERM).name,
            )
        notice.clear()  # handled: a later session in this process starts afresh
