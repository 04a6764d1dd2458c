"""``checkpoints_iterator``: each committed checkpoint of a directory, once, in order, as it appears.

TF's ``tf.compat.v1.train.checkpoints_iterator`` with TF's arguments, over
looprt's checkpoint layer. A checkpoint is *committed* once its folder
``<basename>-<step>`` is in view with its manifest (a save writes into a
``.tmp*`` folder and renames it into place; on object storage the manifest is
the commit record, written last): a folder without a manifest is a save in
progress and is waited for, never yielded. A committed checkpoint is verified
(manifest, every file's size and checksum) before it is yielded; one that
fails is skipped with a ``CheckpointWarning`` naming it and why, once.

Where TF yields only the newest checkpoint at each poll (skipping any written
while the caller was busy), this yields every committed checkpoint newer
than the last one yielded, oldest first; those retention deleted meanwhile,
or is deleting, are skipped. ``latest_only=True`` gives TF's behaviour.

Ending: after ``timeout`` seconds without a new checkpoint, ``timeout_fn()``
is called (no ``timeout_fn``: the iterator ends). If it returns True the
iterator looks once more and yields what committed meanwhile (a trainer that
writes an "I am done" marker after its last save is then never cut short),
then ends; else it goes on waiting.

``checkpoint_dir`` may be a URL (``s3://bucket/run``): checkpoints are then
found by their manifests (``looprt.checkpoint.remote``), verified from a
download that the restore reuses, and ``storage_options`` go to the fsspec
filesystem (see ``looprt.checkpoint.storage``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

from looprt.checkpoint.format import INDEX, MANIFEST, read_index, verify_checkpoint
from looprt.checkpoint.latest import resolve_checkpoint, scan, warn
from looprt.checkpoint.storage import Location, StorageOptions, is_url, split

__all__ = ["CheckpointWatcher", "checkpoints_iterator", "wait_for_new_checkpoint"]

logger = logging.getLogger(__name__)


class CheckpointWatcher:
    """Finds the committed, verified checkpoints of ``directory`` newer than the last one taken.

    One watcher remembers what it handed out (``last_step``) and which
    checkpoints it found damaged (each warned about once). ``poll()`` never
    blocks; ``checkpoints_iterator`` is the blocking loop over it.
    """

    def __init__(
        self, directory: str, *, latest_only: bool = False, storage_options: StorageOptions | None = None
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path, got {type(directory).__name__}")
        self.directory = os.fspath(directory)
        self.latest_only = latest_only
        self.last_step: int | None = None
        self._location = Location(self.directory, storage_options) if is_url(self.directory) else None
        # (name, manifest mtime, or the remote manifest's bytes): warned about
        self._damaged: set[tuple[str, object]] = set()

    def _candidates(self) -> list[tuple[int, str]]:
        """(step, name) of the checkpoint folders in view newer than ``last_step``, oldest first."""
        if self._location is not None:
            from looprt.checkpoint import remote

            index, _ = remote.read_index(self._location, INDEX)
            in_view = remote.committed(self._location.listing(), None)
        else:
            index, _ = read_index(self.directory, INDEX)
            in_view = scan(self.directory, None)
        deleting = set() if index is None else set(index.deleting)
        found = [
            (step, name)
            for step, name in in_view
            if (self.last_step is None or step > self.last_step) and name not in deleting
        ]
        return found[::-1] if self.latest_only else found

    def _poll_remote(self, location: Location) -> str | None:
        from looprt.checkpoint import remote

        for step, name in self._candidates():
            manifest, raw, _ = remote.read_manifest(location, name)
            if manifest is None and not raw:
                continue  # gone (retention) since the listing: nothing to yield, nothing to warn
            if (name, raw) in self._damaged:
                continue
            problem = remote.verify(location, name)
            if problem is not None:
                self._damaged.add((name, raw))
                warn(f"skipping checkpoint {location.url_of(name)}: {problem}; it will not be evaluated")
                continue
            self.last_step = step
            return location.url_of(name)
        return None

    def poll(self) -> str | None:
        """The next checkpoint to evaluate (its path; now ``last_step``), or None if there is none yet."""
        if self._location is not None:
            return self._poll_remote(self._location)
        for step, name in self._candidates():
            path = os.path.join(self.directory, name)
            source = resolve_checkpoint(path)
            try:
                stamp = os.stat(os.path.join(source, MANIFEST)).st_mtime
            except OSError:
                continue  # gone (retention) or not committed yet: nothing to yield, nothing to warn
            if (name, stamp) in self._damaged:
                continue
            problem = verify_checkpoint(source)
            if problem is not None:
                if os.path.lexists(source):  # not simply deleted under us
                    self._damaged.add((name, stamp))
                    warn(f"skipping checkpoint {source}: {problem}; it will not be evaluated")
                continue
            self.last_step = step
            return path
        return None


def wait_for_new_checkpoint(
    checkpoint_dir: str,
    last_checkpoint: str | None = None,
    seconds_to_sleep: float = 1,
    timeout: float | None = None,
    *,
    watcher: CheckpointWatcher | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    storage_options: StorageOptions | None = None,
) -> str | None:
    """Wait until a checkpoint newer than ``last_checkpoint`` commits; its path, or None after ``timeout``.

    TF's function of the same name. With a ``watcher`` (as
    ``checkpoints_iterator`` passes), the watcher's memory decides what is
    new, not ``last_checkpoint``.
    """
    if watcher is None:
        watcher = CheckpointWatcher(checkpoint_dir, latest_only=True, storage_options=storage_options)
        if last_checkpoint is not None:
            watcher.last_step = _step_of(last_checkpoint)
    stop_time = None if timeout is None else clock() + timeout
    while True:
        path = watcher.poll()
        if path is not None:
            return path
        if stop_time is not None and clock() + seconds_to_sleep > stop_time:
            return None
        sleep(seconds_to_sleep)


def _step_of(path: str) -> int | None:
    tail = split(path.rstrip("/"))[1].rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def checkpoints_iterator(
    checkpoint_dir: str,
    min_interval_secs: float = 0,
    timeout: float | None = None,
    timeout_fn: Callable[[], bool] | None = None,
    *,
    latest_only: bool = False,
    poll_secs: float = 1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    storage_options: StorageOptions | None = None,
) -> Iterator[str]:
    """Yield the path of each new committed checkpoint of ``checkpoint_dir``, oldest first.

    Args:
        checkpoint_dir: the directory a trainer saves checkpoints to (it may
            not exist yet).
        min_interval_secs: at least this long between the start of one
            yield and the next (the consumer's work counts towards it).
        timeout: seconds to wait for a new checkpoint before calling
            ``timeout_fn`` (None: wait forever).
        timeout_fn: called after each ``timeout``; True ends the iterator
            (after a last look for checkpoints), False waits again. Without
            one, the iterator ends at the first timeout.
        latest_only: yield only the newest checkpoint at each poll (TF's
            behaviour), skipping older ones not yet yielded.
        poll_secs: how often to look for a new checkpoint (TF: 1 second).
        clock, sleep: injectable for tests.
        storage_options: for a URL ``checkpoint_dir``, the fsspec
            filesystem's keyword arguments (see ``looprt.checkpoint.storage``).

    Yields each checkpoint once, never one being written, and skips (with a
    ``CheckpointWarning``) any that fails verification.
    """
    watcher = CheckpointWatcher(checkpoint_dir, latest_only=latest_only, storage_options=storage_options)
    while True:
        path = wait_for_new_checkpoint(
            checkpoint_dir, None, poll_secs, timeout, watcher=watcher, clock=clock, sleep=sleep
        )
        if path is None:
            if timeout_fn is None:
                logger.info("Timed-out waiting for a checkpoint.")
                return
            if timeout_fn():
                # What committed between the last look and the caller's decision to end.
                while (path := watcher.poll()) is not None:
                    yield path
                return
            continue
        start = clock()
        yield path
        remaining = start + min_interval_secs - clock()
        if remaining > 0:
            sleep(remaining)
