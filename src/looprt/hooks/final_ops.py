"""``FinalOpsHook``: evaluate some fetchables once, when the session ends cleanly.

Mirrors ``tf.compat.v1.train.FinalOpsHook``: in ``end`` the hook runs
``final_ops`` (any fetch structure) with ``final_ops_feed_dict`` on the raw
session and keeps the result in ``final_ops_values`` (None until then, and
if the session ended with an error, since ``end`` is not called then). If
that run raises ``OutOfRangeError`` or ``StopIteration`` — the final ops pull
from an exhausted input — a warning explains why and the error propagates.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from looprt.errors import OutOfRangeError
from looprt.hooks.session_run_hook import SessionRunHook

__all__ = ["FinalOpsHook"]

logger = logging.getLogger(__name__)

_OUT_OF_RANGE_WARNING = (
    "An OutOfRangeError or StopIteration exception is raised by the code in FinalOpsHook. This "
    "typically means the Ops running by the FinalOpsHook have a dependency back to some input "
    "source, which should not happen. For example, for metrics in tf.estimator.Estimator, all "
    "metrics functions return two Ops: `value_op` and  `update_op`. Estimator.evaluate calls the "
    "`update_op` for each batch of the data in input source and, once it is exhausted, it call "
    "the `value_op` to get the metric values. The `value_op` here should have dependency back to "
    "variables reading only, rather than reading another batch from input. Otherwise, the "
    "`value_op`, executed by `FinalOpsHook`, triggers another data reading, which ends "
    "OutOfRangeError/StopIteration. Please fix that."
)


def _end_of_input_errors() -> tuple[type[BaseException], ...]:
    """looprt's and, when TF is already loaded, TF's end-of-input errors."""
    errors: tuple[type[BaseException], ...] = (OutOfRangeError, StopIteration)
    tf_errors = sys.modules.get("tensorflow.python.framework.errors_impl")
    tf_out_of_range = getattr(tf_errors, "OutOfRangeError", None)
    if isinstance(tf_out_of_range, type) and issubclass(tf_out_of_range, BaseException):
        errors += (tf_out_of_range,)
    return errors


class FinalOpsHook(SessionRunHook):
    """Runs ``final_ops`` in ``end``; the values are in ``final_ops_values``."""

    def __init__(self, final_ops: Any, final_ops_feed_dict: Any = None) -> None:
        self._final_ops = final_ops
        self._final_ops_feed_dict = final_ops_feed_dict
        self._final_ops_values: Any = None

    @property
    def final_ops_values(self) -> Any:
        """What ``final_ops`` evaluated to in ``end`` (None before)."""
        return self._final_ops_values

    def end(self, session: Any) -> None:
        if self._final_ops is None:
            return
        try:
            self._final_ops_values = session.run(self._final_ops, feed_dict=self._final_ops_feed_dict)
        except _end_of_input_errors():
            logger.warning(_OUT_OF_RANGE_WARNING)
            raise
