"""Which PyTorch errors mean that a peer of a distributed job was lost.

``translate`` maps them to looprt's: a peer that went away (its connection
closed or reset, a network or store error) to ``UnavailableError``; a
collective that was aborted or timed out (a peer that hangs, or a
communicator torn down) to ``AbortedError``. Both are what
``MonitoredSession`` recovers from. Everything else is left as it is.
"""

from __future__ import annotations

import torch

from looprt.errors import AbortedError, OpError, UnavailableError

__all__ = ["translate"]

# Gloo and NCCL report lost peers as plain RuntimeErrors; these phrases identify them.
_LOST_PEER = (
    "connection closed by peer",
    "connection reset by peer",
    "connection refused",
    "broken pipe",
    "remote process exited",
    "network error",
)
_ABORTED = ("aborted", "timed out", "timeout")
_DISTRIBUTED = ("gloo", "nccl", "processgroup", "c10d")


def _dist_error(name: str) -> type[BaseException] | None:
    distributed = getattr(torch, "distributed", None)
    found = getattr(distributed, name, None)
    return found if isinstance(found, type) else None


def translate(error: BaseException) -> OpError | None:
    """The looprt error ``error`` means, or None to raise it as it is."""
    if not isinstance(error, RuntimeError):
        return None
    message = str(error)
    lowered = message.lower()
    lost_types = tuple(t for t in map(_dist_error, ("DistNetworkError", "DistStoreError")) if t)
    backend_error = _dist_error("DistBackendError")
    if lost_types and isinstance(error, lost_types):
        return UnavailableError(f"a peer of the distributed job was lost: {message}")
    is_distributed = (backend_error is not None and isinstance(error, backend_error)) or any(
        word in lowered for word in _DISTRIBUTED
    )
    if not is_distributed:
        return None
    if any(phrase in lowered for phrase in _LOST_PEER):
        return UnavailableError(f"a peer of the distributed job was lost: {message}")
    if any(phrase in lowered for phrase in _ABORTED):
        return AbortedError(f"a collective operation was aborted: {message}")
    return None
