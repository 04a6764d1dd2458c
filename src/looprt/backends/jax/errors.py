"""Which JAX runtime errors mean a lost peer or an aborted collective.

XLA's runtime errors carry their status code first (``UNAVAILABLE: ...``);
in a ``jax.distributed`` job a lost peer or coordinator surfaces as
``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` and a cancelled collective as
``ABORTED``. ``MonitoredSession`` recovers from the looprt errors these map to.
"""

from __future__ import annotations

from looprt.errors import AbortedError, OpError, UnavailableError

__all__ = ["translate"]

_CODES: dict[str, type[OpError]] = {
    "UNAVAILABLE": UnavailableError,
    "DEADLINE_EXCEEDED": UnavailableError,
    "ABORTED": AbortedError,
}


def translate(error: BaseException) -> OpError | None:
    """The looprt error ``error`` means, or None to raise it as it is."""
    if not isinstance(error, RuntimeError):
        return None
    code = str(error).partition(":")[0].strip()
    kind = _CODES.get(code)
    return None if kind is None else kind(f"the JAX runtime reported {error}")
