"""Chief and workers on torch.distributed: real processes, Gloo on the CPU, started by torchrun.

Run as a script under ``torchrun --nproc-per-node 2`` (``SCENARIO DIR``), each
rank prints JSON lines ``{"rank": r, "event": ..., ...}`` for the test to check.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import looprt  # noqa: E402
from looprt.backends import torch as looprt_torch  # noqa: E402

pytestmark = pytest.mark.torch

SAVE_EVERY = 2
TORCHRUN = [
    *(sys.executable, "-m", "torch.distributed.run"),
    *("--standalone", "--nproc-per-node", "2", "--monitor-interval", "0.1"),
]


# --- what each rank runs ------------------------------------------------------------------


def report(event: str, **fields: Any) -> None:
    rank = torch.distributed.get_rank()
    with open(f"{sys.argv[2]}.rank{rank}.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"rank": rank, "event": event, **fields}) + "\n")


def build(seed: int, dropout: float = 0.0) -> Any:
    """A DDP classifier over this rank's shard; ``seed`` differs per rank on purpose."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    torch.manual_seed(seed)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(
            torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Dropout(dropout), torch.nn.Linear(8, 2)
        )
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(0)
    dataset = TensorDataset(torch.randn(96, 5, generator=data), torch.randint(0, 2, (96,), generator=data))
    loader = DataLoader(dataset, batch_size=8, sampler=DistributedSampler(dataset, shuffle=True, seed=0))

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    return looprt.wrap(
        train_step, state={"model": model, "opt": opt}, inputs=looprt_torch.Epochs(loader), outputs=("loss",)
    )


