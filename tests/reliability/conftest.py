"""Shared fixtures of the reliability tests: fault hooks that fail or block a save at a boundary."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from looprt.checkpoint import set_fault_hook


class Faults:
    """Installs ``looprt.checkpoint``'s fault hook for one test; records every boundary passed.

    ``fail_at(boundary, error)`` raises ``error`` the next time ``boundary``
    is reached; ``block_at(boundary)`` holds the saving thread there until
    ``release()`` (and returns an event set once it is held).
    """

    def __init__(self) -> None:
        self.passed: list[tuple[str, str, str]] = []  # (boundary, subject, thread name)
        self._actions: dict[tuple[str, str | None], Callable[[], None]] = {}
        self._gate = threading.Event()

    def __call__(self, boundary: str, subject: str) -> None:
        self.passed.append((boundary, subject, threading.current_thread().name))
        action = self._actions.pop((boundary, subject), None) or self._actions.pop((boundary, None), None)
        if action is not None:
            action()

    def fail_at(self, boundary: str, error: BaseException, subject: str | None = None) -> None:
        """Raise ``error`` at ``boundary`` (for ``subject`` only, if given), once."""

        def fail() -> None:
            raise error

        self._actions[boundary, subject] = fail

    def block_at(self, boundary: str) -> threading.Event:
        held = threading.Event()

        def block() -> None:
            held.set()
            if not self._gate.wait(timeout=60):
                raise TimeoutError(f"the test never released the save held at {boundary}")

        self._gate.clear()
        self._actions[boundary, None] = block
        return held

    def release(self) -> None:
        self._gate.set()

    def boundaries(self, subject: str | None = None) -> list[str]:
        return [b for b, s, _ in self.passed if subject is None or s == subject]


@pytest.fixture
def faults() -> Iterator[Faults]:
    recorder = Faults()
    previous = set_fault_hook(recorder)
    try:
        yield recorder
    finally:
        recorder.release()
        set_fault_hook(previous)
