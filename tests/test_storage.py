"""Checkpoints on object storage: a real S3 server (moto's, over HTTP), s3fs, and fsspec's memory store."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.backends.numpy import NumpyBackend
from looprt.checkpoint import CheckpointManager, CheckpointWarning, Saver, latest_checkpoint
from looprt.checkpoint.storage import is_url, join, split
from looprt.errors import DataLossError, NotFoundError, UnavailableError, UnimplementedError

pytest.importorskip("s3fs")
pytest.importorskip("moto")

_spec = importlib.util.spec_from_file_location("s3_server", Path(__file__).with_name("s3_server.py"))
assert _spec is not None and _spec.loader is not None
s3_server = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("s3_server", s3_server)
_spec.loader.exec_module(s3_server)


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    yield from s3_server.serve()


def _program() -> tuple[Any, Any]:
    prog = looprt.Program(backend="numpy", name="remote")
    prog.state("w", np.zeros(8))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray, global_step: Any) -> dict[str, float]:
        x = np.random.default_rng(int(global_step)).standard_normal(8)
        w += 0.1 * (x - w)
        return {"loss": float(w @ w)}

    return prog, train


def _state(step: int) -> dict[str, Any]:
    return {"w": np.arange(8.0) * step, "global_step": np.int64(step)}


def test_urls_are_never_local_paths() -> None:
    assert is_url("s3://b/run") and is_url("memory://x") and is_url("file:///tmp/x")
    assert not is_url("/tmp/run") and not is_url("run") and not is_url("C:\\run")
    assert join("s3://b/run/", "model.ckpt-1") == "s3://b/run/model.ckpt-1"
    assert split("s3://b/run/model.ckpt") == ("s3://b/run", "model.ckpt")


def test_a_scheme_without_an_implementation_names_the_package(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    with pytest.raises(UnimplementedError, match="gcsfs"):
        CheckpointManager("gs://bucket/run")
    with pytest.raises(UnimplementedError, match="nosuchscheme"):
        CheckpointManager("nosuchscheme://bucket/run")
    assert os.listdir(tmp_path) == []  # nothing written locally, ever


def test_save_and_restore_round_trip_over_s3(s3: Any) -> None:
    url = s3.bucket() + "/run"
    manager = CheckpointManager(url, max_to_keep=2, storage_options=s3.options)
    backend = NumpyBackend()
    for step in range(4):
        assert manager.save(_state(step), step, backend.save_payload, backend="numpy") == f"{url}/model.ckpt-{step}"
    assert manager.latest_checkpoint() == f"{url}/model.ckpt-3"
    assert [c.step for c in manager.checkpoints()] == [2, 3]
    assert all(c.valid for c in manager.checkpoints())
    objects = s3.fs().find(url)
    assert not any("model.ckpt-0" in o or "model.ckpt-1" in o for o in objects)  # retention deleted them
    assert latest_checkpoint(url, storage_options=s3.options) == f"{url}/model.ckpt-3"


def test_a_session_trains_and_resumes_from_s3(s3: Any) -> None:
    url = s3.bucket() + "/job"
    prog, step = _program()
    saver = Saver(prog, storage_options=s3.options)
    scaffold = looprt.Scaffold(program=prog, saver=saver)
    hook = looprt.CheckpointSaverHook(url, save_steps=2, saver=saver)
    with looprt.MonitoredSession(looprt.ChiefSessionCreator(scaffold, checkpoint_dir=url), hooks=[hook]) as sess:
        for _ in range(5):
            sess.run(step)
    expected = prog.backend.state_dict(prog)
    assert saver.latest_checkpoint(url) == f"{url}/model.ckpt-5"
    prog2, _ = _program()
    saver2 = Saver(prog2, storage_options=s3.options)
    scaffold2 = looprt.Scaffold(program=prog2, saver=saver2)
    with looprt.MonitoredSession(looprt.ChiefSessionCreator(scaffold2, checkpoint_dir=url)) as sess:
        assert sess.run(prog2.global_step) == 5
    np.testing.assert_array_equal(prog2.backend.state_dict(prog2)["w"], expected["w"])
    assert not Path("s3:").exists()


def test_monitored_training_session_takes_storage_options(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No endpoint in the environment: only storage_options lead the saver, restore and summaries to moto."""
    from looprt.summary import SummaryWriterCache

    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("FSSPEC_")]:
        monkeypatch.delenv(name)
    url = s3.bucket() + "/mts"
    prog, step = _program()
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=url, scaffold=looprt.Scaffold(program=prog), save_checkpoint_steps=2,
        log_step_count_steps=1, storage_options=s3.options,
    ) as sess:
        for _ in range(5):
            sess.run(step)
    SummaryWriterCache.clear()
    expected = prog.backend.state_dict(prog)
    assert latest_checkpoint(url, storage_options=s3.options) == f"{url}/model.ckpt-5"
    assert any("events.out.tfevents" in o for o in s3.fs().find(url))
    prog2, step2 = _program()
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=url, scaffold=looprt.Scaffold(program=prog2), save_checkpoint_steps=2,
        storage_options=s3.options,
    ) as sess:
        assert sess.run(prog2.global_step) == 5
    SummaryWriterCache.clear()
    np.testing.assert_array_equal(prog2.backend.state_dict(prog2)["w"], expected["w"])
    assert os.listdir(tmp_path) == []  # never a local folder named 's3:'


