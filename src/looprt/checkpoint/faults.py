"""Named fault boundaries of the save protocol, and the hook that is called at each.

Every step of the protocol is a named boundary (``BOUNDARIES``).
``set_fault_hook`` installs a function called at each one, so that tests can
kill or fail a save at any of them; without a hook a boundary costs one
global lookup. The hook is kept here, and only here: every boundary of every
save goes through ``boundary``.
"""

from __future__ import annotations

from collections.abc import Callable

# The save protocol, in order. Each name is a point between two steps of it
# where a crash, a full disk or an error may strike; ``[file]`` boundaries are
# passed each payload file, ``retention.*`` ones each checkpoint deleted.
BOUNDARIES: tuple[str, ...] = (
    "save.begin",  # the lock is held, nothing written yet
    "stale.remove",  # before removing what an interrupted save left
    "tmp.created",  # the temporary folder exists, empty
    "payload.write.before",
    "payload.write.after",  # the backend wrote its files; nothing fsynced
    "payload.fsync.before",  # [file]
    "payload.fsync.after",  # [file]
    "payload.dir_fsync.after",  # subfolders of the payload fsynced
    "manifest.write.before",
    "manifest.write.after",  # written and flushed, not fsynced
    "manifest.fsync.after",
    "tmp.dir_fsync.after",  # the temporary folder is complete and durable
    "commit.move_aside.after",  # a checkpoint of the same step moved aside
    "commit.rename.before",
    "commit.rename.after",  # the checkpoint is in place, not yet indexed
    "commit.dir_fsync.after",
    "commit.displaced_delete.after",
    "index.write.before",
    "index.write.after",  # the new index written to a temporary file
    "index.fsync.after",
    "index.replace.after",  # the new index is in place: the save is committed
    "index.dir_fsync.after",
    "retention.delete.before",  # [checkpoint]
    "retention.move_aside.after",  # [checkpoint] renamed out of view
    "retention.delete.after",  # [checkpoint]
    "save.end",
)

# The save protocol at a URL (``remote_commit``), in order: no rename, the
# manifest written last is the commit record.
REMOTE_BOUNDARIES: tuple[str, ...] = (
    "save.begin",
    "stale.remove",  # before deleting an interrupted upload or a replaced attempt
    "payload.write.before",
    "payload.write.after",  # the backend wrote its files into a local temporary folder
    "upload.file.before",  # [file]
    "upload.file.after",  # [file]
    "upload.manifest.before",  # every payload file uploaded; the checkpoint does not exist yet
    "upload.manifest.after",  # the checkpoint exists, complete; not yet indexed
    "index.write.before",
    "index.replace.after",  # the new index is written: the save is committed
    "retention.delete.before",  # [checkpoint]
    "retention.manifest_delete.after",  # [checkpoint] gone for readers; its files remain
    "retention.delete.after",  # [checkpoint]
    "save.end",
)

FaultHook = Callable[[str, str], None]
_fault_hook: FaultHook | None = None


def set_fault_hook(hook: FaultHook | None) -> FaultHook | None:
    """Call ``hook(boundary, subject)`` at every boundary of a save; return the previous hook.

    For fault-injection tests: ``boundary`` is one of ``BOUNDARIES`` and
    ``subject`` the checkpoint, payload file or index concerned. The hook runs
    in the saving thread with the manager's lock held; what it raises fails
    the save at that point, and ``os.kill(os.getpid(), SIGKILL)`` there is a
    crash at that point. None removes it. Process-wide; not for production.
    """
    global _fault_hook
    previous, _fault_hook = _fault_hook, hook
    return previous


def boundary(name: str, subject: str) -> None:
    """Mark that a save reached boundary ``name`` (one of ``BOUNDARIES``) for ``subject``."""
    hook = _fault_hook
    if hook is not None:
        hook(name, subject)
