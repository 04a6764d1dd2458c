"""TF-format checkpoints, written through looprt's crash-safe ``CheckpointManager``.

TF writes a checkpoint as several files sharing a prefix (``.index``,
``.data-*``, ``.meta``). Here each save hands TF a prefix *inside the
manager's fresh temporary folder*: TF writes its files there, the manager
fsyncs and checksums them into the manifest, renames the folder to
``<dir>/<basename>-<step>`` and only then replaces the index. A crash
mid-save thus leaves no half checkpoint in view, exactly as for every other
backend. (Letting TF write next to the index and recording its files
afterwards would leave TF's partial files in place on a crash, and renaming
them one by one is not atomic.)

Each checkpoint folder holds TF's files under the prefix
``<basename>-<step>`` plus TF's ``checkpoint`` state file naming it, so the
folder itself is what TF's readers take::

    tf.train.load_checkpoint("ckpts/model.ckpt-100")    # or list_variables, ...

After every indexed save a TF ``checkpoint`` state file in the directory is
updated too (after looprt's index, which stays the authority), so
``tf.train.latest_checkpoint("ckpts")`` and TF's own ``Saver`` and
``MonitoredSession`` find the newest one. Going the other way,
``latest_checkpoint`` falls back to a plain TF checkpoint when the directory
has no looprt checkpoint, so a job moved onto looprt resumes from what TF
wrote.

At a URL whose scheme TF's file layer serves (``gs://``, ``ram://``, a
plug-in's) checkpoints are uploaded as at any URL (``looprt.checkpoint.remote``:
payload under ``<name>/<attempt>/``, the manifest last), through fsspec, or
through ``tf.io.gfile`` where no fsspec implementation has the scheme
(``gfile_fs``). TF's ``checkpoint`` state file at the URL then names the
prefixes ``<name>/<attempt>/<name>``, so ``tf.train.latest_checkpoint(url)``
and ``tf.train.load_checkpoint`` read them; a restore downloads and verifies
the checkpoint into a temporary folder and TF reads it there.

``ManagedSaver`` is what both TF savers share: ``GraphSaver`` (graph mode,
``graph_saver.py``) wraps a ``tf.compat.v1.train.Saver``; ``ObjectSaver``
(eager mode, ``object_saver.py``) writes a ``tf.train.Checkpoint`` of a looprt
program's live objects.
"""

from __future__ import annotations

import errno
import logging
import operator
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from typing import Any

import tensorflow as tf

from looprt.checkpoint import MANIFEST, CheckpointManager, ManagerCache, verify_checkpoint
from looprt.checkpoint import latest_checkpoint as looprt_latest_checkpoint
from looprt.checkpoint.format import take_recent_verification
from looprt.checkpoint.remote import open_verified, payload_objects, read_manifest
from looprt.checkpoint.storage import Location, is_url, scheme, split
from looprt.errors import UnimplementedError

__all__ = ["TF_STATE_FILE", "ManagedSaver", "step_of", "tf_prefix"]

logger = logging.getLogger(__name__)

TF_STATE_FILE = "checkpoint"


def tf_prefix(folder: str) -> str:
    """The TF checkpoint prefix inside looprt checkpoint folder ``folder``."""
    folder = os.path.normpath(os.fspath(folder))
    return os.path.join(folder, os.path.basename(folder))


