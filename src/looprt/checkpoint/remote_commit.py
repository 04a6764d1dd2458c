"""Writing checkpoints at a URL without rename: upload the payload, then the manifest, last.

A save (see ``remote`` for the layout):

1. the backend writes its files into a local temporary folder (as locally);
2. each file is uploaded to ``<name>/<attempt>/<file>``, ``attempt`` fresh
   for this save (8 random hex digits), so nothing a reader may be using is
   overwritten;
3. the manifest (sizes, checksums, the attempt) is written to
   ``<name>/manifest.json`` in one request: from then on the checkpoint
   exists, complete;
4. the index is written whole (one request): the save is committed;
5. older attempts of the same name are deleted, then what retention no
   longer keeps: each checkpoint's manifest first (it is gone for readers at
   once), then its files.

A save that fails before step 3 deletes what it uploaded (best effort) and
raises; what a killed one leaves is an upload without a manifest, which no
reader reads and the next save deletes (``clean_stale``).
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from looprt.checkpoint.commit import SaveProgress, Writer, file_record, reported_file
from looprt.checkpoint.damage import known_damaged, warn
from looprt.checkpoint.faults import boundary
from looprt.checkpoint.format import (
    FORMAT_VERSION,
    MANIFEST,
    Record,
    json_with_checksum,
)
from looprt.checkpoint.remote import ATTEMPT, committed, payload_objects, read_index, read_manifest
from looprt.checkpoint.retention import Retained, index_data
from looprt.checkpoint.storage import Location

logger = logging.getLogger(__name__)


def write_checkpoint(
    loc: Location,
    state: Mapping[str, Any],
    step: int,
    name: str,
    writer: Writer,
    *,
    backend: str,
    now: Callable[[], float],
) -> float:
    """Upload checkpoint ``name`` (payload first, manifest last); return its time."""
    attempt = secrets.token_hex(4)
    uploaded: list[str] = []
    manifest_written = False
    try:
        with tempfile.TemporaryDirectory(prefix="looprt-save-") as tmp:
            boundary("payload.write.before", name)
            names = list(writer(state, tmp))
            boundary("payload.write.after", name)
            files = _describe(tmp, names, writer)
            for rel in files:
                boundary("upload.file.before", rel)
                uploaded.append(f"{name}/{attempt}/{rel}")
                loc.upload(os.path.join(tmp, *rel.split("/")), uploaded[-1])
                boundary("upload.file.after", rel)
        when = float(now())
        manifest = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "time": when,
            "backend": backend,
            "files": files,
            ATTEMPT: attempt,
        }
        boundary("upload.manifest.before", name)
        manifest_written = True  # from here on, a failure may have written it: keep the payload
        loc.write(f"{name}/{MANIFEST}", json_with_checksum(manifest))
        boundary("upload.manifest.after", name)
    except BaseException:
        if not manifest_written:
            _quietly(loc.remove, uploaded)
        raise
    return when


def _describe(tmp: str, names: list[str], writer: Writer) -> dict[str, Any]:
    if not names:
        raise ValueError(f"the checkpoint writer {writer!r} reported no files")
    files: dict[str, Any] = {}
    for reported in names:
        rel, path = reported_file(tmp, reported)
        files[rel] = file_record(path)
    return files


def write_index(loc: Location, index_name: str, retained: Retained, progress: SaveProgress) -> None:
    """Replace the index at ``loc`` in one request; sets ``progress.indexed`` once it is written."""
    latest = retained.latest or ""
    data = index_data(retained)
    boundary("index.write.before", latest)
    loc.write(index_name, json_with_checksum(data))
    progress.indexed = True
    boundary("index.replace.after", latest)


def delete_checkpoint(loc: Location, name: str) -> None:
    """Delete checkpoint ``name``: its manifest first, then its files; failures are logged, not raised.

    One seen to be damaged in this process is left where it is (never deleted).
    """
    problem = known_damaged(loc.url).get(name)
    if problem is not None:
        warn(f"keeping damaged checkpoint {loc.url_of(name)} ({problem}); looprt never deletes it")
        return
    boundary("retention.delete.before", name)
    logger.info("Deleting old checkpoint %s", loc.url_of(name))
    try:
        loc.remove([f"{name}/{MANIFEST}"])
        boundary("retention.manifest_delete.after", name)
        loc.remove(sorted(loc.listing(name)))
    except Exception as e:  # noqa: BLE001 - an old checkpoint left behind is deleted by a later save
        logger.warning("Ignoring: could not delete %s: %s", loc.url_of(name), e)
        return
    boundary("retention.delete.after", name)


def clean_stale(loc: Location, saving: str) -> None:
    """Delete uploads no manifest names: interrupted saves, and attempts a later save replaced."""
    listing = loc.listing()
    names = {path.partition("/")[0] for path in listing if "/" in path}
    with_manifest = {name for _, name in committed(listing, None)}
    for name in sorted(names):
        if name.startswith(".") or name == saving:
            continue
        objects = [p for p in listing if p.startswith(name + "/")]
        if name not in with_manifest:
            if all(p.count("/") >= 2 for p in objects):  # only attempt folders: an interrupted upload
                boundary("stale.remove", name)
                logger.info("Removing %s, left by an interrupted upload", loc.url_of(name))
                _quietly(loc.remove, objects)
            continue
        remove_replaced_attempts(loc, name, objects)


def remove_replaced_attempts(loc: Location, name: str, objects: list[str] | None = None) -> None:
    """Delete the uploads of ``name`` its manifest does not name: attempts a later save replaced.

    ``objects``: the paths under ``name/``, if already listed. A checkpoint
    whose manifest cannot be read is damaged and never touched.
    """
    if objects is None:
        objects = [p for p in loc.listing() if p.startswith(name + "/")]
    attempts = {p.split("/")[1] for p in objects if p.count("/") >= 2}
    if len(attempts) <= 1:
        return
    manifest, _, _ = read_manifest(loc, name)
    if manifest is None:
        return
    keep = set(payload_objects(manifest, name).values())
    stale = [p for p in objects if p.count("/") >= 2 and p not in keep]
    boundary("stale.remove", name)
    _quietly(loc.remove, stale)


def recover(
    loc: Location, basename: str, index_filename: str, next_keep_time: float, clock: Callable[[], float]
) -> Retained:
    """What the index at ``loc`` records, or, if it is missing or damaged, what the manifests say."""
    index, problem = read_index(loc, index_filename)
    if problem is not None:
        warn(
            f"checkpoint index {loc.url_of(index_filename)} {problem}; "
            f"rebuilding the list of checkpoints from the manifests at {loc.url}"
        )
    scanned = committed(loc.listing(), basename)
    if index is None:
        kept = []
        for step, name in scanned:
            manifest, _, _ = read_manifest(loc, name)
            when = float(manifest["time"]) if manifest is not None else clock()  # type: ignore[arg-type]
            kept.append(Record(name, step, when))
        return Retained(kept[-1].name if kept else None, kept, [], next_keep_time, [])
    present = {name for _, name in scanned}
    return Retained(
        index.latest,
        [r for r in index.kept if r.name in present],
        [r for r in index.preserved if r.name in present],
        next_keep_time if index.next_keep_time is None else index.next_keep_time,
        list(index.deleting),
    )


def _quietly(action: Callable[[list[str]], None], objects: list[str]) -> None:
    try:
        action(objects)
    except Exception as e:  # noqa: BLE001 - cleanup; a later save tries again
        logger.warning("Ignoring: could not delete %d object(s): %s", len(objects), e)
