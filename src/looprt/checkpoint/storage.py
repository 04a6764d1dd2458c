"""Where checkpoints and summaries live: a local folder, or any fsspec URL.

A path with a scheme (``s3://bucket/run``, ``gs://...``, ``memory://...``,
``file://...``) is a URL and is never taken for a local path: it is opened
through fsspec and the implementation the user installed for its scheme
(``s3fs``, ``gcsfs``); a scheme with none installed is an
``UnimplementedError`` naming the package to install. Everything else is a
local path and keeps the local fast path (write, fsync, rename).

Credentials and endpoints come the way fsspec users pass them: the
``storage_options`` argument (the keyword arguments of the fsspec filesystem,
e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for s3fs), fsspec's
configuration (``fsspec.config.conf``, ``FSSPEC_S3_ENDPOINT_URL`` and the
like), and the implementation's own environment (``AWS_ACCESS_KEY_ID``...).
fsspec is imported on first use of a URL, never by ``import looprt``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from looprt.errors import UnimplementedError

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
StorageOptions = Mapping[str, Any]


def is_url(path: Any) -> bool:
    """Whether ``path`` names a location with a scheme (``s3://...``) rather than a local path."""
    return isinstance(path, str) and _SCHEME.match(path) is not None


def scheme(url: str) -> str:
    """The scheme of URL ``url`` (``s3``), lower case."""
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(f"{url!r} is not a URL")
    return match["scheme"].lower()


def join(base: str, *parts: str) -> str:
    """``base`` joined with ``parts``: '/'-joined for a URL, ``os.path.join`` for a local path."""
    if is_url(base):
        return posixpath.join(base.rstrip("/") + "/", *parts) if parts else base
    return os.path.join(base, *parts)


def split(path: str) -> tuple[str, str]:
    """(folder, name) of ``path``, for a URL or a local path."""
    if is_url(path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail
    return os.path.split(path)


def normalize(path: str) -> str:
    """A key naming folder ``path``: the URL without a trailing '/', or the absolute local path."""
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def filesystem(url: str, storage_options: StorageOptions | None = None) -> Any:
    """The fsspec filesystem for ``url``, made with ``storage_options``; a clear error if unavailable."""
    proto = scheme(url)
    try:
        import fsspec
    except ImportError as e:
        raise UnimplementedError(
            f"cannot open {url!r}: URLs need fsspec and the implementation for {proto}:// "
            f"(pip install 'looprt[s3]' for S3, or fsspec and gcsfs for GCS)"
        ) from e
    try:
        cls = fsspec.get_filesystem_class(proto)
    except (ImportError, ValueError) as e:
        from fsspec.registry import known_implementations

        known = known_implementations.get(proto, {})
        hint = known.get("err") or f"no fsspec implementation is registered for {proto}://"
        if known.get("class"):
            package = known["class"].partition(".")[0]
            hint = f"{hint} (install the package {package!r}: pip install {package})"
        raise UnimplementedError(f"cannot open {url!r}: {hint}") from e
    return cls(**dict(storage_options or {}))


class Location:
    """A folder at a URL, and the object-store operations the commit protocol uses.

    Every path taken or given is relative to the folder and '/'-separated.
    Reads bypass the filesystem's listing cache: listings may lag on some
    stores, and a reader must not add its own lag on top.
    """

    __slots__ = ("url", "fs", "_root")

    def __init__(self, url: str, storage_options: StorageOptions | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs = filesystem(self.url, storage_options)
        self._root = self.fs._strip_protocol(self.url).rstrip("/")

    def __repr__(self) -> str:
        return f"<Location {self.url!r}>"

    def full(self, rel: str) -> str:
        """The filesystem path of ``rel``."""
        return f"{self._root}/{rel}" if rel else self._root

    def url_of(self, rel: str) -> str:
        """The URL of ``rel``."""
        return f"{self.url}/{rel}" if rel else self.url

    def read(self, rel: str) -> bytes:
        """The bytes of object ``rel``; ``FileNotFoundError`` if there is none."""
        data: bytes = self.fs.cat_file(self.full(rel))
        return data

    def write(self, rel: str, data: bytes) -> None:
        """Write object ``rel`` whole, in one request (readers see all of it or the old one)."""
        self.fs.pipe_file(self.full(rel), data)

    def upload(self, local: str, rel: str) -> None:
        """Copy local file ``local`` to ``rel`` (in parts, for a large one)."""
        self.fs.put_file(local, self.full(rel))

    def download(self, rels: list[str], locals_: list[str]) -> None:
        """Copy objects ``rels`` to local files ``locals_`` (concurrently where the store can)."""
        for local in locals_:
            os.makedirs(os.path.dirname(local), exist_ok=True)
        if rels:
            self.fs.get([self.full(r) for r in rels], locals_)

    def listing(self, rel: str = "") -> dict[str, int]:
        """Every object under ``rel``, recursively: relative path -> size. Nothing there: empty."""
        self.fs.invalidate_cache()
        base = self.full(rel)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for path, info in found.items():
            if info.get("type", "file") != "file":
                continue
            rel_path = path[len(self._root) + 1 :] if path.startswith(self._root + "/") else path
            out[rel_path] = int(info.get("size") or 0)
        return out

    def remove(self, rels: list[str]) -> None:
        """Delete objects ``rels``; ones already gone are not an error."""
        if not rels:
            return
        try:
            self.fs.rm([self.full(r) for r in rels])  # one request per 1,000 objects on S3
        except FileNotFoundError:
            for rel in rels:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.full(rel))
