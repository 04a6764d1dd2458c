"""An fsspec file system over TF's file layer, for URL schemes only TensorFlow reaches.

looprt reaches URLs through fsspec. A TF job can use a URL that TF's own
file layer serves and no installed fsspec implementation does: ``gs://``
without ``gcsfs`` (TF wheels have GCS built in), ``ram://`` (TF's in-process
file system), or schemes that a TF plug-in registers. ``require_tf_filesystem``
registers this file system for such a scheme (``register``), so checkpoints
and summaries go where TF's own ``MonitoredTrainingSession`` would write
them. A scheme an fsspec implementation serves is never taken over.

Objects are written through ``tf.io.gfile.GFile``, which on object stores
uploads on close: a reader sees an object whole or not at all, as the
commit protocol (``looprt.checkpoint.remote_commit``) requires. TF's errors
become the ``OSError`` subclasses fsspec's callers expect (``NotFoundError``:
``FileNotFoundError``, ...). This module imports fsspec: import it only
where fsspec is wanted (``require_tf_filesystem`` does so lazily).
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from fsspec import AbstractFileSystem, register_implementation

__all__ = ["GFileSystem", "register", "register_tf_schemes"]

_register_lock = threading.Lock()


@contextlib.contextmanager
def _os_errors(url: str) -> Iterator[None]:
    """TF's errors while reaching ``url``, raised as the matching ``OSError``."""
    try:
        yield
    except tf.errors.NotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, e.message or "not found", url) from e
    except tf.errors.PermissionDeniedError as e:
        raise PermissionError(errno.EACCES, e.message or "permission denied", url) from e
    except tf.errors.AlreadyExistsError as e:
        raise FileExistsError(errno.EEXIST, e.message or "already exists", url) from e
    except tf.errors.OpError as e:
        raise OSError(errno.EIO, f"{type(e).__name__}: {e.message}", url) from e


