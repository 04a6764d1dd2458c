"""MkDocs hook: stand-in pages for documents other work streams have not written yet.

``docs/reliability.md`` belongs to the reliability work. Until it exists, the
build generates a short page in its place that says so, so the navigation and
every link to it stay checked by ``mkdocs build --strict`` instead of being
exempted from the check.
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

PENDING = {
    "reliability.md": (
        "# Reliability\n\n"
        '!!! warning "Not written yet"\n'
        "    This page is written with the reliability work: the promise that a job\n"
        "    killed at any instant loses at most the steps since its last completed\n"
        "    checkpoint, the fault-injection tests that prove it, and their figures.\n"
        "    Until it lands, [Checkpoints and resuming](checkpoints.md) describes how\n"
        "    saves are made crash-safe and how damaged checkpoints are skipped, and\n"
        "    [the session lifecycle](lifecycle.md) describes recovery.\n"
    ),
}


def on_files(files: Files, config: Any) -> Files:
    for src_uri, content in PENDING.items():
        if files.get_file_from_path(src_uri) is None:
            files.append(File.generated(config, src_uri, content=content))
    return files
