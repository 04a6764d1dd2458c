"""Damaged checkpoints and indexes are detected in every trial, and the previous good one is used.

Each trial copies a directory of three intact checkpoints, damages one file
(a payload file, the newest manifest or the index) in a random way, and
resumes from the directory: the reader must warn, naming what is damaged, and
fall back to the newest checkpoint that is intact. Trials are seeded, so a
failure names a trial that reproduces.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import looprt
from looprt.checkpoint import CheckpointManager, CheckpointWarning, latest_checkpoint

Damage = Callable[[Path, random.Random], None]


def truncate(path: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: rng.randrange(1, len(data))])


def zero_length(path: Path, rng: random.Random) -> None:
    path.write_bytes(b"")


def flip_bits(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    for position in rng.sample(range(len(data) * 8), rng.randint(1, 3)):
        data[position // 8] ^= 1 << (position % 8)
    path.write_bytes(bytes(data))


def overwrite_span(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 64))
    original = bytes(data[start:end])
    while bytes(data[start:end]) == original:
        data[start:end] = rng.randbytes(end - start)
    path.write_bytes(bytes(data))


def append_garbage(path: Path, rng: random.Random) -> None:
    with path.open("ab") as f:
        f.write(rng.randbytes(rng.randint(1, 16)))


def delete(path: Path, rng: random.Random) -> None:
    path.unlink()


DAMAGES: dict[str, Damage] = {
    "truncated": truncate,
    "zero-length": zero_length,
    "bit-flipped": flip_bits,
    "overwritten span": overwrite_span,
    "garbage appended": append_garbage,
    "deleted": delete,
}
TARGETS = ("model.ckpt-3/state.npz", "model.ckpt-3/state.json", "model.ckpt-3/manifest.json", "checkpoint.json")


def make_program() -> tuple[looprt.Program, looprt.State]:
    prog = looprt.Program(name="corrupt")
    w = prog.state("w", np.zeros(64))
    prog.state("schedule", {"lr": 0.1, "warmup": 3})  # non-array state: written to state.json
    return prog, w


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three intact checkpoints (steps 1, 2, 3) whose state ``w`` is filled with the step."""
    directory = tmp_path_factory.mktemp("pristine")
    manager = CheckpointManager(str(directory), clock=lambda: 1_700_000_000.123456)  # trials reproduce
    backend = looprt.Program().backend
    for step in (1, 2, 3):
        state = {"global_step": np.int64(step), "w": np.full(64, float(step)), "schedule": {"lr": 0.1 * step}}
        manager.save(state, step, backend.save_payload, backend="numpy")
    return directory


def run_trials(pristine: Path, workdir: Path, trials: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    detected: Counter[str] = Counter()
    for trial in range(trials):
        target, damage = rng.choice(TARGETS), rng.choice(sorted(DAMAGES))
        label = f"trial {trial} (seed {seed}): {damage} {target}"
        directory = workdir / f"t{trial}"
        shutil.copytree(pristine, directory)
        DAMAGES[damage](directory / target, rng)
        index_damaged = target == "checkpoint.json"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = latest_checkpoint(str(directory))
        messages = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
        if index_damaged:  # the checkpoints are intact: found by scanning the folder
            assert found == str(directory / "model.ckpt-3"), label
            assert len(messages) == 1 and "checkpoint.json" in messages[0], (label, messages)
        else:  # the newest is damaged: the previous one, with a warning naming the bad one
            assert found == str(directory / "model.ckpt-2"), label
            assert len(messages) == 1, (label, messages)
            assert str(directory / "model.ckpt-3") in messages[0], (label, messages)
            named = (target.split("/")[1], "manifest.json")  # the damaged file, or the manifest about it
            assert any(name in messages[0] for name in named), (label, messages)
        detected[damage] += 1
        shutil.rmtree(directory)
    return detected


def test_every_damage_is_detected_and_the_previous_checkpoint_used(pristine: Path, tmp_path: Path) -> None:
    detected = run_trials(pristine, tmp_path, trials=120, seed=0)
    assert sum(detected.values()) == 120 and set(detected) == set(DAMAGES)


@pytest.mark.slow
def test_thousands_of_random_damages_are_all_detected(pristine: Path, tmp_path: Path) -> None:
    detected = run_trials(pristine, tmp_path, trials=5000, seed=1)
    assert sum(detected.values()) == 5000
    print(json.dumps({"corruptions_detected": sum(detected.values()), "by_kind": dict(detected)}))


@pytest.mark.parametrize("target", TARGETS[:3])
def test_a_resumed_session_restores_the_previous_checkpoint_and_says_why(
    pristine: Path, tmp_path: Path, target: str
) -> None:
    directory = tmp_path / "run"
    shutil.copytree(pristine, directory)
    flip_bits(directory / target, random.Random(7))
    prog, w = make_program()
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_dir=str(directory))
    with pytest.warns(CheckpointWarning, match=r"skipping checkpoint .*model\.ckpt-3: ") as record:
        sess = looprt.MonitoredSession(creator)
    with sess:
        assert sess.run(prog.global_step) == 2
        np.testing.assert_array_equal(w.value, np.full(64, 2.0))
        assert prog.states["schedule"].value == {"lr": 0.2}
    assert "falling back to the previous checkpoint" in str(record[0].message)


