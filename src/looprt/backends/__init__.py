"""Backends: the protocol every framework adapter follows, and the registry.

Nothing here imports a framework; each adapter imports its own lazily.
"""

from looprt.backends.protocol import Backend, ProgramBackend, Session
from looprt.backends.registry import available_backends, get_backend, register_backend

__all__ = [
    "Backend",
    "ProgramBackend",
    "Session",
    "available_backends",
    "get_backend",
    "register_backend",
]
