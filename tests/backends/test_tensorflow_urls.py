"""The TF drop-in at a URL that TF's own file layer serves: checkpoints TF reads there, and summaries.

``ram://`` is TF's in-process file system, which no fsspec implementation
serves: ``require_tf_filesystem`` registers looprt's fsspec file system over
``tf.io.gfile`` for it, so looprt's uploads (payload, manifest last, index)
reach it, and TF's ``checkpoint`` state file there names prefixes TF opens.
Every test uses a fresh URL (the RAM file system lives as long as the process).

TF's RAM file system calls every string prefix of a file name a directory,
so ``tf.train.load_checkpoint(<prefix>)`` fails there even for TF's own
checkpoints (it takes the prefix for a directory); the tests read a prefix
with ``NewCheckpointReader`` and pass ``load_checkpoint`` the directory, and
read the same layout with ``load_checkpoint(<prefix>)`` from a local copy.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

tf = pytest.importorskip("tensorflow")
fsspec = pytest.importorskip("fsspec")
train = pytest.importorskip("looprt.backends.tensorflow")

import looprt  # noqa: E402
from looprt.backends.tensorflow.checkpoints import require_tf_filesystem  # noqa: E402
from looprt.backends.tensorflow.gfile_fs import GFileSystem  # noqa: E402
from looprt.checkpoint import CheckpointWarning  # noqa: E402
from looprt.checkpoint.storage import Location  # noqa: E402

pytestmark = pytest.mark.tensorflow


@pytest.fixture
def url() -> str:
    return f"ram://looprt-test-{uuid.uuid4().hex}/run"


class Model:
    """A graph with a global step and a variable ``v`` that ``bump`` increments along with the step."""

    def __init__(self, **saver_kwargs: Any) -> None:
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.global_step = tf.compat.v1.train.get_or_create_global_step()
            self.v = tf.compat.v1.Variable(10.0, name="v")
            self.bump = tf.group(
                tf.compat.v1.assign_add(self.v, 1.0), tf.compat.v1.assign_add(self.global_step, 1)
            )
            tf.compat.v1.summary.scalar("value", self.v)
            saver = tf.compat.v1.train.Saver(**saver_kwargs) if saver_kwargs else None
            self.scaffold = train.Scaffold(saver=saver)

    def train(self, url: str, runs: int, **kwargs: Any) -> tuple[int, int, float]:
        """(step at start, step at end, v at end) of ``runs`` runs of a drop-in session at ``url``."""
        kwargs.setdefault("save_checkpoint_steps", 1)
        with (
            self.graph.as_default(),
            train.MonitoredTrainingSession(checkpoint_dir=url, scaffold=self.scaffold, **kwargs) as sess,
        ):
            start = int(sess.run(self.global_step))
            for _ in range(runs):
                sess.run(self.bump)
            step, v = sess.run([self.global_step, self.v])
        return start, int(step), float(v)

    def restored(self, path: str) -> tuple[int, float]:
        with (
            self.graph.as_default(),
            train.MonitoredSession(
                train.ChiefSessionCreator(scaffold=self.scaffold, checkpoint_filename_with_path=path)
            ) as sess,
        ):
            step, v = sess.run([self.global_step, self.v])
        return int(step), float(v)


def _values(reader: Any) -> tuple[int, float]:
    return int(reader.get_tensor("global_step")), float(reader.get_tensor("v"))


def test_tfs_readers_find_and_read_the_checkpoints_at_the_url(url: str, tmp_path: Path) -> None:
    assert Model(max_to_keep=2).train(url, 5, save_checkpoint_steps=2) == (0, 5, 15.0)
    latest = tf.compat.v1.train.latest_checkpoint(url)
    assert re.fullmatch(re.escape(url) + r"/model\.ckpt-5/[0-9a-f]{8}/model\.ckpt-5", latest), latest
    assert _values(tf.compat.v1.train.NewCheckpointReader(latest)) == (5, 15.0)
    assert _values(tf.compat.v1.train.load_checkpoint(url)) == (5, 15.0)
    assert looprt.latest_checkpoint(url) == f"{url}/model.ckpt-5"
    # Retention: looprt keeps 2 (the TF saver's max_to_keep); TF's state file names those 2.
    assert [c.step for c in looprt.CheckpointManager(url).checkpoints()] == [4, 5]
    state = tf.compat.v1.train.get_checkpoint_state(url)
    kept = list(state.all_model_checkpoint_paths)
    assert [p.rsplit("/", 1)[1] for p in kept] == ["model.ckpt-4", "model.ckpt-5"]
    assert kept[-1] == state.model_checkpoint_path == latest
    assert _values(tf.compat.v1.train.NewCheckpointReader(kept[0])) == (4, 14.0)
    assert not tf.io.gfile.glob(f"{url}/model.ckpt-2/*/model.ckpt-2.index")  # rotated out
    # The same objects in a local folder: TF's load_checkpoint takes the prefix itself.
    loc = Location(url)
    for rel in loc.listing():
        local = tmp_path.joinpath(*rel.split("/"))
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(loc.read(rel))
    prefix = tf.compat.v1.train.latest_checkpoint(str(tmp_path))
    assert prefix == str(tmp_path / latest[len(url) + 1 :])
    assert _values(tf.compat.v1.train.load_checkpoint(prefix)) == (5, 15.0)


def test_a_second_session_resumes_from_the_url(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Model().train(url, 3) == (0, 3, 13.0)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert Model().train(url, 2) == (3, 5, 15.0)  # the download TF restored from is gone
    assert not [name for name in os.listdir(temp) if name.startswith("looprt-")]
    assert _values(tf.compat.v1.train.load_checkpoint(url)) == (5, 15.0)
    assert Model().restored(f"{url}/model.ckpt-4") == (4, 14.0)  # a checkpoint by its URL


def _summary_steps(url: str) -> dict[str, list[int]]:
    [file] = tf.io.gfile.glob(url + "/events.out.tfevents*")
    steps: dict[str, list[int]] = {}
    for event in tf.compat.v1.train.summary_iterator(file):
        for value in event.summary.value:
            steps.setdefault(value.tag, []).append(event.step)
            if value.tag == "global_step/sec":
                assert value.simple_value > 0
    return steps


def test_summaries_are_written_at_the_url_as_tf_writes_them_there(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Model().train(url, 3, save_summaries_steps=1, log_step_count_steps=1)
    steps = _summary_steps(url)
    # The first run (fetching the step) writes the summary of step 0; the step rate from step 1.
    assert steps == {"value": [0, 1, 2, 3, 3], "global_step/sec": [1, 2, 3]}
    tf_url = f"ram://looprt-test-{uuid.uuid4().hex}/tf"  # TF's own session, same graph and runs
    monkeypatch.setattr(train, "MonitoredTrainingSession", tf.compat.v1.train.MonitoredTrainingSession)
    monkeypatch.setattr(train, "Scaffold", tf.compat.v1.train.Scaffold)
    Model().train(tf_url, 3, save_summaries_steps=1, log_step_count_steps=1)
    assert _summary_steps(tf_url) == steps


def test_a_damaged_or_missing_checkpoint_at_the_url_is_what_it_is_locally(url: str) -> None:
    Model().train(url, 3)
    [data] = tf.io.gfile.glob(f"{url}/model.ckpt-3/*/model.ckpt-3.data-00000-of-00001")
    torn = tf.io.gfile.GFile(data, "rb").read()[:-1]
    tf.io.gfile.remove(data)  # (TF's RAM file system appends to a file opened again with "wb")
    with tf.io.gfile.GFile(data, "wb") as f:
        f.write(torn)
    with pytest.warns(CheckpointWarning, match="model.ckpt-3"):
        assert Model().train(url, 0) == (2, 2, 12.0)  # the previous one, restored
    with pytest.raises(tf.errors.DataLossError, match="model.ckpt-3"):
        Model().restored(f"{url}/model.ckpt-3")
    for path in (f"{url}/model.ckpt-9", f"{tempfile.gettempdir()}/looprt-no-such/model.ckpt-9"):
        with pytest.raises(ValueError, match="not a valid checkpoint"):  # TF's error, as for a local path
            Model().restored(path)
    tf.io.gfile.remove(f"{url}/model.ckpt-2/manifest.json")  # an upload that never finished
    with pytest.raises(tf.errors.DataLossError, match="manifest.json is missing"):
        Model().restored(f"{url}/model.ckpt-2")


def test_only_schemes_no_fsspec_implementation_serves_are_taken(tmp_path: Path) -> None:
    require_tf_filesystem(f"ram://looprt-test-{uuid.uuid4().hex}")
    assert issubclass(fsspec.get_filesystem_class("ram"), GFileSystem)
    require_tf_filesystem(tmp_path.as_uri())  # file:// is TF's and fsspec's: fsspec keeps it
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem

    assert fsspec.get_filesystem_class("file") is LocalFileSystem
    assert fsspec.get_filesystem_class("memory") is MemoryFileSystem
    previous = fsspec.get_filesystem_class("ram")

    class RamFileSystem(MemoryFileSystem):  # an fsspec implementation of ram://, installed first
        protocol = "ram"

    fsspec.register_implementation("ram", RamFileSystem, clobber=True)
    try:
        require_tf_filesystem(f"ram://looprt-test-{uuid.uuid4().hex}")
        assert fsspec.get_filesystem_class("ram") is RamFileSystem
    finally:
        fsspec.register_implementation("ram", previous, clobber=True)


def test_a_scheme_tf_lacks_is_still_a_clear_error() -> None:
    try:
        tf.io.gfile.exists("s3://looprt-no-bucket/run")
    except tf.errors.UnimplementedError:
        pass
    else:
        pytest.skip("this TensorFlow has an s3:// file system")
    with pytest.raises(looprt.errors.UnimplementedError, match=r"s3://.*tensorflow-io"):
        require_tf_filesystem("s3://looprt-no-bucket/run")
    assert not issubclass(fsspec.get_filesystem_class("s3"), GFileSystem)


def test_a_job_resumes_from_a_plain_tf_checkpoint_named_at_the_url(url: str) -> None:
    model = Model()
    with model.graph.as_default(), tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for _ in range(4):
            sess.run(model.bump)
        prefix = f"{url}/model/model"  # TF's own Saver, in a folder of its own
        tf.compat.v1.train.Saver().save(sess, prefix, write_meta_graph=False, write_state=False)
    tf.compat.v1.train.update_checkpoint_state(url, prefix)
    assert Model().train(url, 1) == (4, 5, 15.0)  # not taken for a looprt checkpoint's folder


def test_any_looprt_writer_reaches_a_tf_scheme_once_the_backend_is_imported() -> None:
    import subprocess
    import sys

    code = (
        "import looprt, looprt.backends.tensorflow, numpy as np\n"
        "url = 'ram://looprt-fresh/run'\n"
        "print(looprt.latest_checkpoint(url))\n"  # no TF saver has touched the URL
        "prog = looprt.Program(backend='numpy', name='p')\n"
        "w = prog.state('w', np.zeros(2))\n"
        "@prog.step(outputs=('loss',))\n"
        "def train(w):\n"
        "    w += 1.0\n"
        "    return {'loss': float(w.sum())}\n"
        "with looprt.MonitoredTrainingSession(checkpoint_dir=url, scaffold=looprt.Scaffold(program=prog),\n"
        "                                     save_checkpoint_steps=2) as sess:\n"
        "    for _ in range(3):\n"
        "        sess.run(train)\n"
        "print(looprt.latest_checkpoint(url))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["None", "ram://looprt-fresh/run/model.ckpt-3"]


def test_a_write_cut_short_leaves_the_object_as_it_was(url: str) -> None:
    require_tf_filesystem(url)
    fs = fsspec.filesystem("ram")
    old, new = f"{url}/old", f"{url}/new"
    with fs.open(old, "wb") as f:
        f.write(b"complete")
    for path in (old, new):
        with pytest.raises(RuntimeError, match="cut short"), fs.open(path, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("cut short")
    assert fs.cat_file(old) == b"complete"
    assert not fs.exists(new)
    assert sorted(name.rsplit("/", 1)[1] for name in fs.ls(url, detail=False)) == ["old"]  # no temporaries