def test_a_damaged_index_and_newest_checkpoint_together(pristine: Path, tmp_path: Path) -> None:
    directory = tmp_path / "run"
    shutil.copytree(pristine, directory)
    (directory / "checkpoint.json").write_text("{")
    zero_length(directory / "model.ckpt-3" / "state.npz", random.Random(0))
    with pytest.warns(CheckpointWarning) as record:
        assert latest_checkpoint(str(directory)) == str(directory / "model.ckpt-2")
    messages = [str(r.message) for r in record]
    assert any("checkpoint.json" in m and "garbled" in m for m in messages)
    assert any("model.ckpt-3" in m and "state.npz has 0 bytes" in m for m in messages)


def test_a_bit_flip_in_the_index_cannot_silently_point_elsewhere(pristine: Path, tmp_path: Path) -> None:
    # Without a checksum of the index, "model.ckpt-3" -> "model.ckpt-1" (two bits) would
    # silently resume from an older step.
    directory = tmp_path / "run"
    shutil.copytree(pristine, directory)
    index = directory / "checkpoint.json"
    data = json.loads(index.read_text())
    data["latest"] = "model.ckpt-1"
    index.write_text(json.dumps(data))
    with pytest.warns(CheckpointWarning, match="checksum"):
        assert latest_checkpoint(str(directory)) == str(directory / "model.ckpt-3")


@pytest.mark.parametrize("target", ["model.ckpt-3/manifest.json", "checkpoint.json"])
def test_every_single_bit_flip_of_a_manifest_or_index_is_detected(
    pristine: Path, tmp_path: Path, target: str
) -> None:
    directory = tmp_path / "run"
    shutil.copytree(pristine, directory)
    path = directory / target
    original = path.read_bytes()
    undetected = []
    for bit in range(len(original) * 8):
        damaged = bytearray(original)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            latest_checkpoint(str(directory))
        if not any(issubclass(w.category, CheckpointWarning) for w in caught):
            undetected.append(bit)
    assert undetected == [], f"{len(undetected)} of {len(original) * 8} flips of {target} went unseen"


def test_files_from_before_checksummed_manifests_are_still_read(pristine: Path, tmp_path: Path) -> None:
    directory = tmp_path / "run"
    shutil.copytree(pristine, directory)
    for path in [directory / "checkpoint.json", *directory.glob("model.ckpt-*/manifest.json")]:
        data = json.loads(path.read_text())
        data.pop("checksum")
        data.pop("deleting", None)
        data["format_version"] = 1
        path.write_text(json.dumps(data, indent=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(str(directory)) == str(directory / "model.ckpt-3")


def file_names(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_targets_exist(pristine: Path) -> None:
    assert set(TARGETS) <= set(file_names(pristine)), file_names(pristine)
