"""Restoring a checkpoint: all or nothing without a rollback copy, checksums verified once, and
the program told of every checkpoint (``Program.note_checkpoint``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt
from looprt.backends.numpy import NumpyBackend
from looprt.checkpoint import CHECKSUMS, WRITE_CHECKSUM, Saver
from looprt.errors import DataLossError


def make_program(backend: Any = "numpy", **shapes: int) -> tuple[looprt.Program, looprt.Step]:
    """A program with one float array per keyword (name=size) and a step that adds 1 to each."""
    prog = looprt.Program(backend=backend, name="restore")
    for name, size in (shapes or {"a": 3, "b": 4}).items():
        prog.state(name, np.zeros(size))

    declared = [prog.states[name] for name in shapes or ("a", "b")]

    def train() -> None:
        for handle in declared:
            handle.value += 1.0

    prog.step(train, name="train")
    return prog, prog.steps["train"]


def run_steps(prog: looprt.Program, step: looprt.Step, n: int) -> looprt.ProgramSession:
    sess = looprt.ProgramSession(prog)
    sess.run(prog.initializer)
    for _ in range(n):
        sess.run(step)
    return sess


@pytest.fixture
def state_dict_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the programs whose whole state was copied (a rollback copy is one such copy)."""
    calls: list[str] = []
    real = NumpyBackend.state_dict

    def counting(self: NumpyBackend, program: looprt.Program) -> dict[str, Any]:
        calls.append(program.name)
        return real(self, program)

    monkeypatch.setattr(NumpyBackend, "state_dict", counting)
    yield calls


def checkpoint_of(tmp_path: Path, **shapes: int) -> str:
    prog, step = make_program(**shapes)
    sess = run_steps(prog, step, 2)
    return Saver(prog).save(sess, str(tmp_path / "model.ckpt"))


def live_arrays(prog: looprt.Program) -> dict[str, tuple[int, np.ndarray]]:
    return {name: (id(s.value), np.array(s.value, copy=True)) for name, s in prog.states.items()}


def assert_untouched(prog: looprt.Program, before: dict[str, tuple[int, np.ndarray]]) -> None:
    for name, (identity, values) in before.items():
        live = prog.states[name].value
        assert id(live) == identity, f"state {name!r} was replaced"
        np.testing.assert_array_equal(live, values, err_msg=f"state {name!r} changed")


# -- a failed restore changes nothing, and copies nothing ----------------------------------


@pytest.mark.parametrize(
    ("shapes", "error", "match"),
    [
        ({"a": 3, "b": 5}, ValueError, r"'b' has shape \(5,\); the value to restore has \(4,\)"),
        ({"a": 3, "b": 4, "c": 2}, KeyError, r"missing \['c'\]"),
        ({"a": 3}, KeyError, r"unexpected \['b'\]"),
    ],
    ids=["wrong shape", "missing key", "unexpected key"],
)
def test_a_restore_that_does_not_fit_changes_nothing_and_makes_no_rollback_copy(
    tmp_path: Path, state_dict_calls: list[str], shapes: dict[str, int], error: type, match: str
) -> None:
    path = checkpoint_of(tmp_path)  # a: 3 floats, b: 4
    prog, step = make_program(**shapes)
    run_steps(prog, step, 5)
    before = live_arrays(prog)
    state_dict_calls.clear()
    with pytest.raises(error, match=match):
        Saver(prog).restore(None, path)
    assert_untouched(prog, before)  # "a" fits and comes first, yet was not written
    assert state_dict_calls == []
    assert not prog.checkpointed


def test_a_value_of_another_kind_of_dtype_is_rejected_before_anything_is_written(tmp_path: Path) -> None:
    source = looprt.Program(backend="numpy", name="ints")
    source.state("a", np.zeros(3))
    source.state("b", np.full(4, 1.5))
    path = Saver(source).save(None, str(tmp_path / "model.ckpt"), global_step=1)
    target = looprt.Program(backend="numpy", name="ints")
    target.state("a", np.ones(3))
    target.state("b", np.zeros(4, dtype=np.int64))
    before = live_arrays(target)
    with pytest.raises(ValueError, match="'b' has dtype int64; the value to restore has float64"):
        Saver(target).restore(None, path)
    assert_untouched(target, before)


class UncheckedBackend(NumpyBackend):
    """A backend that checks values only as it assigns them: restores need a rollback copy."""

    check_assign = None

    def assign(self, state: Any, value: Any) -> None:
        if np.shape(value) != np.shape(state.value):
            raise ValueError(f"state {state.name!r} does not fit")
        state.value[...] = value


