"""Epochs as events: ``after_epoch`` runs after the run that ends an epoch, before any ``after_run``.

So a checkpoint saved at an epoch boundary holds the epoch-end work (an LR
scheduler's step, a test pass), and a run resumed from it continues bit for
bit. Also: the end of an input is logged, with the global step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import looprt  # noqa: E402
from looprt.backends.torch import Epochs  # noqa: E402
from looprt.hooks.epoch_end import EpochEnd  # noqa: E402

pytestmark = pytest.mark.torch

ITEMS, BATCH = 40, 8  # five batches an epoch


def dataset() -> Any:
    data = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(
        torch.randn(ITEMS, 4, generator=data), torch.randint(0, 2, (ITEMS,), generator=data)
    )


class Recorder(looprt.SessionRunHook):
    """Appends ``(name, event, global step)`` for each call it gets."""

    def __init__(self, name: str, events: list[tuple[str, str, Any]], epochs: bool) -> None:
        self.name, self.events = name, events
        if epochs:
            self.after_epoch = self._after_epoch

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.events.append((self.name, "after_run", run_context.global_step))

    def _after_epoch(self, run_context: Any, end: EpochEnd) -> None:
        self.events.append(
            (self.name, f"after_epoch {end.input} {end.epoch} {end.global_step}", run_context.global_step)
        )


class Saves(looprt.CheckpointSaverListener):
    def __init__(self, events: list[tuple[str, str, Any]]) -> None:
        self.events = events

    def after_save(self, session: Any, global_step_value: int) -> None:
        self.events.append(("saver", "save", global_step_value))


def test_after_epoch_comes_after_the_run_that_ends_the_epoch_and_before_every_after_run(
    tmp_path: Path,
) -> None:
    loader = torch.utils.data.DataLoader(dataset(), batch_size=BATCH)
    prog = looprt.Program(backend="torch")
    prog.input("batch", iterable=Epochs(loader, count=2))

    @prog.step()
    def train(batch: Any) -> dict[str, Any]:
        return {}

    events: list[tuple[str, str, Any]] = []
    hooks = [
        looprt.CheckpointSaverHook(str(tmp_path), save_steps=5, listeners=[Saves(events)]),
        Recorder("plain", events, epochs=False),
        Recorder("epochs", events, epochs=True),
    ]
    with looprt.MonitoredSession(
        session_creator=looprt.ChiefSessionCreator(scaffold=looprt.Scaffold(program=prog)), hooks=hooks
    ) as sess:
        while not sess.should_stop():
            sess.run(train)
    first = events.index(("epochs", "after_epoch batch 0 5", 4))  # the run that made global step 5
    assert events[first - 2 : first + 4] == [
        ("plain", "after_run", 3),
        ("epochs", "after_run", 3),
        ("epochs", "after_epoch batch 0 5", 4),
        ("saver", "save", 5),
        ("plain", "after_run", 4),
        ("epochs", "after_run", 4),
    ]
    assert [e[1] for e in events if e[1].startswith("after_epoch")] == [
        "after_epoch batch 0 5",
        "after_epoch batch 1 10",
    ]
    assert sum(e[1] == "after_run" for e in events) == 20  # ten runs; the eleventh ran out


def test_the_torch_session_offers_every_optional_protocol_hooked_session_relies_on() -> None:
    prog = looprt.Program(backend="torch")
    raw = prog.backend.create_session(prog)
    for protocol in (
        looprt.backends.CountingSession,
        looprt.backends.EndableSession,
        looprt.backends.EpochSession,
    ):
        assert isinstance(raw, protocol), protocol.__name__
    numpy = looprt.Program()
    assert not isinstance(numpy.backend.create_session(numpy), looprt.backends.EpochSession)


def build(directory: str, last_step: int, stop_at: int | None = None) -> tuple[list[float], list[float]]:
    """Train with an LR scheduler stepped and a test pass run at each epoch's end."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loader = torch.utils.data.DataLoader(dataset(), batch_size=BATCH, shuffle=True)
    test_x, test_y = dataset().tensors

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    step = looprt.wrap(
        train_step,
        state={"model": model, "opt": opt, "sched": sched},
        inputs=Epochs(loader),
        outputs=("loss",),
    )
    tests: list[float] = []

    class EpochWork(looprt.SessionRunHook):
        def after_epoch(self, run_context: Any, end: EpochEnd) -> None:
            model.eval()
            with torch.no_grad():
                tests.append(float(torch.nn.functional.cross_entropy(model(test_x), test_y)))
            model.train()
            sched.step()

    losses: list[float] = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=directory,
        scaffold=looprt.Scaffold(program=step.program),
        hooks=[looprt.StopAtStepHook(last_step=last_step), EpochWork()],
        save_checkpoint_steps=5,  # at each epoch's end
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            out = sess.run({"loss": step.loss, "step": step.program.global_step})
            losses.append(float(out["loss"]))
            if out["step"] == stop_at:
                raise KeyboardInterrupt  # as a kill: no save at the end
    return losses, tests


