"""Backends: the protocols every framework adapter follows, and the registry.

Nothing here imports a framework; each adapter imports its own lazily. The
default implementation adapters subclass is ``looprt.program.ProgramBackend``.
"""

from looprt.backends.protocol import Backend, CountingSession, EndableSession, EpochSession, Session
from looprt.backends.registry import available_backends, get_backend, register_backend

__all__ = [
    "Backend",
    "CountingSession",
    "EndableSession",
    "EpochSession",
    "Session",
    "available_backends",
    "get_backend",
    "register_backend",
]