class StopHereHook(looprt.SessionRunHook):
    """Requests a stop after the run that reaches ``step``, on this rank only."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.global_step = session.graph.global_step

    def before_run(self, run_context: Any) -> Any:
        return looprt.SessionRunArgs(self.global_step)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_values.results + 1 >= self.step:
            run_context.request_stop()


def train(
    directory: str,
    hooks: list[Any],
    die_at: int | None = None,
    save_every: int = SAVE_EVERY,
    entry: Any = looprt_torch.MonitoredTrainingSession,
    **options: Any,
) -> None:
    rank = torch.distributed.get_rank()
    step = build(seed=rank)
    with entry(
        checkpoint_dir=directory,
        scaffold=looprt.Scaffold(program=step.program),
        hooks=hooks,
        save_checkpoint_steps=save_every,
        log_step_count_steps=None,
        **options,
    ) as sess:
        opt_state = step.program.states["opt"].value.state_dict()["state"]
        report(
            "created",
            step=int(sess.run(step.program.global_step)),
            adam_steps=[float(s["step"]) for s in opt_state.values()],
        )
        while not sess.should_stop():
            out = sess.run({"loss": step.loss, "step": step.program.global_step})
            report("loss", step=int(out["step"]) + 1, loss=float(out["loss"]))
            if die_at is not None and int(out["step"]) + 1 == die_at:
                os._exit(1)
    report("stopped", step=int(step.program.global_step.value))


def scenario_stop_restore_and_lose_a_peer(directory: str) -> None:
    rank = torch.distributed.get_rank()
    # Only rank 1 asks to stop (at step 5); rank 0 must stop there too, or it would hang.
    train(directory, [StopHereHook(5)] if rank == 1 else [])
    # A new session restores the chief's checkpoint and sends it to the worker.
    train(directory, [looprt.StopAtStepHook(num_steps=2)])
    # A peer is lost in the middle of training.
    step = build(seed=rank)
    with looprt_torch.MonitoredTrainingSession(
        checkpoint_dir=directory, scaffold=looprt.Scaffold(program=step.program), max_recoveries=0
    ) as sess:
        sess.run(step)
        if rank == 1:
            os._exit(0)
        try:
            sess.run(step)
        except looprt.UnavailableError as error:
            report("lost", error=type(error).__name__, message=str(error)[:200])
            os._exit(0)
    report("not lost")


def scenario_plain_entry(directory: str) -> None:
    # looprt's own MonitoredTrainingSession: the torch program's backend makes rank 0 the
    # chief and adds the StopSyncHook, so rank 1's stop at step 3 stops rank 0 too.
    rank = torch.distributed.get_rank()
    train(directory, [StopHereHook(3)] if rank == 1 else [], entry=looprt.MonitoredTrainingSession)


def losses_to(directory: str, last_step: int, save_every: int = 2) -> list[float]:
    """Train (with dropout: each rank draws its own masks) until ``last_step``; the losses."""
    step = build(seed=torch.distributed.get_rank(), dropout=0.5)
    losses = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=directory,
        scaffold=looprt.Scaffold(program=step.program),
        hooks=[looprt.StopAtStepHook(last_step=last_step)],
        save_checkpoint_steps=save_every,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            losses.append(float(sess.run(step.loss)))
        torch.rand(3)  # the script's own draws after the loop are not training's
    return losses


def scenario_rng_resume(directory: str) -> None:
    reference = losses_to(f"{directory}-reference", 4)
    losses_to(directory, 2)  # a checkpoint at step 2, saved after the run
    # build() seeds every rank again, as a restarted process would; the restore must undo it.
    resumed = losses_to(directory, 4)
    report("rng", reference=reference, resumed=resumed)


def scenario_rng_resume_from_end(directory: str) -> None:
    reference = losses_to(f"{directory}-reference", 5, save_every=100)
    losses_to(directory, 3, save_every=100)  # step 3's checkpoint is the one saved in end()
    step = build(seed=torch.distributed.get_rank(), dropout=0.5)
    with looprt.MonitoredTrainingSession(checkpoint_dir=directory, scaffold=looprt.Scaffold(program=step.program)):
        pass  # a session that runs no step: its creation saves step 3 again, restored states and all
    resumed = losses_to(directory, 5, save_every=100)
    report("rng", reference=reference, resumed=resumed)


def scenario_die_once(directory: str) -> None:
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    rank = torch.distributed.get_rank()
    die_at = 5 if first_attempt and rank == 1 else None
    train(directory, [looprt.StopAtStepHook(last_step=8)], die_at=die_at, save_every=3)


def main() -> None:
    scenario, directory = sys.argv[1], sys.argv[2]
    looprt_torch.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    globals()[f"scenario_{scenario}"](directory)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


# --- the tests ----------------------------------------------------------------------------


def torchrun(scenario: str, directory: Path, *extra: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*TORCHRUN, *extra, __file__, scenario, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, OMP_NUM_THREADS="1", LOGLEVEL="WARNING"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = []
    for rank in (0, 1):
        with open(f"{directory}.rank{rank}.jsonl", encoding="utf-8") as out:
            lines += [json.loads(line) for line in out]
    return lines


def events(lines: list[dict[str, Any]], rank: int, event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["rank"] == rank and line["event"] == event]


def test_ranks_stop_together_workers_get_the_chiefs_state_and_a_lost_peer_is_recoverable(
    tmp_path: Path,
) -> None:
    lines = torchrun("stop_restore_and_lose_a_peer", tmp_path)
    for rank in (0, 1):
        created = events(lines, rank, "created")
        # Fresh: initialized by the chief. Then restored at step 5 (the chief's last save,
        # at the stop), Adam's own step counts included, which DDP alone would not share.
        assert [c["step"] for c in created] == [0, 5]
        assert set(created[1]["adam_steps"]) == {5.0}
        assert [s["step"] for s in events(lines, rank, "stopped")] == [5, 7]
        assert [line["step"] for line in events(lines, rank, "loss")] == [1, 2, 3, 4, 5, 6, 7]
    [lost] = events(lines, 0, "lost")
    assert lost["error"] == "UnavailableError" and "peer" in lost["message"]
    # Only the chief wrote: checkpoints, and one events file.
    assert {"model.ckpt-4", "model.ckpt-5", "model.ckpt-7"} <= {p.name for p in tmp_path.glob("model.ckpt-*")}
    assert looprt.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-7")  # type: ignore[union-attr]
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_looprt_monitored_training_session_under_torchrun_is_a_chief_worker_job(tmp_path: Path) -> None:
    lines = torchrun("plain_entry", tmp_path)
    for rank in (0, 1):
        assert [c["step"] for c in events(lines, rank, "created")] == [0]
        assert [line["step"] for line in events(lines, rank, "loss")] == [1, 2, 3]
        assert [s["step"] for s in events(lines, rank, "stopped")] == [3]
    assert looprt.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-3")  # type: ignore[union-attr]
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1  # only the chief writes


def test_a_resumed_job_restores_every_ranks_random_generators(tmp_path: Path) -> None:
    lines = torchrun("rng_resume", tmp_path)
    for rank in (0, 1):
        [record] = events(lines, rank, "rng")
        assert len(record["reference"]) == 4
        # Steps 3 and 4 again, bit for bit: the worker's dropout masks too (and through the
        # averaged gradients, the chief's losses depend on them).
        assert record["resumed"] == record["reference"][2:]


def test_the_checkpoint_saved_when_the_ranks_stop_holds_every_ranks_generators(tmp_path: Path) -> None:
    lines = torchrun("rng_resume_from_end", tmp_path)
    for rank in (0, 1):
        [record] = events(lines, rank, "rng")
        assert len(record["reference"]) == 5
        assert record["resumed"] == record["reference"][3:]
    saved = sorted(path.name for path in tmp_path.glob("model.ckpt-*"))
    assert "model.ckpt-3" in saved and "model.ckpt-2" not in saved


@pytest.mark.slow  # two generations of processes: 10-20 s
def test_a_rank_that_dies_is_restarted_by_torchrun_and_the_job_resumes_bit_for_bit(tmp_path: Path) -> None:
    lines = torchrun("die_once", tmp_path, "--max-restarts", "1")
    for rank in (0, 1):
        losses = events(lines, rank, "loss")
        # First attempt: steps 1-5, then rank 1 died. Second: resumed from step 3's checkpoint.
        assert [c["step"] for c in events(lines, rank, "created")] == [0, 3]
        assert [line["step"] for line in losses] == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]
        first, second = [line["loss"] for line in losses[:5]], [line["loss"] for line in losses[5:]]
        assert second[:2] == first[3:]  # steps 4 and 5 again, bit for bit
        assert events(lines, rank, "stopped") == [{"rank": rank, "event": "stopped", "step": 8}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_absent_chief(rank: int, port: int, results: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    store = torch.distributed.TCPStore("127.0.0.1", port, is_master=False)
    if rank == 0:  # the chief never initializes; it only outlives the worker's wait
        store.wait(["worker done"])
    else:
        program = looprt.Program(backend="torch")
        program.state("w", torch.zeros(1))
        try:
            looprt.MonitoredTrainingSession(
                is_chief=False, scaffold=looprt.Scaffold(program=program), max_wait_secs=0.3
            )
        except looprt.DeadlineExceededError as error:
            results.put(str(error))
        else:
            results.put("no error")
        store.set("worker done", "1")
    os._exit(0)  # a worker's broadcast is still pending: no orderly teardown


def test_a_worker_gives_up_waiting_for_the_chief_after_max_wait_secs() -> None:
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    port = _free_port()
    processes = [
        context.Process(target=_wait_for_absent_chief, args=(rank, port, results)) for rank in (0, 1)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0]
    message = results.get()
    assert "not ready after waiting 0.3 secs" in message and "chief (rank 0)" in message


if __name__ == "__main__":
    main()
