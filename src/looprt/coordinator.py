"""``Coordinator`` and ``LooperThread``: stop a group of threads together.

Semantics are TF's ``tf.train.Coordinator``: any thread may call
``request_stop(ex)``; the first exception reported wins and is re-raised by
``join()`` and ``raise_requested_exception()``; exceptions of the
``clean_stop_exception_types`` (``OutOfRangeError`` by default) stop the
threads without being an error. ``join`` waits for the registered threads,
gives them ``stop_grace_period_secs`` after a stop request, then reports the
stragglers by name.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from looprt.errors import OutOfRangeError

__all__ = ["Coordinator", "LooperThread"]

logger = logging.getLogger(__name__)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class Coordinator:
    """Coordinates the termination of a set of threads."""

    def __init__(
        self, clean_stop_exception_types: Iterable[type[BaseException]] | None = None
    ) -> None:
        if clean_stop_exception_types is None:
            clean_stop_exception_types = (OutOfRangeError,)
        given: Any = clean_stop_exception_types
        if isinstance(given, type):
            given = (given,)
        try:
            types = tuple(given)
        except TypeError:
            raise TypeError(
                "clean_stop_exception_types must be an iterable of exception types, "
                f"got {type(clean_stop_exception_types).__name__}"
            ) from None
        for t in types:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise TypeError(f"clean_stop_exception_types must hold exception types, got {t!r}")
        self._clean_stop_exception_types = types
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._exc_info_to_raise: ExcInfo | None = None
        self._joined = False
        self._registered_threads: set[threading.Thread] = set()

    def _filter_exception(self, ex: Any) -> Any:
        instance = ex[1] if isinstance(ex, tuple) else ex
        if isinstance(instance, self._clean_stop_exception_types):
            return None
        return ex

    def request_stop(self, ex: BaseException | ExcInfo | None = None) -> None:
        """Ask every thread to stop; ``ex`` (an exception or ``sys.exc_info()``) is reported.

        Only the first reported exception is kept. After ``join()`` has run,
        reporting an exception raises it here instead.
        """
        if isinstance(ex, tuple) and (len(ex) != 3 or ex[1] is None):
            raise TypeError(
                f"request_stop(ex): {ex!r} is not an exception or sys.exc_info() of one; "
                "call it inside an except block or pass the exception itself"
            )
        if ex is not None and not isinstance(ex, (BaseException, tuple)):
            raise TypeError(
                f"request_stop(ex): ex must be an exception or sys.exc_info() of one, got {type(ex).__name__}"
            )
        with self._lock:
            ex = self._filter_exception(ex)
            if self._joined and ex is not None:
                raise ex[1] if isinstance(ex, tuple) else ex
            if self._stop_event.is_set():
                return
            if ex is not None and self._exc_info_to_raise is None:
                if isinstance(ex, tuple):
                    logger.info("Error reported to Coordinator: %s", ex[1], exc_info=ex)
                    self._exc_info_to_raise = ex
                else:
                    logger.info("Error reported to Coordinator: %s, %s", type(ex), ex)
                    self._exc_info_to_raise = (type(ex), ex, ex.__traceback__)
            self._stop_event.set()

    def clear_stop(self) -> None:
        """Forget the stop request and the reported exception, so threads can restart."""
        with self._lock:
            self._joined = False
            self._exc_info_to_raise = None
            self._stop_event.clear()

    def should_stop(self) -> bool:
        """Whether a stop was requested."""
        return self._stop_event.is_set()

    @contextlib.contextmanager
    def stop_on_exception(self) -> Iterator[None]:
        """Report any exception raised inside the block, and stop."""
        try:
            yield
        except BaseException:  # noqa: BLE001 - reported, as TF does, including SystemExit
            self.request_stop(ex=sys.exc_info())  # type: ignore[arg-type]

    def wait_for_stop(self, timeout: float | None = None) -> bool:
        """Wait until a stop is requested; True if it was, False on timeout."""
        return self._stop_event.wait(timeout)

    def register_thread(self, thread: threading.Thread) -> None:
        """Have ``join()`` wait for ``thread``."""
        if not (callable(getattr(thread, "join", None)) and callable(getattr(thread, "is_alive", None))):
            raise TypeError(
                f"register_thread(thread): expected a threading.Thread, "
                f"got {type(thread).__name__}"
            )
        with self._lock:
            self._registered_threads.add(thread)

    def join(
        self,
        threads: Iterable[threading.Thread] | None = None,
        stop_grace_period_secs: float = 120,
        ignore_live_threads: bool = False,
    ) -> None:
        """Wait for the threads to finish, then raise the first reported exception.

        Waits for all registered threads (and ``threads``) until they end or a
        stop is requested; after a stop, gives them ``stop_grace_period_secs``.
        Threads still alive then are named in a ``RuntimeError`` (or in a log
        message with ``ignore_live_threads``).
        """
        with self._lock:
            waiting = set(self._registered_threads)
            if threads is not None:
                waiting |= set(threads)
            pending = list(waiting)
        while any(t.is_alive() for t in pending) and not self.wait_for_stop(1.0):
            pass
        deadline = time.monotonic() + stop_grace_period_secs
        pause = 0.001
        while any(t.is_alive() for t in pending):
            remaining = deadline - time.monotonic()
            if remaining < 0:
                break
            time.sleep(min(pause, max(remaining, 0.001)))
            pause *= 2
        stragglers = [t.name for t in pending if t.is_alive()]
        with self._lock:
            self._joined = True
            self._registered_threads = set()
            if self._exc_info_to_raise is not None:
                raise self._exc_info_to_raise[1]
            if stragglers:
                message = "Coordinator stopped with threads still running: " + " ".join(stragglers)
                if ignore_live_threads:
                    logger.info(message)
                else:
                    raise RuntimeError(message)

    @property
    def joined(self) -> bool:
        """Whether ``join()`` has finished."""
        return self._joined

    def raise_requested_exception(self) -> None:
        """Raise the exception reported to ``request_stop``, if any."""
        with self._lock:
            if self._exc_info_to_raise is not None:
                raise self._exc_info_to_raise[1]


class LooperThread(threading.Thread):
    """A thread that runs ``target`` (or ``run_loop``) until the coordinator stops.

    With ``timer_interval_secs`` it runs every that many seconds, otherwise
    back to back. Exceptions are reported to the coordinator. The thread is
    a daemon and registers itself with ``coord``.
    """

    def __init__(
        self,
        coord: Coordinator,
        timer_interval_secs: float | None,
        target: Callable[..., Any] | None = None,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(coord, Coordinator):
            raise ValueError(f"'coord' argument must be a Coordinator: {coord}")
        super().__init__()
        self.daemon = True
        self._coord = coord
        self._timer_interval_secs = timer_interval_secs
        self._looper_target = target
        if target is None and (args or kwargs):
            raise ValueError("'args' and 'kwargs' argument require that you also pass 'target'")
        self._looper_args = tuple(args or ())
        self._looper_kwargs = dict(kwargs or {})
        coord.register_thread(self)

    @staticmethod
    def loop(
        coord: Coordinator,
        timer_interval_secs: float | None,
        target: Callable[..., Any],
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> LooperThread:
        """Start a ``LooperThread`` that calls ``target`` repeatedly; return it."""
        looper = LooperThread(coord, timer_interval_secs, target=target, args=args, kwargs=kwargs)
        looper.start()
        return looper

    def run(self) -> None:
        with self._coord.stop_on_exception():
            self.start_loop()
            if self._timer_interval_secs is None:
                while not self._coord.should_stop():
                    self.run_loop()
            else:
                next_time = time.time()
                while not self._coord.wait_for_stop(next_time - time.time()):
                    next_time += self._timer_interval_secs
                    self.run_loop()
            self.stop_loop()

    def start_loop(self) -> None:
        """Called once when the thread starts."""

    def stop_loop(self) -> None:
        """Called once when the loop ends."""

    def run_loop(self) -> None:
        """Called at each iteration; calls ``target`` by default."""
        if self._looper_target is not None:
            self._looper_target(*self._looper_args, **self._looper_kwargs)
