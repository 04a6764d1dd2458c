"""Checkpoints at a URL (object stores): the layout, and reading and verifying them.

An object store has no rename, so a checkpoint cannot appear whole in one
step the way a local folder does. Its commit record is its manifest, written
last (as Orbax's commit marker and torch DCP's ``.metadata``)::

    <url>/<name>/<attempt>/<file>   the payload of one save attempt (8 hex digits)
    <url>/<name>/manifest.json      the commit record: names the attempt, every
                                    file's size and checksum; written last, whole
    <url>/checkpoint.json           the index, written whole after the manifest

A checkpoint exists for a reader only when its manifest does; the manifest
is one object, written in one request, so a reader sees all of it or none.
Payload objects without a manifest naming them are an interrupted upload and
are never read. A retry or a second writer of the same step uploads under a
fresh attempt, so the manifest in place always names files that one writer
wrote completely. Readers verify before they trust: ``fetch`` downloads the
files the manifest names and checks every size and checksum.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading

from looprt.checkpoint.damage import DAMAGED_SUFFIX, note_damaged, warn
from looprt.checkpoint.format import (
    INDEX,
    MANIFEST,
    STEP_NAME,
    Index,
    parse_index,
    parse_manifest,
    verify_checkpoint,
)
from looprt.checkpoint.storage import Location, StorageOptions
from looprt.errors import DataLossError

logger = logging.getLogger(__name__)

ATTEMPT = "attempt"  # the manifest field naming the payload's attempt folder


def payload_objects(manifest: dict[str, object], name: str) -> dict[str, str]:
    """File name in the checkpoint -> object path (relative to the URL) of its payload."""
    attempt = manifest.get(ATTEMPT)
    prefix = f"{name}/{attempt}/" if isinstance(attempt, str) and attempt else f"{name}/"
    files = manifest["files"]
    assert isinstance(files, dict)
    return {rel: prefix + rel for rel in files}


def read_manifest(loc: Location, name: str) -> tuple[dict[str, object] | None, bytes, str | None]:
    """The manifest of checkpoint ``name`` at ``loc``, its text, or the problem."""
    try:
        raw = loc.read(f"{name}/{MANIFEST}")
    except FileNotFoundError:
        return None, b"", f"{MANIFEST} is missing (an incomplete upload?)"
    except OSError as e:
        return None, b"", f"{MANIFEST} cannot be read ({e})"
    manifest, problem = parse_manifest(raw, name)
    return manifest, raw, problem


def fetch(loc: Location, name: str, dest: str) -> tuple[str, str | None]:
    """Download checkpoint ``name`` into ``dest/<name>``; return that folder and what is wrong, if anything.

    Only the files its manifest names are read; sizes are checked against a
    fresh listing first (a missing part is named), then every checksum.
    """
    folder = os.path.join(dest, name)
    manifest, raw, problem = read_manifest(loc, name)
    if manifest is None:
        return folder, problem
    objects = payload_objects(manifest, name)
    listed = loc.listing(name)
    files = manifest["files"]
    assert isinstance(files, dict)
    for rel, obj in objects.items():
        if obj not in listed:
            return folder, f"{rel} is missing"
        if listed[obj] != files[rel]["size"]:
            return folder, f"{rel} has {listed[obj]} bytes; the manifest says {files[rel]['size']}"
    locals_ = [os.path.join(folder, *rel.split("/")) for rel in objects]
    try:
        loc.download(list(objects.values()), locals_)
    except FileNotFoundError as e:
        return folder, f"a file vanished while it was read ({e})"
    with open(os.path.join(folder, MANIFEST), "wb") as f:
        f.write(raw)
    return folder, verify_checkpoint(folder)


class _Verified:
    """The last checkpoint downloaded and verified, kept so that restoring it does not download it again."""

    lock = threading.Lock()
    url: str | None = None
    tmp: str | None = None


def verify(loc: Location, name: str) -> str | None:
    """None if checkpoint ``name`` at ``loc`` is complete and intact, else the problem.

    A verified download is kept (one at a time) for ``open_verified``.
    """
    tmp = tempfile.mkdtemp(prefix="looprt-fetch-")
    try:
        _, problem = fetch(loc, name, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if problem is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        return problem
    with _Verified.lock:
        old, _Verified.url, _Verified.tmp = _Verified.tmp, loc.url_of(name), tmp
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return None


def open_verified(url: str, storage_options: StorageOptions | None) -> tuple[str, str, str | None]:
    """(local folder, temporary folder to delete after, problem) of checkpoint ``url``, verified.

    Reuses the download of the last ``verify`` of that URL, else downloads it.
    """
    with _Verified.lock:
        tmp = _Verified.tmp if _Verified.url == url.rstrip("/") else None
        if tmp is not None:
            _Verified.url = _Verified.tmp = None
    directory, _, name = url.rstrip("/").rpartition("/")
    if tmp is not None:
        return os.path.join(tmp, name), tmp, None
    tmp = tempfile.mkdtemp(prefix="looprt-fetch-")
    try:
        folder, problem = fetch(Location(directory, storage_options), name, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder, tmp, problem


def committed(listing: dict[str, int], basename: str | None) -> list[tuple[int, str]]:
    """(step, name) of every checkpoint with a manifest in ``listing``, by step; any basename when None."""
    found = []
    for path in listing:
        name, _, rest = path.partition("/")
        match = STEP_NAME.match(name)
        if rest != MANIFEST or match is None or name.endswith(DAMAGED_SUFFIX):
            continue
        if basename is None or match["base"] == basename:
            found.append((int(match["step"]), name))
    return sorted(found)


def read_index(loc: Location, index_name: str) -> tuple[Index | None, str | None]:
    """The index at ``loc`` (None if there is none), and what is wrong with it."""
    try:
        raw = loc.read(index_name)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot be read ({e})"
    return parse_index(raw)


def find_latest(
    url: str,
    basename: str | None,
    index_name: str = INDEX,
    *,
    start_fresh_if_damaged: bool = False,
    storage_options: StorageOptions | None = None,
) -> str | None:
    """The URL of the newest checkpoint at ``url`` that verifies (``latest.find_latest``, remotely)."""
    loc = Location(url, storage_options)
    index, problem = read_index(loc, index_name)
    scanned = committed(loc.listing(), basename)
    index_url = loc.url_of(index_name)
    # No index is no fault here: the manifests are the commit records, and a
    # writer killed between its first manifest and the index leaves none.
    if problem is not None:
        warn(f"checkpoint index {index_url} {problem}; listing {loc.url} for checkpoints instead")
    candidates: list[str] = []
    if index is not None:
        candidates += [index.latest] if index.latest is not None else []
        candidates += [r.name for r in reversed(index.kept)] + [r.name for r in reversed(index.preserved)]
    # The listing may lag the index (or lead it): a checkpoint either names is a candidate.
    candidates = sorted(set(candidates) | {n for _, n in scanned}, key=_step, reverse=True)
    listed = {n for _, n in scanned}
    damaged: list[tuple[str, str]] = []
    for name in candidates:
        if name not in listed and index is not None and name != index.latest:
            continue  # named by an old index entry and gone: nothing to keep
        path = loc.url_of(name)
        problem = verify(loc, name)
        if problem is None:
            return path
        if name not in listed and "missing" in problem and MANIFEST in problem:
            warn(f"skipping checkpoint {path}: it does not exist; falling back to the previous checkpoint")
            continue
        note_damaged(path, problem)
        damaged.append((path, problem))
        warn(f"skipping checkpoint {path}: {problem}; falling back to the previous checkpoint")
    if damaged and not start_fresh_if_damaged:
        faults = "; ".join(f"{path}: {why}" for path, why in damaged)
        raise DataLossError(
            f"none of the {len(damaged)} checkpoint(s) at {loc.url} verifies, so nothing can be "
            f"restored ({faults}). Refusing to start from scratch over them: move them away, or pass "
            "start_fresh_if_damaged=True; looprt never deletes them."
        )
    return None


def _step(name: str) -> int:
    match = STEP_NAME.match(name)
    return int(match["step"]) if match is not None else -1


def describe(
    url: str, basename: str, storage_options: StorageOptions | None = None
) -> list[tuple[str, int, float | None, int, str | None]]:
    """(url, step, time, size, problem) of every checkpoint of ``basename`` at ``url``, by step, verified."""
    loc = Location(url, storage_options)
    listing = loc.listing()
    out = []
    for step, name in committed(listing, basename):
        manifest, _, _ = read_manifest(loc, name)
        when = float(manifest["time"]) if manifest is not None else None  # type: ignore[arg-type]
        size = sum(n for path, n in listing.items() if path.startswith(name + "/"))
        out.append((loc.url_of(name), step, when, size, verify(loc, name)))
    return out
