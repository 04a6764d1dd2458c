"""Graph-mode checkpoints: TF's format, kept by looprt's crash-safe manager.

Each checkpoint is a folder ``<dir>/model.ckpt-<step>`` with TF's files, TF's
``checkpoint`` state file and looprt's manifest; TF's own readers take the
folder, and ``tf.train.latest_checkpoint(<dir>)`` finds the newest one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

tf = pytest.importorskip("tensorflow")
train = pytest.importorskip("looprt.backends.tensorflow")

import looprt  # noqa: E402
from looprt.checkpoint import CheckpointWarning, verify_checkpoint  # noqa: E402

pytestmark = pytest.mark.tensorflow


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
            saver = tf.compat.v1.train.Saver(**saver_kwargs) if saver_kwargs else None
            self.scaffold = train.Scaffold(saver=saver)

    def session(self, checkpoint_dir: Path | None = None, path: str | None = None, hooks: Any = ()) -> Any:
        creator = train.ChiefSessionCreator(
            scaffold=self.scaffold,
            checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
            checkpoint_filename_with_path=path,
        )
        return train.MonitoredSession(creator, hooks=list(hooks))

    def train(self, checkpoint_dir: Path, runs: int, save_steps: int = 1) -> tuple[int, float]:
        with self.graph.as_default():
            hook = train.CheckpointSaverHook(
                str(checkpoint_dir), save_steps=save_steps, scaffold=self.scaffold
            )
            with self.session(checkpoint_dir, hooks=[hook]) as sess:
                for _ in range(runs):
                    sess.run(self.bump)
                return self.state(sess)

    def state(self, sess: Any) -> tuple[int, float]:
        step, value = sess.run([self.global_step, self.v])
        return int(step), float(value)

    def restored(self, checkpoint_dir: Path | None = None, path: str | None = None) -> tuple[int, float]:
        with self.graph.as_default(), self.session(checkpoint_dir, path) as sess:
            return self.state(sess)


def test_a_checkpoint_folder_is_what_tfs_readers_take(tmp_path: Path) -> None:
    assert Model().train(tmp_path, 3) == (3, 13.0)
    folder = tmp_path / "model.ckpt-3"
    assert verify_checkpoint(str(folder)) is None
    reader = tf.train.load_checkpoint(str(folder))
    assert (int(reader.get_tensor("global_step")), float(reader.get_tensor("v"))) == (3, 13.0)
    assert dict(tf.train.list_variables(str(tmp_path))) == {"global_step": [], "v": []}
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(folder / "model.ckpt-3")
    assert looprt.latest_checkpoint(str(tmp_path)) == str(folder)
    assert sorted(os.listdir(folder)) == [
        "checkpoint",
        "manifest.json",
        "model.ckpt-3.data-00000-of-00001",
        "model.ckpt-3.index",
        "model.ckpt-3.meta",
    ]


def test_tfs_own_session_resumes_from_looprt_checkpoints(tmp_path: Path) -> None:
    Model().train(tmp_path, 4)
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        v = tf.compat.v1.Variable(0.0, name="v")
        with tf.compat.v1.train.MonitoredSession(
            tf.compat.v1.train.ChiefSessionCreator(checkpoint_dir=str(tmp_path))
        ) as sess:
            assert sess.run([global_step, v]) == [4, 14.0]


def test_restart_restores_the_latest_and_rotation_follows_the_tf_saver(tmp_path: Path) -> None:
    model = Model(max_to_keep=2)
    model.train(tmp_path, 3)
    assert model.restored(tmp_path) == (3, 13.0)
    assert model.train(tmp_path, 2) == (5, 15.0)  # resumed at 3
    assert [c.step for c in looprt.CheckpointManager(str(tmp_path)).checkpoints()] == [4, 5]
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["model.ckpt-4", "model.ckpt-5"]


def test_a_session_restore_computes_each_checksum_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from looprt.checkpoint import CHECKSUMS, WRITE_CHECKSUM

    model = Model()
    model.train(tmp_path, 3)
    folder = tmp_path / "model.ckpt-3"
    files = sorted(str(folder / name) for name in os.listdir(folder) if name != "manifest.json")
    read: list[str] = []
    real = CHECKSUMS[WRITE_CHECKSUM]

    def counting(path: str) -> int:
        read.append(path)
        return real(path)

    monkeypatch.setitem(CHECKSUMS, WRITE_CHECKSUM, counting)
    assert model.restored(tmp_path) == (3, 13.0)  # latest_checkpoint verifies; the restore does not again
    assert sorted(read) == files
    read.clear()
    assert model.restored(path=str(folder)) == (3, 13.0)  # a restore on its own verifies
    assert sorted(read) == files


def test_a_damaged_newest_checkpoint_is_skipped(tmp_path: Path) -> None:
    """A crash that left the newest checkpoint torn: restore the previous one, with a warning."""
    model = Model()
    model.train(tmp_path, 3)
    data = tmp_path / "model.ckpt-3" / "model.ckpt-3.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-1])
    with pytest.warns(CheckpointWarning, match="model.ckpt-3"):
        assert model.restored(tmp_path) == (2, 12.0)
    with pytest.raises(tf.errors.DataLossError, match="model.ckpt-3"):
        model.restored(path=str(tmp_path / "model.ckpt-3"))


def test_an_interrupted_save_is_invisible_and_cleaned_up(tmp_path: Path) -> None:
    model = Model()
    model.train(tmp_path, 2)
    # What a process killed inside TF's save leaves: TF's files in a temporary folder.
    leftover = tmp_path / ".tmp-save-0123abcd-model.ckpt-3"
    leftover.mkdir()
    (leftover / "model.ckpt-3.index").write_bytes(b"partial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.restored(tmp_path) == (2, 12.0)
    model.train(tmp_path, 1)
    assert not leftover.exists()


def test_restore_a_plain_tf_checkpoint_by_path(tmp_path: Path) -> None:
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        v = tf.compat.v1.Variable(42.0, name="v")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(global_step.assign(7))
            prefix = saver.save(sess, str(tmp_path / "tf" / "model"), global_step=7)
    del v
    assert Model().restored(path=prefix) == (7, 42.0)


def test_save_and_restore_through_the_scaffolds_saver(tmp_path: Path) -> None:
    model = Model()
    with model.graph.as_default(), model.session() as sess:
        saver = model.scaffold.saver
        assert isinstance(saver, train.GraphSaver)
        assert saver is model.scaffold.saver is train.GraphSaver.wrap(saver.tf_saver)  # one per TF saver
        assert saver.saver_def.max_to_keep == 5  # the TF saver's own attributes
        sess.run(model.bump)
        # Without a global_step argument the graph's global step names the checkpoint.
        path = saver.save(_raw(sess), str(tmp_path / "m"))
        assert path == str(tmp_path / "m-1")
        assert saver.last_checkpoints == [path]
        unindexed = saver.save(_raw(sess), str(tmp_path / "m"), global_step=9, write_state=False)
        assert looprt.latest_checkpoint(str(tmp_path)) == path
        assert os.path.isdir(unindexed)


def _raw(sess: Any) -> Any:
    """The raw TF session under a MonitoredSession, reached the way hooks reach it."""
    seen: list[Any] = []
    sess.run_step_fn(lambda step_context: seen.append(step_context.session))
    return seen[0]


def test_a_graph_without_variables_saves_nothing(tmp_path: Path) -> None:
    with tf.Graph().as_default():
        step = tf.constant(5, dtype=tf.int64)
        saver = train.Scaffold().finalize().saver
        with tf.compat.v1.Session() as sess:
            assert saver.save(sess, str(tmp_path / "m"), global_step=step) is None
    assert not os.listdir(tmp_path)


class InjectedFault(Exception):
    pass


@pytest.mark.parametrize(
    ("boundary", "committed"),
    [
        ("payload.write.after", False),  # TF has written its files into the temporary folder
        ("manifest.write.after", False),
        ("commit.rename.after", False),  # the folder is in place, the index does not name it
        ("index.write.after", False),
        ("index.replace.after", True),  # the index names it: the save is committed
    ],
)
def test_a_save_failing_midway_leaves_a_restorable_directory(
    tmp_path: Path, boundary: str, committed: bool
) -> None:
    from looprt.checkpoint import set_fault_hook

    model = Model()
    model.train(tmp_path, 2)

    def fault(name: str, subject: str) -> None:
        if name == boundary and "model.ckpt-3" in subject:
            raise InjectedFault(name)

    previous = set_fault_hook(fault)
    try:
        with pytest.raises(InjectedFault):
            model.train(tmp_path, 1)
    finally:
        set_fault_hook(previous)
    expected = (3, 13.0) if committed else (2, 12.0)
    assert model.restored(tmp_path) == expected
    # TF's own view stays readable (its state file is refreshed after looprt's index).
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    assert float(reader.get_tensor("v")) == 12.0


def test_a_remote_checkpoint_dir_tf_cannot_read_is_a_clear_error_never_a_local_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TF 2.x wheels have no s3:// file system: the drop-in says so instead of writing to ./s3:."""
    try:
        tf.io.gfile.exists("s3://looprt-no-bucket/run")
    except tf.errors.UnimplementedError:
        pass
    else:
        pytest.skip("this TensorFlow has an s3:// file system")
    monkeypatch.chdir(tmp_path)
    model = Model()
    with (
        model.graph.as_default(),
        pytest.raises(looprt.errors.UnimplementedError, match=r"s3://.*tensorflow-io"),
    ):
        train.MonitoredTrainingSession(checkpoint_dir="s3://looprt-no-bucket/run", save_checkpoint_steps=1)
    assert os.listdir(tmp_path) == []
