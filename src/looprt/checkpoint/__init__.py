"""Crash-safe checkpoints: ``CheckpointManager`` owns a directory; ``Saver`` is TF's API over it.

A checkpoint is a folder ``<basename>-<step>`` holding the backend's payload
files and a ``manifest.json`` (format version, step, wall time, backend, each
file's size and checksum, and a checksum of the manifest itself). A save
writes into a fresh ``.tmp*`` folder, fsyncs every file, the manifest and the
folder, renames the folder into place, and only then atomically replaces the
index ``checkpoint.json`` (latest checkpoint, kept checkpoints in order, with
times, and its own checksum). A crash at any point leaves the previous
checkpoints and index in view; leftover ``.tmp*`` entries are cleaned up by
the next save. A save that fails undoes what it did: a full disk raises
``ResourceExhaustedError``, an unwritable folder ``PermissionDeniedError``.

Readers trust nothing unverified: ``latest_checkpoint`` checks the manifest and
every file's size and checksum, and skips a bad checkpoint with a
``CheckpointWarning`` (and a log warning) naming it and why, falling back to
the previous good one; an unreadable index falls back to scanning the folder.
One manager, in one process, writes a directory at a time (as with TF).

Retention writes the index first, naming the checkpoints it is about to
delete, then deletes them; deletions a crash interrupted are finished by the
next save. Replacing a checkpoint of the same step moves the old folder aside
first; readers use that copy if a crash left it there.

``save_async`` (and ``Saver.save_async``) write in a background thread, at
most one save in flight per manager; a background failure is logged when it
happens and raised by the next save, ``wait_until_finished()`` or ``close()``.

Every step of the protocol is a named boundary (``BOUNDARIES``).
``set_fault_hook`` installs a function called at each one, so that tests can
kill or fail a save at any of them; without a hook a boundary costs one
global lookup.

The modules, one concept each (all log to the ``looprt.checkpoint`` logger):

* ``faults``: the named boundaries and the fault hook;
* ``format``: the on-disk format: names, checksums, manifests, the index,
  ``verify_checkpoint``;
* ``files``: file-system helpers (fsync, delete without raising);
* ``latest``: reading a directory: ``latest_checkpoint``, skipping damaged
  checkpoints with a ``CheckpointWarning``, and listing every checkpoint;
* ``commit``: writing one checkpoint and renaming it into place; cleaning up
  what interrupted saves left;
* ``retention``: which checkpoints to keep, the index, deleting the rest;
* ``manager``: ``CheckpointManager``, the facade that runs a save through
  ``commit`` and ``retention`` (in the background for ``save_async``);
* ``saver``: ``Saver`` and ``ManagerCache``.
"""

from looprt.checkpoint.commit import Writer
from looprt.checkpoint.faults import BOUNDARIES, FaultHook, set_fault_hook
from looprt.checkpoint.format import (
    CHECKSUMS,
    FORMAT_VERSION,
    INDEX,
    MANIFEST,
    TMP_PREFIX,
    WRITE_CHECKSUM,
    verify_checkpoint,
)
from looprt.checkpoint.latest import CheckpointInfo, CheckpointWarning, latest_checkpoint
from looprt.checkpoint.manager import CheckpointManager
from looprt.checkpoint.saver import ManagerCache, Saver

__all__ = [
    "BOUNDARIES",
    "CHECKSUMS",
    "FORMAT_VERSION",
    "INDEX",
    "MANIFEST",
    "TMP_PREFIX",
    "WRITE_CHECKSUM",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointWarning",
    "FaultHook",
    "ManagerCache",
    "Saver",
    "Writer",
    "latest_checkpoint",
    "set_fault_hook",
    "verify_checkpoint",
]
