"""``NanTensorHook``: stop, or fail, when the loss becomes NaN.

Mirrors ``tf.compat.v1.train.NanTensorHook``: the loss is fetched on every
run; when it is NaN the hook logs ``"Model diverged with loss = NaN."`` on the
``"looprt.hooks.nan_tensor"`` logger and either raises ``NanLossDuringTrainingError`` (at
ERROR, the default) or, with ``fail_on_nan_loss=False``, requests a stop (at
WARNING). The error propagates out of ``run``, so hooks' ``end`` is not called.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from looprt.errors import LooprtError
from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)

__all__ = ["NanLossDuringTrainingError", "NanTensorHook"]

logger = logging.getLogger(__name__)

_FAILURE_MESSAGE = "Model diverged with loss = NaN."


class NanLossDuringTrainingError(LooprtError, RuntimeError):
    """The loss watched by a ``NanTensorHook`` became NaN."""

    def __str__(self) -> str:
        return "NaN loss during training."


class NanTensorHook(SessionRunHook):
    """Fetches ``loss_tensor`` every run; raises or requests a stop when it is NaN."""

    #: Where the hook logs: this module's logger; the TF drop-in's hooks log on TF's "tensorflow".
    logger: logging.Logger = logger

    def __init__(self, loss_tensor: Any, fail_on_nan_loss: bool = True) -> None:
        self._loss_tensor = loss_tensor
        self._fail_on_nan_loss = fail_on_nan_loss

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs:
        return SessionRunArgs(self._loss_tensor)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if np.isnan(run_values.results):
            if self._fail_on_nan_loss:
                self.logger.error(_FAILURE_MESSAGE)
                raise NanLossDuringTrainingError
            self.logger.warning(_FAILURE_MESSAGE)
            run_context.request_stop()