class _Handle:
    """A ``tf.io.gfile.GFile`` with TF's errors as ``OSError`` (what fsspec's callers catch).

    ``replace``: the URL that the file, once closed, is renamed onto (see ``GFileSystem._open``).
    """

    def __init__(self, url: str, mode: str, replace: str | None = None) -> None:
        self.url = url
        self.mode = mode
        self._replace = replace
        with _os_errors(url):
            self._file = tf.io.gfile.GFile(url, mode)

    def read(self, size: int = -1) -> bytes:
        with _os_errors(self.url):
            data: bytes = self._file.read(size)
        return data

    def write(self, data: bytes) -> int:
        with _os_errors(self.url):
            self._file.write(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        with _os_errors(self.url):
            self._file.seek(offset, whence)
            return int(self._file.tell())

    def tell(self) -> int:
        with _os_errors(self.url):
            return int(self._file.tell())

    def flush(self) -> None:
        with _os_errors(self.url):
            self._file.flush()

    def readable(self) -> bool:
        return "r" in self.mode

    def writable(self) -> bool:
        return "r" not in self.mode

    def seekable(self) -> bool:
        return "r" in self.mode

    @property
    def closed(self) -> bool:
        return bool(getattr(self._file, "closed", False))

    def close(self) -> None:
        """Finish the file; a file written beside its target is renamed onto it.

        If the upload or the rename fails, the file written beside the
        target is removed, and the target stays as it was.
        """
        if self.closed:
            return
        target, self._replace = self._replace, None
        try:
            with _os_errors(self.url):
                self._file.close()  # on an object store, the upload happens here
            if target is not None:
                with _os_errors(target):
                    tf.io.gfile.rename(self.url, target, overwrite=True)
        except BaseException:
            if target is not None:
                self._remove_quietly()
            raise

    def abort(self) -> None:
        """Give up a file being written: nothing of it is left (the target, if any, unchanged)."""
        if "r" in self.mode or self.closed:
            return
        self._replace = None
        with contextlib.suppress(tf.errors.OpError):
            self._file.close()
        self._remove_quietly()

    def _remove_quietly(self) -> None:
        with contextlib.suppress(tf.errors.OpError):
            tf.io.gfile.remove(self.url)

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()  # a write cut short must not become the object
        else:
            self.close()


class GFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """fsspec's operations done with ``tf.io.gfile``; one subclass per URL scheme (``register``)."""

    protocol: Any = "gfile"
    root_marker = ""

    def _url(self, path: str) -> str:
        proto = self.protocol if isinstance(self.protocol, str) else self.protocol[0]
        return f"{proto}://{self._strip_protocol(path)}"

    def _entry(self, path: str) -> dict[str, Any]:
        url = self._url(path)
        with _os_errors(url):
            stat = tf.io.gfile.stat(url)
        kind = "directory" if stat.is_directory else "file"
        return {
            "name": self._strip_protocol(path),
            "size": 0 if stat.is_directory else int(stat.length),
            "type": kind,
        }

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._entry(path)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        base = self._strip_protocol(path).rstrip("/")
        url = self._url(base)
        with _os_errors(url):
            is_dir = tf.io.gfile.isdir(url)
        if not is_dir:
            entries = [self._entry(base)]  # a file lists itself; nothing there: FileNotFoundError
        else:
            with _os_errors(url):
                names = tf.io.gfile.listdir(url)
            entries = [self._entry(f"{base}/{name.rstrip('/')}") for name in names]
        return entries if detail else [entry["name"] for entry in entries]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """``path`` for reading, or for writing it whole.

        A file written over an existing one is written beside it and renamed
        onto it when closed (as TF writes its own ``checkpoint`` file): TF's
        ``ram://`` file system appends to an existing file opened with
        ``"wb"``, and a reader must never see a torn file anyway.
        """
        url = self._url(path)
        if "r" in mode:
            self._entry(path)  # GFile opens lazily: a missing object is FileNotFoundError now
            return _Handle(url, mode)
        parent = self._parent(path)
        if parent:
            self.makedirs(parent, exist_ok=True)
        with _os_errors(url):
            exists = tf.io.gfile.exists(url)
        if not exists:
            return _Handle(url, mode)
        return _Handle(f"{url}.looprt-tmp-{secrets.token_hex(6)}", mode, replace=url)

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> bytes:
        url = self._url(path)
        with _os_errors(url), tf.io.gfile.GFile(url, "rb") as f:
            data: bytes = f.read()
        return data[start:end]

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        url = self._url(path)
        with _os_errors(url):
            if not exist_ok and tf.io.gfile.exists(url):
                raise FileExistsError(errno.EEXIST, "exists", url)
            tf.io.gfile.makedirs(url)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.makedirs(path, exist_ok=True)

    def rm_file(self, path: str) -> None:
        url = self._url(path)
        with _os_errors(url):
            tf.io.gfile.remove(url)

    def _rm(self, path: str) -> None:
        url = self._url(path)
        with _os_errors(url):
            is_dir = tf.io.gfile.isdir(url)
        if not is_dir:
            self.rm_file(path)
            return
        with _os_errors(url):
            tf.io.gfile.rmtree(url)

    def rmdir(self, path: str) -> None:
        self._rm(path)


def register_tf_schemes() -> list[str]:
    """Serve in fsspec every scheme TF's file layer has and fsspec knows no implementation of.

    Called when ``looprt.backends.tensorflow`` is imported, so that any
    looprt writer (a summary writer, ``latest_checkpoint``) reaches such a
    URL (``ram://``, a TF plug-in's), not only TF's savers. A scheme fsspec
    knows (``gs://``: gcsfs) is left to it, so that its "install gcsfs"
    error stands for code that does not use the TF drop-in; the drop-in's
    savers still register it on first use (``require_tf_filesystem``).
    Returns the schemes registered now.
    """
    import fsspec

    try:
        schemes = tf.io.gfile.get_registered_schemes()
    except AttributeError:  # an older TF: require_tf_filesystem registers schemes one by one
        return []
    known = set(fsspec.available_protocols())
    registered = []
    for scheme in schemes:
        if scheme in ("", "file") or scheme in known:
            continue
        if issubclass(register(scheme), GFileSystem):
            registered.append(scheme)
    return registered


def register(scheme: str) -> type[GFileSystem]:
    """Serve ``scheme://`` URLs in fsspec with ``tf.io.gfile``, unless an fsspec implementation does.

    Returns the class fsspec uses for the scheme afterwards: an fsspec
    implementation already registered or installed is kept (never replaced).
    """
    import fsspec

    with _register_lock:
        try:
            served: type[GFileSystem] = fsspec.get_filesystem_class(scheme)
        except (ImportError, ValueError):
            pass
        else:
            return served
        cls = type(f"GFileSystem_{scheme}", (GFileSystem,), {"protocol": scheme, "__module__": __name__})
        register_implementation(scheme, cls, clobber=False)
        return cls