def test_checkpoints_iterator_yields_remote_checkpoints_in_order_and_skips_damaged(s3: Any) -> None:
    from looprt.evaluation import checkpoints_iterator

    url = s3.bucket() + "/watch"
    manager = CheckpointManager(url, max_to_keep=5, storage_options=s3.options)
    backend = NumpyBackend()
    for step in (1, 2, 3):
        manager.save(_state(step), step, backend.save_payload, backend="numpy")
    fs = s3.fs()
    victim = next(o for o in fs.find(f"{url}/model.ckpt-2") if not o.endswith("manifest.json"))
    fs.pipe_file(victim, b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = list(checkpoints_iterator(url, timeout=0, poll_secs=0, storage_options=s3.options))
    assert found == [f"{url}/model.ckpt-1", f"{url}/model.ckpt-3"]
    assert any("model.ckpt-2" in str(w.message) for w in caught)
    prog, _ = _program()
    Saver(prog, storage_options=s3.options).restore(None, found[-1])
    assert int(prog.backend.state_dict(prog)["global_step"]) == 3


def test_looprt_evaluate_reads_an_s3_url(s3: Any, tmp_path: Path) -> None:
    import subprocess

    url = s3.bucket() + "/eval"
    env = {**os.environ, "FSSPEC_S3_ENDPOINT_URL": s3.endpoint}
    trained = subprocess.run(
        [sys.executable, "-m", "looprt", "demo", "--dir", url, "--steps", "20"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, "-m", "looprt", "evaluate", url, "--timeout", "0", "--last-step", "20"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"({url}/model.ckpt-20)" in done.stdout, done.stdout
    assert os.listdir(tmp_path) == []  # never a local folder named 's3:'
    assert any("/eval/events.out.tfevents" in o for o in s3.fs().find(url))


def test_memory_urls_work_through_fsspec() -> None:
    manager = CheckpointManager("memory://looprt-test/run", max_to_keep=1)
    backend = NumpyBackend()
    manager.save(_state(7), 7, backend.save_payload)
    prog, _ = _program()
    Saver(prog).restore(None, manager.latest_checkpoint())
    assert int(prog.backend.state_dict(prog)["global_step"]) == 7


@pytest.mark.parametrize("damage", ["garbage", "delete_part", "delete_manifest", "truncate"])
def test_a_damaged_remote_checkpoint_is_detected_and_the_previous_one_used(s3: Any, damage: str) -> None:
    url = s3.bucket() + "/run"
    manager = CheckpointManager(url, max_to_keep=3, storage_options=s3.options)
    backend = NumpyBackend()
    for step in (1, 2):
        manager.save(_state(step), step, backend.save_payload)
    fs = s3.fs()
    newest = f"{url}/model.ckpt-2"
    payload = next(o for o in fs.find(newest) if not o.endswith("manifest.json") and o.endswith(".npz"))
    if damage == "garbage":
        size = fs.size(payload)
        fs.pipe_file(payload, os.urandom(size))  # same size: only the checksum tells
    elif damage == "delete_part":
        fs.rm_file(payload)
    elif damage == "delete_manifest":
        fs.rm_file(f"{newest}/manifest.json")
    else:
        fs.pipe_file(payload, fs.cat_file(payload)[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = latest_checkpoint(url, storage_options=s3.options)
    assert found == f"{url}/model.ckpt-1"
    if damage != "delete_manifest":  # without its commit record it never existed
        assert any(issubclass(w.category, CheckpointWarning) and "model.ckpt-2" in str(w.message) for w in caught)
    prog, _ = _program()
    saver = Saver(prog, storage_options=s3.options)
    if damage == "delete_manifest":
        with pytest.raises(NotFoundError):
            saver.restore(None, newest)
    else:
        with pytest.raises(DataLossError):
            saver.restore(None, newest)
    saver.restore(None, found)
    assert int(prog.backend.state_dict(prog)["global_step"]) == 1


def test_all_damaged_is_an_error_not_a_fresh_start(s3: Any) -> None:
    url = s3.bucket() + "/run"
    manager = CheckpointManager(url, storage_options=s3.options)
    manager.save(_state(1), 1, NumpyBackend().save_payload)
    fs = s3.fs()
    payload = next(o for o in fs.find(url) if o.endswith(".npz"))
    fs.pipe_file(payload, b"x")
    with pytest.warns(CheckpointWarning), pytest.raises(DataLossError, match="model.ckpt-1"):
        latest_checkpoint(url, storage_options=s3.options)


def test_an_interrupted_upload_is_never_read_and_is_cleaned(s3: Any) -> None:
    url = s3.bucket() + "/run"
    manager = CheckpointManager(url, storage_options=s3.options)
    backend = NumpyBackend()
    manager.save(_state(1), 1, backend.save_payload)
    fs = s3.fs()
    fs.pipe_file(f"{url}/model.ckpt-2/deadbeef/state.npz", b"half an upload")  # killed before its manifest
    assert latest_checkpoint(url, storage_options=s3.options) == f"{url}/model.ckpt-1"
    manager2 = CheckpointManager(url, storage_options=s3.options)
    manager2.save(_state(3), 3, backend.save_payload)
    assert not any("model.ckpt-2" in o for o in fs.find(url))


def test_a_retry_of_the_same_step_replaces_it_whole(s3: Any) -> None:
    url = s3.bucket() + "/run"
    backend = NumpyBackend()
    CheckpointManager(url, storage_options=s3.options).save(_state(5), 5, backend.save_payload)
    retry = _state(5)
    retry["w"] = retry["w"] + 1
    CheckpointManager(url, storage_options=s3.options).save(retry, 5, backend.save_payload)
    prog, _ = _program()
    Saver(prog, storage_options=s3.options).restore(None, f"{url}/model.ckpt-5")
    np.testing.assert_array_equal(prog.backend.state_dict(prog)["w"], retry["w"])
    CheckpointManager(url, storage_options=s3.options).save(_state(6), 6, backend.save_payload)
    attempts = {o.split("/")[-2] for o in s3.fs().find(f"{url}/model.ckpt-5") if o.endswith(".npz")}
    assert len(attempts) == 1  # the replaced attempt was cleaned up


def test_the_server_going_away_mid_save_never_shows_a_torn_checkpoint(s3: Any) -> None:
    url = s3.bucket() + "/run"
    options = {**s3.options, "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    manager = CheckpointManager(url, storage_options=options)
    backend = NumpyBackend()
    manager.save(_state(1), 1, backend.save_payload)
    from looprt.checkpoint import set_fault_hook

    def stop_server(name: str, subject: str) -> None:
        if name == "upload.file.after":
            s3.stop()

    previous = set_fault_hook(stop_server)
    try:
        with pytest.raises(UnavailableError, match="model.ckpt-2"):
            manager.save(_state(2), 2, backend.save_payload)
    finally:
        set_fault_hook(previous)
        s3.restart()
    # moto keeps its data across a restart of the threaded server (same backend in this process)
    assert latest_checkpoint(url, storage_options=s3.options) == f"{url}/model.ckpt-1"
    manager.save(_state(2), 2, backend.save_payload)  # the retry succeeds
    assert latest_checkpoint(url, storage_options=s3.options) == f"{url}/model.ckpt-2"


def test_demo_and_listing_on_s3_write_nothing_local_and_tensorboard_reads_the_summaries(
    s3: Any, tmp_path: Path
) -> None:
    import subprocess

    url = s3.bucket() + "/demo"
    env = {**os.environ, "FSSPEC_S3_ENDPOINT_URL": s3.endpoint}
    for _ in range(2):  # the second run resumes from S3
        done = subprocess.run(
            [sys.executable, "-m", "looprt", "demo", "--dir", url, "--steps", "20"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert os.listdir(tmp_path) == []  # never a local folder named 's3:'
    listed = subprocess.run(
        [sys.executable, "-m", "looprt", "checkpoints", url],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert f"{url}/model.ckpt-40" in listed.stdout and " NO " not in listed.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    local = tmp_path / "download"
    fs = s3.fs()
    events = [o for o in fs.find(url) if "events.out.tfevents" in o]
    assert events
    for i, obj in enumerate(events):
        (local / f"{i}").mkdir(parents=True)
        fs.get_file(obj, str(local / f"{i}" / obj.rpartition("/")[2]))
    steps: set[int] = set()
    for folder in local.iterdir():
        acc = EventAccumulator(str(folder))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps |= {e.step for e in acc.Scalars(tag)}
    assert max(steps) == 40