def test_a_backend_that_cannot_check_first_is_rolled_back(
    tmp_path: Path, state_dict_calls: list[str]
) -> None:
    path = checkpoint_of(tmp_path)
    prog, step = make_program(UncheckedBackend(), a=3, b=5)
    run_steps(prog, step, 5)
    before = live_arrays(prog)
    state_dict_calls.clear()
    with pytest.raises(ValueError, match="'b' does not fit") as raised:
        Saver(prog).restore(None, path)
    assert_untouched(prog, before)  # "a" was written, then put back
    assert state_dict_calls == [prog.name]  # the rollback copy
    assert "the state was left unchanged" in "".join(getattr(raised.value, "__notes__", []))


def test_a_restore_that_fits_copies_nothing(tmp_path: Path, state_dict_calls: list[str]) -> None:
    path = checkpoint_of(tmp_path)
    prog, step = make_program()
    run_steps(prog, step, 5)
    arrays = {name: s.value for name, s in prog.states.items()}
    state_dict_calls.clear()
    Saver(prog).restore(None, path)
    assert state_dict_calls == []
    np.testing.assert_array_equal(prog.states["a"].value, np.full(3, 2.0))
    assert all(prog.states[name].value is array for name, array in arrays.items())  # set in place
    assert int(prog.global_step.value) == 2


# -- checksums: verified once per restore, and still verified -----------------------------


