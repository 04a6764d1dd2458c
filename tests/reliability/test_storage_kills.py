"""SIGKILL a training run at the boundaries of a save to S3, then restore and resume; see ``storage_killer.py``.

The S3 server (moto's, over HTTP) runs in this process; each training run
is a subprocess that kills itself at the Nth boundary it passes. After each
kill: the latest visible checkpoint verifies, is the last committed step or
the one being saved, and restores bit for bit to that step's state; no
damaged checkpoint is ever in view. The run is then resumed to the end and
must equal an uninterrupted run, with nothing left over in the bucket. The
default run kills at a representative subset of boundaries; the ``slow``
test at every boundary hit.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from looprt.checkpoint import CheckpointWarning, latest_checkpoint
from looprt.checkpoint.faults import REMOTE_BOUNDARIES


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


HERE = Path(__file__).parent
s3_server = _load("s3_server", HERE.parent / "s3_server.py")
killer = _load("killer", HERE / "killer.py")
TRAINER = HERE / "storage_killer.py"
CONFIG = killer.Config(backend="numpy-sharded", last_step=9)
QUICK = (
    "upload.file.after",
    "upload.manifest.before",
    "upload.manifest.after",
    "index.replace.after",
    "retention.manifest_delete.after",
    "stale.remove",
)


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    yield from s3_server.serve()


@pytest.fixture(scope="module")
def reference(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run: its boundary hits, final state, and every step's state."""
    tmp = tmp_path_factory.mktemp("reference")
    outcome, hits, result = _train(s3, s3.bucket() + "/run", tmp, None)
    assert outcome == 0
    return {"hits": hits, "final": result, "states": killer.reference_states(CONFIG)}


def _train(s3: Any, url: str, tmp: Path, kill_at: int | None) -> tuple[int, list[tuple[str, str]], Any]:
    log, result = tmp / f"run-{kill_at}.log", tmp / f"run-{kill_at}.result"
    log.unlink(missing_ok=True)
    result.unlink(missing_ok=True)
    env = {**os.environ, "FSSPEC_S3_ENDPOINT_URL": s3.endpoint}
    args = [sys.executable, str(TRAINER), url, str(result), "--log", str(log), "--last-step", str(CONFIG.last_step)]
    if kill_at is not None:
        args += ["--kill-at", str(kill_at)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode in (0, -9), done.stderr[-3000:]
    hits = [tuple(line.split("\t", 1)) for line in log.read_text().splitlines() if "\t" in line]
    value = pickle.loads(result.read_bytes()) if result.exists() else None
    return done.returncode, hits, value  # type: ignore[return-value]


def _kill_and_resume(s3: Any, reference: dict[str, Any], tmp: Path, kill_at: int) -> None:
    url = s3.bucket() + "/run"
    outcome, hits, _ = _train(s3, url, tmp, kill_at)
    assert outcome == -9, f"not killed at hit {kill_at}"
    where = hits[-1][0]
    committed = [int(s.rpartition("-")[2]) for b, s in hits if b == "index.replace.after"]
    saving = [int(s.rpartition("-")[2]) for b, s in hits if b == "save.begin"]
    allowed = {committed[-1] if committed else None, saving[-1] if saving else None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        latest = latest_checkpoint(url, storage_options=s3.options)
    damaged = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert damaged == [], f"killed at {where}: a damaged checkpoint in view: {damaged}"
    step = None if latest is None else int(latest.rpartition("-")[2])
    assert step in allowed, f"killed at {where}: latest is {latest}, expected one of {allowed}"
    if latest is not None:
        restored = killer.restored_state(CONFIG, latest)
        assert restored == reference["states"][step], f"killed at {where}: {latest} is not step {step}"
    outcome, _, final = _train(s3, url, tmp, None)
    assert outcome == 0 and final == reference["final"], f"killed at {where}: the resumed run differs"
    objects = s3.fs().find(url)
    names = {o[len(url) - len("s3://") + 1 :].split("/")[0] for o in objects}
    assert names == {"checkpoint.json", "model.ckpt-6", "model.ckpt-9"}, f"killed at {where}: left {names}"
    for name in ("model.ckpt-6", "model.ckpt-9"):
        attempts = {o.split("/")[-3] for o in objects if f"/{name}/" in o and "/shards/" in o}
        assert len(attempts) == 1, f"killed at {where}: {name} has attempts {attempts}"


def test_the_reference_run_passes_every_remote_boundary(reference: dict[str, Any]) -> None:
    seen = {b for b, _ in reference["hits"]}
    assert seen == set(REMOTE_BOUNDARIES) - {"stale.remove"}  # a run never interrupted leaves nothing stale


@pytest.mark.parametrize("boundary", QUICK)
def test_killed_at_a_remote_boundary_loses_no_checkpoint(
    s3: Any, reference: dict[str, Any], tmp_path: Path, boundary: str
) -> None:
    hits = reference["hits"]
    if boundary == "stale.remove":  # reached only after a kill: kill mid-upload, then at the cleanup
        url = s3.bucket() + "/run"
        first = next(i for i, (b, s) in enumerate(hits) if b == "upload.file.after" and i > 20)
        assert _train(s3, url, tmp_path, first)[0] == -9
        outcome, resumed, final = _train(s3, url, tmp_path, None)
        assert outcome == 0 and final == reference["final"]
        assert "stale.remove" in {b for b, _ in resumed}  # the interrupted upload was deleted
        assert not any("/model.ckpt-3/" in o or "/model.ckpt-0/" in o for o in s3.fs().find(url))
        return
    index = next(i for i, (b, _) in enumerate(hits) if b == boundary and i > 10)  # not the first save
    _kill_and_resume(s3, reference, tmp_path, index)


@pytest.mark.slow
def test_killed_at_every_remote_boundary_hit(s3: Any, reference: dict[str, Any], tmp_path: Path) -> None:
    for index in range(len(reference["hits"])):
        _kill_and_resume(s3, reference, tmp_path, index)
