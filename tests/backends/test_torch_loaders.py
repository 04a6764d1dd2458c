"""Every DataLoader setting resumes bit for bit under ``Epochs``, killed anywhere.

The matrix is every combination of ``shuffle``, ``num_workers`` (0, 1, 2),
``persistent_workers`` and ``pin_memory``; a representative subset runs by
default and the whole matrix is marked ``slow``. A run is "killed" by an
exception that leaves the session without a final save, then resumed with new
objects (a new loader has no iterator yet, as in a new process); one case is
killed for real (``os._exit``) and resumed in a new process.

Run as a script (``python test_torch_loaders.py DIR CRASH_AT OPTIONS_JSON``)
it trains and dies right after step ``CRASH_AT``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import looprt  # noqa: E402
from looprt.backends.torch import Epochs  # noqa: E402

pytestmark = pytest.mark.torch

SAVE_EVERY = 3
LAST_STEP = 18  # 5 batches an epoch: three epochs and three steps
ITEMS = 40


class Interrupted(Exception):
    """Ends a session as a kill would: no save at the end."""


class Noisy(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A deterministic dataset (its items depend on the index only)."""

    def __init__(self) -> None:
        data = torch.Generator().manual_seed(1)
        self.x = torch.randn(ITEMS, 4, generator=data)
        self.y = torch.randint(0, 2, (ITEMS,), generator=data)

    def __len__(self) -> int:
        return ITEMS

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.x[index], self.y[index]


def build(shuffle: bool, num_workers: int, persistent_workers: bool, pin_memory: bool) -> Any:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(
        Noisy(),
        batch_size=8,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=persistent_workers,
        pin_memory=pin_memory,
    )

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "first": y[0] * 100 + x[0, 0]}

    return looprt.wrap(
        train_step,
        state={"model": model, "opt": opt},
        inputs=Epochs(loader),
        outputs=("loss", "first"),
    )


def train(directory: str, crash_at: int | None = None, *, kill: bool = False, **options: Any) -> list[float]:
    """Losses of the steps this session trains; stops (or dies) right after step ``crash_at``."""
    step = build(**options)
    losses: list[float] = []
    try:
        with looprt.MonitoredTrainingSession(
            checkpoint_dir=directory,
            scaffold=looprt.Scaffold(program=step.program),
            hooks=[looprt.StopAtStepHook(last_step=LAST_STEP)],
            save_checkpoint_steps=SAVE_EVERY,
            log_step_count_steps=None,
        ) as sess:
            while not sess.should_stop():
                out = sess.run({"loss": step.loss, "first": step.first, "step": step.program.global_step})
                losses.append(float(out["loss"]))
                if crash_at is not None and out["step"] == crash_at:
                    if kill:
                        print(json.dumps(losses), flush=True)
                        os._exit(3)
                    raise Interrupted  # leaves the block with no save at the end
    finally:
        release(step.program.inputs["batch"])
    return losses


def release(batch: Any) -> None:
    """Shut the loader's workers down now.

    Left to the garbage collector, a loader in a reference cycle (a program
    and its handles form one) has its queues collected before its iterator's
    ``__del__`` asks the workers to stop, so each join waits out torch's
    5-second timeout.
    """
    batch.restart(None, 0)  # drops the Epochs generator, and with it the iterator it holds
    loader = batch.iterable.loader
    loader._iterator = None  # a persistent loader's own reference to its iterator


def interrupt(directory: str, crash_at: int, **options: Any) -> None:
    """Train until ``crash_at`` and leave the session as a kill would (no save at the end)."""
    try:
        train(directory, crash_at, **options)
    except Interrupted:
        pass
    else:
        raise AssertionError("not interrupted")


SETTINGS = [
    {"shuffle": s, "num_workers": n, "persistent_workers": p, "pin_memory": m}
    for s, n, p, m in itertools.product((True, False), (0, 1, 2), (False, True), (False, True))
    if n or not p  # persistent workers need workers
]
# What runs by default: the case (one persistent worker, pinned), the plain
# loader, two workers created afresh each epoch, and two persistent ones without shuffling.
DEFAULT = [
    {"shuffle": True, "num_workers": 1, "persistent_workers": True, "pin_memory": True},
    {"shuffle": True, "num_workers": 0, "persistent_workers": False, "pin_memory": False},
    {"shuffle": True, "num_workers": 2, "persistent_workers": False, "pin_memory": False},
    {"shuffle": False, "num_workers": 2, "persistent_workers": True, "pin_memory": False},
]


def _id(options: dict[str, Any]) -> str:
    return "-".join(f"{key}={int(value)}" for key, value in options.items())


def _params() -> list[Any]:
    return [
        pytest.param(options, id=_id(options), marks=() if options in DEFAULT else pytest.mark.slow)
        for options in SETTINGS
    ]


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
@pytest.mark.parametrize("options", _params())
@pytest.mark.parametrize(("crash_at", "restored"), [(13, 12), (16, 15)], ids=["mid-epoch", "at-an-epoch-end"])
def test_an_interrupted_run_resumes_bit_for_bit(
    tmp_path: Path, options: dict[str, Any], crash_at: int, restored: int
) -> None:
    full = train(str(tmp_path / "full"), **options)
    assert len(full) == LAST_STEP
    run = str(tmp_path / "run")
    interrupt(run, crash_at, **options)
    # Restored in epoch 2 (its second item pulled), or right after epoch 2's last item.
    assert looprt.latest_checkpoint(run).endswith(f"model.ckpt-{restored}")  # type: ignore[union-attr]
    torch.rand(5)  # the resumed process's generators are wherever they are
    assert train(run, **options) == full[restored:]


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_a_killed_process_with_a_persistent_pinned_worker_resumes_in_a_new_one(tmp_path: Path) -> None:
    options = DEFAULT[0]
    full = train(str(tmp_path / "full"), **options)
    crashed = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "run"), "12", json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 3, crashed.stderr
    assert json.loads(crashed.stdout.splitlines()[-1]) == full[:13]
    assert train(str(tmp_path / "run"), **options) == full[12:]


def test_resuming_persistent_workers_past_their_first_epoch_warns_about_worker_randomness(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"shuffle": True, "num_workers": 1, "persistent_workers": True, "pin_memory": False}
    interrupt(str(tmp_path / "run"), 7, **options)
    with caplog.at_level(logging.WARNING, logger="looprt"):
        train(str(tmp_path / "run"), **options)
    [record] = [r for r in caplog.records if "persistent" in r.getMessage()]
    assert "random numbers drawn in the workers" in record.getMessage()


if __name__ == "__main__":
    train(sys.argv[1], int(sys.argv[2]), kill=True, **json.loads(sys.argv[3]))
    sys.exit("did not crash")