@pytest.fixture
def checksummed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files whose checksum was computed, in order, through the public ``CHECKSUMS`` table."""
    files: list[str] = []
    real: Callable[[str], int] = CHECKSUMS[WRITE_CHECKSUM]

    def counting(path: str) -> int:
        files.append(os.path.basename(path))
        return real(path)

    monkeypatch.setitem(CHECKSUMS, WRITE_CHECKSUM, counting)
    return files


def test_a_restore_computes_each_files_checksum_once(tmp_path: Path, checksummed: list[str]) -> None:
    path = checkpoint_of(tmp_path)
    payload = sorted(name for name in os.listdir(path) if name != "manifest.json")
    prog, _ = make_program()
    checksummed.clear()
    Saver(prog).restore(None, path)
    assert sorted(checksummed) == payload


def test_a_corrupt_payload_is_still_caught_and_changes_nothing(tmp_path: Path) -> None:
    path = checkpoint_of(tmp_path)
    payload = Path(path) / "state.npz"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    payload.write_bytes(bytes(data))
    prog, step = make_program()
    run_steps(prog, step, 5)
    before = live_arrays(prog)
    with pytest.raises(DataLossError, match="state.npz fails its crc32c check"):
        Saver(prog).restore(None, path)
    assert_untouched(prog, before)
    assert not prog.checkpointed


def test_latest_checkpoint_then_restore_computes_each_checksum_once(
    tmp_path: Path, checksummed: list[str]
) -> None:
    path = checkpoint_of(tmp_path)
    payload = sorted(name for name in os.listdir(path) if name != "manifest.json")
    prog, _ = make_program()
    checksummed.clear()
    assert looprt.latest_checkpoint(str(tmp_path)) == path  # verifies
    Saver(prog).restore(None, path)  # what latest_checkpoint just verified, unchanged: not again
    assert sorted(checksummed) == payload
    assert int(prog.global_step.value) == 2
    for _ in range(2):  # the verification was used up; a restore's own is never reused
        checksummed.clear()
        Saver(prog).restore(None, path)
        assert sorted(checksummed) == payload


def test_a_session_restore_computes_each_checksum_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def session() -> Any:
        prog, step = make_program()
        return step, looprt.MonitoredTrainingSession(
            checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog), save_summaries_steps=None
        )

    step, sess = session()
    with sess:
        for _ in range(3):
            sess.run(step)
    latest = tmp_path / "model.ckpt-3"
    payload = sorted(str(latest / name) for name in os.listdir(latest) if name != "manifest.json")
    read: list[str] = []
    real: Callable[[str], int] = CHECKSUMS[WRITE_CHECKSUM]

    def counting(path: str) -> int:
        read.append(path)
        return real(path)

    monkeypatch.setitem(CHECKSUMS, WRITE_CHECKSUM, counting)
    step, sess = session()  # finds the latest checkpoint, restores it, saves step 3 anew
    with sess:
        assert sess.run(step.program.global_step) == 3
    # The files of the checkpoint restored were read once; the rest were files being saved.
    assert sorted(path for path in read if path.startswith(str(latest) + os.sep)) == payload


def test_a_checkpoint_deleted_while_a_restore_reads_it_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    path = checkpoint_of(tmp_path)
    assert looprt.latest_checkpoint(str(tmp_path)) == path
    real = NumpyBackend.load_payload

    def deleted_meanwhile(self: NumpyBackend, folder: str) -> Any:
        shutil.rmtree(folder)  # another job's retention, between the check and the read
        return real(self, folder)

    monkeypatch.setattr(NumpyBackend, "load_payload", deleted_meanwhile)
    prog, _ = make_program()
    with pytest.raises(looprt.errors.NotFoundError, match="deleted while read"):
        Saver(prog).restore(None, path)


@pytest.mark.parametrize("change", ["rewritten in place", "replaced", "too late"])
def test_a_checkpoint_changed_after_latest_checkpoint_is_verified_again(
    tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = checkpoint_of(tmp_path)
    assert looprt.latest_checkpoint(str(tmp_path)) == path
    payload = Path(path) / "state.npz"
    if change == "too late":  # more than a minute between latest_checkpoint and the restore
        import looprt.checkpoint.format as checkpoint_format

        real = checkpoint_format.time.monotonic
        monkeypatch.setattr(checkpoint_format.time, "monotonic", lambda: real() + 61)
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    if change == "replaced":
        replacement = payload.with_name("replacement")
        replacement.write_bytes(bytes(data))
        os.replace(replacement, payload)
    else:
        stat = payload.stat()
        with open(payload, "r+b") as f:  # the same inode
            f.write(bytes(data))
        if change == "rewritten in place":  # a later modification time, even on a coarse clock
            os.utime(payload, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        else:
            os.utime(payload, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # looks untouched: only the clock
    prog, _ = make_program()
    with pytest.raises(DataLossError, match="state.npz fails its crc32c check"):
        Saver(prog).restore(None, path)


# -- the program is told of every checkpoint -----------------------------------------------


def test_a_committed_save_drops_the_initial_values(tmp_path: Path) -> None:
    prog, step = make_program()
    sess = run_steps(prog, step, 1)
    assert all(s.initial is not None for s in prog.states.values())  # kept for a re-initialization
    Saver(prog).save(sess, str(tmp_path / "model.ckpt"))
    assert prog.checkpointed
    assert all(s.initial is None for s in prog.states.values())


def test_an_async_save_drops_the_initial_values_once_committed(tmp_path: Path) -> None:
    prog, step = make_program()
    sess = run_steps(prog, step, 1)
    saver = Saver(prog)
    saver.save_async(sess, str(tmp_path / "model.ckpt"))
    saver.wait_until_finished()
    assert prog.checkpointed
    assert all(s.initial is None for s in prog.states.values())


def test_a_failed_save_keeps_the_initial_values(tmp_path: Path) -> None:
    prog, step = make_program()
    sess = run_steps(prog, step, 1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(looprt.errors.FailedPreconditionError):
        Saver(prog).save(sess, str(blocker / "model.ckpt"))
    assert not prog.checkpointed
    assert all(s.initial is not None for s in prog.states.values())


def test_a_restore_tells_the_program(tmp_path: Path) -> None:
    path = checkpoint_of(tmp_path)
    prog, _ = make_program()
    assert prog.pristine and not prog.checkpointed
    Saver(prog).restore(None, path)
    assert prog.checkpointed and not prog.pristine
    assert all(s.initial is None for s in prog.states.values())


# -- torch: checked before anything is loaded ------------------------------------------------


def test_a_torch_restore_that_does_not_fit_changes_nothing_and_makes_no_rollback_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from looprt.backends.torch import TorchBackend

    def program(second: int) -> looprt.Program:
        prog = looprt.Program(backend="torch", name="net")
        prog.state("first", torch.nn.Linear(3, 3))
        prog.state("second", torch.nn.Linear(3, second))
        return prog

    path = Saver(program(2)).save(None, str(tmp_path / "model.ckpt"), global_step=1)
    prog = program(4)
    before = {k: v.clone() for k, v in prog.states["first"].value.state_dict().items()}
    copies: list[str] = []
    real = TorchBackend.state_dict

    def counting(self: TorchBackend, p: looprt.Program) -> dict[str, Any]:
        copies.append(p.name)
        return real(self, p)

    monkeypatch.setattr(TorchBackend, "state_dict", counting)
    with pytest.raises(ValueError, match="'second'"):
        Saver(prog).restore(None, path)
    assert copies == []
    for key, value in prog.states["first"].value.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_new_checkpoints_record_crc32c_and_older_crc32_ones_still_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from looprt.checkpoint import commit

    assert WRITE_CHECKSUM == "crc32c"
    prog, step = make_program()
    sess = run_steps(prog, step, 1)
    monkeypatch.setattr(commit, "WRITE_CHECKSUM", "crc32")  # as checkpoints before 0.2 were written
    old = Saver(prog).save(sess, str(tmp_path / "old" / "model.ckpt"))
    monkeypatch.undo()
    new = Saver(prog).save(sess, str(tmp_path / "new" / "model.ckpt"))
    for path, algorithm in ((old, "crc32"), (new, "crc32c")):
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        assert all(set(entry) == {"size", algorithm} for entry in manifest["files"].values())
        sess.run(step)
        Saver(prog).restore(None, path)
        np.testing.assert_array_equal(prog.states["a"].value, [1.0, 1.0, 1.0])
