"""On a GPU, a run that fetches nothing never waits for the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        train_step, state={"model": model, "opt": opt}, inputs=loader, backend=TorchBackend(device="cuda")
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