def test_a_checkpoint_at_an_epoch_end_holds_the_epoch_end_work_and_resumes_bit_for_bit(
    tmp_path: Path,
) -> None:
    full, full_tests = build(str(tmp_path / "full"), 18)
    assert len(full_tests) == 3 and len(set(full_tests)) == 3
    with pytest.raises(KeyboardInterrupt):
        build(str(tmp_path / "run"), 18, stop_at=12)  # killed in epoch 2; saved at step 10
    assert looprt.latest_checkpoint(str(tmp_path / "run")).endswith("model.ckpt-10")  # type: ignore[union-attr]
    state = torch.load(str(tmp_path / "run" / "model.ckpt-10" / "state.pt"), weights_only=True)["values"]
    assert state["sched"]["last_epoch"] == 2  # both epochs' scheduler steps are in it
    losses, tests = build(str(tmp_path / "run"), 18)
    assert losses == full[10:]
    assert tests == full_tests[2:]  # epoch 2's test pass, not epoch 1's again


def _plain_loader_run(directory: str) -> int:
    loader = torch.utils.data.DataLoader(dataset(), batch_size=BATCH)
    model = torch.nn.Linear(4, 2)
    step = looprt.wrap(
        lambda batch: {"n": len(batch[0])}, state={"model": model}, inputs=loader, outputs=("n",)
    )
    runs = 0
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=directory, scaffold=looprt.Scaffold(program=step.program), log_step_count_steps=None
    ) as sess:
        while not sess.should_stop():
            sess.run(step.n)
            runs += 1
    return runs


def test_the_end_of_a_plain_data_loader_is_logged_and_a_rerun_that_trains_nothing_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="looprt.session.monitored"):
        assert _plain_loader_run(str(tmp_path)) == 5
    [record] = [r for r in caplog.records if r.name == "looprt.session.monitored"]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("The input ran out at global step 5 (input 'batch'")
    assert record.getMessage().endswith("; the session ends after 5 steps.")

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="looprt.session.monitored"):
        assert _plain_loader_run(str(tmp_path)) == 0  # restored at the loader's end: nothing left
    [record] = [r for r in caplog.records if r.name == "looprt.session.monitored"]
    assert record.levelno == logging.WARNING
    assert "ran out at global step 5 before this session ran any step" in record.getMessage()
    assert "looprt.backends.torch.Epochs" in record.getMessage()


def test_the_mlp_example_tests_and_steps_its_schedule_at_each_epoch_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import runpy

    from looprt.summary import SummaryWriterCache

    script = Path(__file__).resolve().parents[2] / "examples" / "torch_mlp.py"
    example = runpy.run_path(str(script), run_name="example")
    try:
        with caplog.at_level(logging.INFO, logger="torch_mlp"):
            example["main"](["--steps", "60", "--dir", str(tmp_path)])  # 56 batches an epoch
    finally:
        SummaryWriterCache.clear()
    [line] = [r.getMessage() for r in caplog.records if r.name == "torch_mlp"]
    assert line.startswith("epoch 0 ended at step 56: test accuracy ") and line.endswith("lr 0.0500")
    state = torch.load(str(tmp_path / "model.ckpt-60" / "state.pt"), weights_only=True)["values"]
    assert state["schedule"]["last_epoch"] == 1
