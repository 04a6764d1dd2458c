"""Evaluation: each checkpoint a trainer commits, restored and evaluated as it appears.

* ``iterator``: ``checkpoints_iterator`` yields each committed, verified
  checkpoint of a directory once, in order (TF's arguments);
* ``evaluate``: ``evaluate_once`` / ``evaluate_repeatedly`` restore a
  checkpoint into a session that neither advances nor saves the global step
  and run an evaluation step until its input ends or a hook stops it;
* ``looprt.metrics`` (its own module): streaming metrics (``Mean``,
  ``Accuracy``, ``Sum``, custom ``Reduce``) over host values, re-exported here;
* ``hooks``: ``StopAfterNEvalsHook``, ``SummaryAtEndHook``, ``MetricsHook``;
* ``sidecar``: what ``looprt evaluate DIR`` runs beside a training process.

The summaries of an evaluation go to ``<checkpoint dir>/eval`` at the
checkpoint's global step, so TensorBoard shows them beside the training
curves.
"""

from looprt.evaluation.evaluate import evaluate_once, evaluate_repeatedly, evaluations
from looprt.evaluation.hooks import MetricsHook, StopAfterNEvalsHook, SummaryAtEndHook
from looprt.evaluation.iterator import CheckpointWatcher, checkpoints_iterator, wait_for_new_checkpoint
from looprt.metrics import Accuracy, Mean, Metric, Reduce, Sum

__all__ = [
    "Accuracy",
    "CheckpointWatcher",
    "Mean",
    "Metric",
    "MetricsHook",
    "Reduce",
    "StopAfterNEvalsHook",
    "Sum",
    "SummaryAtEndHook",
    "checkpoints_iterator",
    "evaluate_once",
    "evaluate_repeatedly",
    "evaluations",
    "wait_for_new_checkpoint",
]
