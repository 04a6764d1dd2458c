"""On a GPU, a run that fetches nothing never waits for the device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import looprt  # noqa: E402
from looprt.backends.torch import TorchBackend  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_steps_that_fetch_nothing_make_no_device_to_host_sync(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = torch.utils.data.TensorDataset(torch.randn(512, 32), torch.randint(0, 4, (512,)))
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, pin_memory=True)

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    step = looprt.wrap(
        train_step,
        state={"model": model, "opt": opt},
        inputs=loader,
        outputs=("loss",),
        backend=TorchBackend(device="cuda"),
    )
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=step.program)
    ) as sess:
        sess.run(step)  # the first step sets up CUDA libraries, which may synchronize
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                sess.run(step)  # the default hooks fetch the global step: a host value
            with pytest.raises(RuntimeError, match="synchroniz"):
                sess.run(step.loss)  # the check can fail: a fetched loss must sync
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert sess.run(step.program.global_step) == 7


def amp_program() -> Any:
    """Mixed precision (float16 autocast, a gradient scaler that grows every 3 steps), dropout
    drawn from CUDA's generator, Adam, and batches shuffled by a CPU loader into pinned memory."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(64, 4)
    ).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8, growth_interval=3)
    data = torch.Generator().manual_seed(1)
    dataset = torch.utils.data.TensorDataset(
        torch.randn(256, 32, generator=data), torch.randint(0, 4, (256,), generator=data)
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2), pin_memory=True
    )

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        assert x.is_cuda and y.is_cuda
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return {"loss": loss, "scale": scaler.get_scale()}

    return looprt.wrap(
        train_step,
        state={"model": model, "opt": opt, "scaler": scaler},
        inputs=loader,
        outputs=("loss", "scale"),
        backend=TorchBackend(device="cuda"),
    )


def train_until(
    make_step: Callable[[], Any],
    directory: Path,
    last_step: int,
    outputs: tuple[str, ...],
    save_every: int,
    interrupt_at: int | None = None,
) -> list[dict[str, Any]]:
    """Train to ``last_step``, checkpointing every ``save_every`` steps; each run's fetched ``outputs``.

    ``interrupt_at``: raise ``KeyboardInterrupt`` after the run that reaches that step.
    """
    step = make_step()
    seen: list[dict[str, Any]] = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(directory),
        scaffold=looprt.Scaffold(program=step.program),
        hooks=[looprt.StopAtStepHook(last_step=last_step)],
        save_checkpoint_steps=save_every,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            out = sess.run({"step": step.program.global_step, **{name: step[name] for name in outputs}})
            seen.append({name: out[name] for name in outputs})
            if out["step"] + 1 == interrupt_at:
                raise KeyboardInterrupt
    return seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_training_on_cuda_resumes_bit_for_bit(tmp_path: Path) -> None:
    def train(directory: Path, interrupt_at: int | None = None) -> list[dict[str, Any]]:
        return train_until(amp_program, directory, 14, ("loss", "scale"), 4, interrupt_at)

    full = train(tmp_path / "full")
    assert type(full[0]["loss"]) is np.float32  # a host value (autocast computes the loss in float32)
    assert len({seen["loss"] for seen in full}) > 10
    assert full[-1]["scale"] > full[0]["scale"]  # the scaler grew: its state matters to the resumed run
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", interrupt_at=10)  # mid-epoch: 16 batches an epoch
    assert looprt.latest_checkpoint(str(tmp_path / "run")).endswith("model.ckpt-8")  # type: ignore[union-attr]
    torch.manual_seed(123)  # the process-wide CPU and CUDA generators move on
    torch.rand(5, device="cuda")
    assert train(tmp_path / "run") == full[8:]


def compiled_program() -> Any:
    """A step whose forward pass and loss are ``torch.compile``d (inductor: Triton kernels)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = [
        (torch.randn(16, 32, generator=torch.Generator().manual_seed(i)).pin_memory(), torch.arange(16) % 4)
        for i in range(12)
    ]

    @torch.compile
    def forward(x: Any, y: Any) -> Any:
        return torch.nn.functional.cross_entropy(model(x), y)

    def train_step(batch: Any) -> dict[str, Any]:
        loss = forward(*batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    return looprt.wrap(
        train_step,
        state={"model": model, "opt": opt},
        inputs=batches,
        outputs=("loss",),
        backend=TorchBackend(device="cuda"),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_compiled_step_on_cuda_fetches_nothing_unasked_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    step = compiled_program()
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path / "sync"), scaffold=looprt.Scaffold(program=step.program)
    ) as sess:
        sess.run(step)  # compiles
        sess.run(step)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(4):
                sess.run(step)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    def train(directory: Path, interrupt_at: int | None = None) -> list[dict[str, Any]]:
        return train_until(compiled_program, directory, 10, ("loss",), 3, interrupt_at)

    full = train(tmp_path / "full")
    assert len({seen["loss"] for seen in full}) == 10
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", interrupt_at=7)
    assert looprt.latest_checkpoint(str(tmp_path / "run")).endswith("model.ckpt-6")  # type: ignore[union-attr]
    assert train(tmp_path / "run") == full[6:]