def _write_tf_state(directory: str, latest: str, all_paths: Iterable[str]) -> None:
    """Atomically write TF's ``checkpoint`` state file, with paths relative to ``directory``."""
    # An absolute save_dir keeps TF from rewriting the relative paths against the cwd.
    proto = tf.compat.v1.train.generate_checkpoint_state_proto(
        os.path.abspath(directory), latest, all_model_checkpoint_paths=list(all_paths)
    )
    fd, tmp = _new_file(directory, f"{TF_STATE_FILE}.", ".looprt-tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(str(proto))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, TF_STATE_FILE))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _new_file(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file of a fresh name, made as TF makes its files: mode 0666 less the umask (so 0644).

    (``tempfile.mkstemp`` would make it 0600, and the rename would keep that.)
    """
    while True:
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def _relative_prefix(folder: str) -> str:
    name = os.path.basename(os.path.normpath(folder))
    return f"{name}/{name}"


def _files_under(folder: str) -> list[str]:
    names = []
    for root, _, files in os.walk(folder):
        for name in files:
            names.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(names)


def require_tf_filesystem(path: Any) -> None:
    """Nothing if ``path`` is local or TF's file layer has its URL scheme; else a clear error.

    TF-format checkpoints at a URL are only useful where TF itself reads that
    URL (``tf.train.latest_checkpoint``, ``tf.train.load_checkpoint``); TF 2.x
    wheels have ``gs://`` built in but no longer ``s3://`` (that moved to the
    ``tensorflow-io`` package). Never falls back to a local folder named after the URL.
    A scheme TF serves and no fsspec implementation does (``ram://``, ``gs://``
    without ``gcsfs``) is registered in fsspec over ``tf.io.gfile`` (``gfile_fs``),
    so that looprt's own writes reach it; one fsspec serves is left to fsspec.

    Raises:
        UnimplementedError: TF has no file system for the scheme of ``path``.
    """
    if not is_url(path):
        return
    try:
        tf.io.gfile.exists(os.fspath(path))
    except tf.errors.UnimplementedError as e:
        proto = scheme(os.fspath(path))
        raise UnimplementedError(
            f"cannot use {path!r} as a TF checkpoint directory: this TensorFlow ({tf.__version__}) has "
            f"no file system for {proto}:// ({e.message}). TF-format checkpoints there would be "
            f"unreadable by tf.train.latest_checkpoint. Install the package that registers it "
            f"(tensorflow-io for s3://), or save with looprt.checkpoint.Saver(..., storage_options=...) "
            "or to a local directory"
        ) from e
    except tf.errors.OpError:
        pass  # the scheme is known to TF; reaching the store is the save's business
    _serve_in_fsspec(scheme(os.fspath(path)))


def _serve_in_fsspec(proto: str) -> None:
    """Have fsspec (looprt's way to URLs) serve ``proto`` with TF's file layer if nothing else does."""
    try:
        import fsspec
    except ImportError:
        return  # looprt's storage layer says what to install
    try:
        fsspec.get_filesystem_class(proto)
    except (ImportError, ValueError):
        from looprt.backends.tensorflow.gfile_fs import register

        register(proto)


class _NothingToSave(Exception):
    """TF wrote nothing (an empty saver): abandon the checkpoint."""


class ManagedSaver:
    """TF-format saves through one ``CheckpointManager`` per directory and basename; finding them.

    A subclass (``GraphSaver``, ``ObjectSaver``) implements TF's ``save`` and
    ``restore`` with two extension points: ``save_with`` makes a checkpoint
    from the TF files a callback writes, and ``verified_prefix`` gives the TF
    prefix to read for a path, after verifying a looprt checkpoint folder.
    """

    def __init__(
        self, max_to_keep: int | None, keep_checkpoint_every_n_hours: float, clock: Callable[[], float]
    ):
        self._managers = ManagerCache(max_to_keep, keep_checkpoint_every_n_hours, clock)
        self._last_manager: CheckpointManager | None = None
        self._url_prefixes: dict[str, str] = {}  # checkpoint URL -> URL of its TF prefix

    def manager(self, save_path: str) -> CheckpointManager:
        """The manager of the directory and basename of ``save_path`` ("<dir>/<basename>")."""
        require_tf_filesystem(save_path)
        return self._managers.get(save_path)

    def save_with(
        self, save_path: str, step: int, write: Callable[[str], str | None], write_state: bool
    ) -> str | None:
        """Write checkpoint ``<save_path>-<step>``: ``write(prefix)`` puts TF's files in the temp folder.

        ``write`` returns what TF's save returned: None means TF saved nothing
        (a saver of no variables), and then no checkpoint is made and this
        returns None; else the checkpoint folder. ``write_state`` (TF's
        argument) also updates the index and TF's ``checkpoint`` state file.
        """
        manager = self.manager(save_path)
        name = f"{manager.basename}-{step}"

        def writer(state: Any, folder: str) -> list[str]:
            if write(os.path.join(folder, name)) is None:
                raise _NothingToSave
            files = _files_under(folder)
            _write_tf_state(folder, name, [name])
            return [*files, TF_STATE_FILE]

        try:
            path = manager.save({}, step, writer, backend="tensorflow", update_index=write_state)
        except _NothingToSave:
            return None
        self._last_manager = manager
        if write_state and is_url(manager.directory):
            self._write_tf_state_at_url(manager, path)
        elif write_state:
            kept = [_relative_prefix(p) for p in manager.last_checkpoints]
            _write_tf_state(manager.directory, _relative_prefix(path), kept or [_relative_prefix(path)])
        return path

    def _write_tf_state_at_url(self, manager: CheckpointManager, path: str) -> None:
        """TF's ``checkpoint`` state file at the URL, naming the kept checkpoints' TF prefixes.

        Written whole in one request, after looprt's index (the authority).
        The prefixes are ``<name>/<attempt>/<name>``, the attempt read from
        each manifest; remembered for the checkpoints kept, but read afresh
        for the one just saved (a save of a step saved before is a new attempt).
        """
        loc = Location(manager.directory, manager.storage_options)
        latest = split(path)[1]
        names = [n for n in (split(p)[1] for p in manager.last_checkpoints) if n != latest] + [latest]
        known: dict[str, str] = {}
        for name in names:
            url = loc.url_of(name)
            prefix = self._url_prefixes.get(url) if name != latest else None
            if prefix is None:
                prefix = _remote_prefix(loc, name)
            if prefix is not None:
                known[url] = prefix
        others = {u: p for u, p in self._url_prefixes.items() if split(u)[0] != loc.url}
        self._url_prefixes = others | known
        if loc.url_of(latest) not in known:
            raise OSError(
                errno.EIO,
                f"checkpoint {path} was saved, but its manifest cannot be read back to name it in "
                f"TF's {TF_STATE_FILE!r} state file",
            )
        prefixes = [known[loc.url_of(n)] for n in names if loc.url_of(n) in known]
        proto = tf.compat.v1.train.generate_checkpoint_state_proto(
            loc.url, prefixes[-1], all_model_checkpoint_paths=prefixes
        )  # URLs under loc.url: TF writes them relative to it, as its own Saver does
        loc.write(TF_STATE_FILE, str(proto).encode("utf-8"))

    @staticmethod
    def readable_prefix(save_path: str) -> tuple[str, str | None]:
        """(TF prefix to read for ``save_path``, temporary folder to delete once read, or None).

        A local path is ``verified_prefix``'s. A looprt checkpoint at a URL is
        downloaded into a temporary folder and verified there (the download
        the search for the latest checkpoint verified is reused); a URL with
        no looprt checkpoint is a plain TF prefix, for TF's readers to judge.

        Raises:
            tf.errors.DataLossError: the checkpoint at ``save_path`` fails verification.
        """
        save_path = os.fspath(save_path)
        if not is_url(save_path):
            return ManagedSaver.verified_prefix(save_path), None
        require_tf_filesystem(save_path)
        directory, name = split(save_path)
        loc = Location(directory)
        manifest, _, _ = read_manifest(loc, name)
        if manifest is None and not loc.listing(name):
            return save_path, None  # a plain TF prefix (TF's readers judge it)
        try:
            folder, tmp, problem = open_verified(save_path, None)
        except OSError as e:
            raise tf.errors.DataLossError(
                None, None, f"checkpoint {save_path!r} cannot be downloaded: {e}"
            ) from e
        if problem is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise tf.errors.DataLossError(
                None, None, f"checkpoint {save_path!r} cannot be restored: {problem}"
            )
        return tf_prefix(folder), tmp

    @staticmethod
    def verified_prefix(save_path: str) -> str:
        """The TF prefix to read for ``save_path``: a verified looprt folder's, else ``save_path``.

        Raises:
            tf.errors.DataLossError: ``save_path`` is a looprt checkpoint folder that fails verification.
        """
        save_path = os.fspath(save_path)
        if not os.path.isdir(save_path):
            return save_path  # a plain TF prefix (TF's readers judge it)
        if take_recent_verification(save_path):  # latest_checkpoint just verified it, unchanged since
            return tf_prefix(save_path)
        problem = verify_checkpoint(save_path, remember=False)
        if problem is not None:
            raise tf.errors.DataLossError(
                None, None, f"checkpoint {save_path!r} cannot be restored: {problem}"
            )
        return tf_prefix(save_path)

    def latest_checkpoint(self, checkpoint_dir: str, latest_filename: str | None = None) -> str | None:
        """The newest valid looprt checkpoint in ``checkpoint_dir``, else a plain TF one, else None."""
        require_tf_filesystem(checkpoint_dir)
        path = looprt_latest_checkpoint(checkpoint_dir)
        if path is not None:
            return path
        tf_path: str | None = tf.train.latest_checkpoint(checkpoint_dir, latest_filename)
        if tf_path is None or os.path.exists(os.path.join(os.path.dirname(tf_path), MANIFEST)):
            return None  # nothing, or a mirror entry pointing into a damaged looprt checkpoint
        if is_url(checkpoint_dir) and _in_checkpoint_folder(checkpoint_dir, tf_path):
            return None  # a mirror entry pointing into a looprt checkpoint that does not verify
        return tf_path

    @property
    def last_checkpoints(self) -> list[str]:
        """Checkpoints kept in rotation by the last save, oldest first."""
        return [] if self._last_manager is None else self._last_manager.last_checkpoints


def _remote_prefix(loc: Location, name: str) -> str | None:
    """The URL of the TF prefix of checkpoint ``name`` at ``loc`` (``<name>/<attempt>/<name>``)."""
    manifest, _, problem = read_manifest(loc, name)
    if manifest is None or problem is not None:
        return None
    for rel, obj in payload_objects(manifest, name).items():
        if rel == f"{name}.index":
            return loc.url_of(obj[: -len(".index")])
    return None


def _in_checkpoint_folder(directory: str, tf_path: str) -> bool:
    """Whether TF prefix ``tf_path`` has the layout of one in a checkpoint at URL ``directory``.

    That is ``<name>/<attempt>/<name>`` (the attempt: 8 hex digits), the
    prefixes ``_write_tf_state_at_url`` names; a plain TF prefix such as
    ``<dir>/model/model`` does not.
    """
    base = directory.rstrip("/") + "/"
    if not tf_path.startswith(base):
        return False
    parts = tf_path[len(base) :].split("/")
    return len(parts) == 3 and parts[0] == parts[2] and re.fullmatch(r"[0-9a-f]{8}", parts[1]) is not None


def step_of(sess: Any, global_step: Any) -> int:
    try:
        return operator.index(global_step)
    except TypeError:
        return operator.index(sess.run(global_step))
