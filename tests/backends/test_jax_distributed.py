"""Chief and workers on jax.distributed: two real CPU processes, collectives over Gloo.

Run as a script (``SCENARIO DIR PORT PROCESS_ID``), each process calls
``jax.distributed.initialize`` with a coordinator on ``127.0.0.1:PORT`` and
writes JSON lines ``{"process": i, "event": ..., ...}`` for the test to check.
The step is data-parallel (``pmap`` over this process's device, gradients
averaged across processes); each process has its own data shard and its own
initial state, so only the chief's broadcast makes them agree. Each process
checkpoints to its own folder (``DIR/p0``, ``DIR/p1``), so anything the
worker wrote, or could restore on its own, would be in sight. The script
imports ``looprt.backends.jax`` at its top, before
``jax.distributed.initialize``, which must come before anything starts JAX's
backend: importing looprt's backend must not start it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import looprt  # noqa: E402
import looprt.backends.jax as looprt_jax  # noqa: E402  (before jax.distributed.initialize, on purpose)

pytestmark = pytest.mark.jax

SAVE_EVERY = 2


# --- what each process runs ---------------------------------------------------------------


def report(event: str, **fields: Any) -> None:
    index = jax.process_index()
    with open(f"{sys.argv[2]}/p{index}.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"process": index, "event": event, **fields}) + "\n")


def build(seed: int) -> looprt.Step:
    """Data-parallel regression: Adam, a PRNG key in state, gradients averaged across processes.

    ``seed`` differs per process on purpose (the initial weights and key,
    and the data shard): the processes agree only if the worker is given
    the chief's state. ``pmap`` runs the step on this process's device and
    ``pmean`` averages across processes; the state stays on this process.
    """
    rng = np.random.default_rng(seed)
    devices = jax.local_device_count()
    batches = [rng.normal(size=(devices, 8, 3)).astype(np.float32) for _ in range(30)]
    params = {"w": jax.random.normal(jax.random.key(seed), (3, 2)), "b": jnp.zeros(2)}
    opt = optax.adam(0.05)

    def train_step(params: Any, opt_state: Any, key: Any, batch: Any) -> Any:
        key, sub = jax.random.split(key)
        target = jnp.stack([batch.sum(1), batch[:, 0]], 1) + 0.1 * jax.random.normal(sub, (8, 2))

        def loss_fn(p: Any) -> Any:
            return jnp.mean((batch @ p["w"] + p["b"] - target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        grads = jax.lax.pmean(grads, "processes")
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, jax.lax.pmean(loss, "processes")

    pmapped = jax.pmap(train_step, axis_name="processes", in_axes=(None, None, None, 0), out_axes=None)

    def parallel_step(params: Any, opt_state: Any, key: Any, batch: Any) -> Any:
        return pmapped(params, opt_state, key, batch)  # looprt passes keywords; pmap maps positions

    return looprt.wrap(
        parallel_step,
        state={"params": params, "opt_state": opt.init(params), "key": jax.random.key(100 + seed)},
        inputs=batches,
        updates=("params", "opt_state", "key"),
        outputs=("loss",),
        backend="jax",
    )


def digest(step: looprt.Step) -> dict[str, Any]:
    """The state as JSON: the params, Adam's count and the key's bits."""
    states = step.program.states
    return {
        "w": np.asarray(states["params"].value["w"]).tolist(),
        "count": int(np.asarray(states["opt_state"].value[0].count)),
        "key": np.asarray(jax.random.key_data(states["key"].value)).tolist(),
        "global_step": int(np.asarray(states["global_step"].value)),
    }


class StopHereHook(looprt.SessionRunHook):
    """Requests a stop after the run that reaches ``step``, on this process only."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.global_step = session.graph.global_step

    def before_run(self, run_context: Any) -> Any:
        return looprt.SessionRunArgs(self.global_step)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_values.results + 1 >= self.step:
            run_context.request_stop()


def train(directory: str, hooks: list[Any], entry: Any) -> None:
    index = jax.process_index()
    step = build(seed=index)
    report("own", **digest(step))
    with entry(
        checkpoint_dir=f"{directory}/p{index}",
        scaffold=looprt.Scaffold(program=step.program),
        hooks=hooks,
        save_checkpoint_steps=SAVE_EVERY,
        log_step_count_steps=None,
    ) as sess:
        report("created", **digest(step))
        while not sess.should_stop():
            out = sess.run({"loss": step.loss, "step": step.program.global_step})
            report("loss", step=int(out["step"]) + 1, loss=float(out["loss"]))
    report("stopped", **digest(step))


def scenario_train(directory: str) -> None:
    # looprt's own MonitoredTrainingSession: the JAX program's backend makes process 0 the
    # chief and adds the StopSyncHook. Only process 1 asks to stop (at step 5); process 0
    # must stop there too (its own limit, 12, is a guard against a hang).
    index = jax.process_index()
    hooks = [StopHereHook(5)] if index == 1 else [looprt.StopAtStepHook(last_step=12)]
    train(directory, hooks, looprt.MonitoredTrainingSession)


def scenario_resume(directory: str) -> None:
    # A new job restores the chief's checkpoint (step 5); only the chief asks to stop, at 7.
    index = jax.process_index()
    hooks = [looprt.StopAtStepHook(last_step=7)] if index == 0 else []
    train(directory, hooks, looprt_jax.MonitoredTrainingSession)


def scenario_refusals(directory: str) -> None:
    from jax._src import distributed as jax_distributed  # the job's key-value store: no public name

    client = jax_distributed.global_state.client
    # A worker waits for a chief that never sends; the chief only outlives the wait.
    if jax.process_index() == 0:
        client.blocking_key_value_get("test/worker done", 60_000)
    else:
        program = looprt.Program(backend="jax")
        program.state("w", jnp.zeros(2))
        started = time.monotonic()
        try:
            looprt.MonitoredTrainingSession(scaffold=looprt.Scaffold(program=program), max_wait_secs=0.3)
        except looprt.DeadlineExceededError as error:
            report("gave up", error=str(error), waited=time.monotonic() - started)
        else:
            report("no error")
        client.key_value_set("test/worker done", "1")
    # State that spans processes: every process refuses it before a collective could hang.
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("processes",))
    spanning = jax.make_array_from_callback(
        (2,), NamedSharding(mesh, PartitionSpec()), lambda index: np.zeros(2, np.float32)[index]
    )
    program = looprt.Program(backend="jax")
    program.state("w", spanning)
    try:
        looprt.MonitoredTrainingSession(scaffold=looprt.Scaffold(program=program), max_wait_secs=30)
    except ValueError as error:
        report("refused", error=str(error))
    else:
        report("no error")


def main() -> None:
    scenario, directory, port, index = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=index, initialization_timeout=60
    )
    globals()[f"scenario_{scenario}"](directory)
    jax.distributed.shutdown()


# --- the tests ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(scenario: str, directory: Path) -> list[dict[str, Any]]:
    """Run ``scenario`` in two processes of one jax.distributed job; every process's lines."""
    port = str(_free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, scenario, str(directory), port, str(index)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for index in (0, 1)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=90)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for index, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"process {index}:\n{output[-3000:]}"
    lines = []
    for index in (0, 1):
        path = directory / f"p{index}.jsonl"
        if path.exists():
            lines += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return lines


def events(lines: list[dict[str, Any]], index: int, event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["process"] == index and line["event"] == event]


def only(lines: list[dict[str, Any]], index: int, event: str) -> dict[str, Any]:
    [line] = events(lines, index, event)
    return {key: value for key, value in line.items() if key not in ("process", "event")}


def saved_state(checkpoint: str) -> dict[str, Any]:
    step = build(seed=0)
    tree = looprt_jax.load_tree(checkpoint, "params", like=step.program.states["params"].value)
    key = looprt_jax.load_tree(checkpoint, "key", like=step.program.states["key"].value)
    return {"w": np.asarray(tree["w"]).tolist(), "key": np.asarray(jax.random.key_data(key)).tolist()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A job that trained until process 1 asked to stop: its folder and every process's lines."""
    directory = tmp_path_factory.mktemp("trained")
    return directory, run_job("train", directory)


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_job("refusals", tmp_path_factory.mktemp("refusals"))


def test_the_worker_gets_the_chiefs_state_and_the_processes_stop_together(
    trained: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, lines = trained
    chief_own, worker_own = only(lines, 0, "own"), only(lines, 1, "own")
    assert worker_own["w"] != chief_own["w"] and worker_own["key"] != chief_own["key"]
    # The worker was given the chief's initial state, its own discarded.
    assert only(lines, 1, "created") == only(lines, 0, "created") == chief_own
    for index in (0, 1):
        # Process 1's stop at step 5 stopped process 0 at the same step.
        assert [line["step"] for line in events(lines, index, "loss")] == [1, 2, 3, 4, 5]
        assert only(lines, index, "stopped")["global_step"] == 5
    # Different data shards, averaged gradients, the same start: the same state at the end.
    assert only(lines, 1, "stopped") == only(lines, 0, "stopped") != only(lines, 0, "created")


def test_only_the_chief_writes_checkpoints(trained: tuple[Path, list[dict[str, Any]]]) -> None:
    directory, lines = trained
    saved = {path.name for path in (directory / "p0").glob("model.ckpt-*")}
    assert {"model.ckpt-2", "model.ckpt-4", "model.ckpt-5"} <= saved
    assert not (directory / "p1").exists() or list((directory / "p1").iterdir()) == []
    latest = looprt.latest_checkpoint(str(directory / "p0"))
    assert latest is not None and latest.endswith("model.ckpt-5")
    stopped = only(lines, 0, "stopped")
    assert saved_state(latest) == {"w": stopped["w"], "key": stopped["key"]}


def test_a_new_job_resumes_both_processes_from_the_chiefs_checkpoint(
    trained: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    shutil.copytree(trained[0] / "p0", tmp_path / "p0")
    lines = run_job("resume", tmp_path)
    restored = only(trained[1], 0, "stopped")  # the chief's state at step 5, which it saved
    for index in (0, 1):
        # The worker's own folder is empty: its state can only be the chief's checkpoint.
        assert only(lines, index, "created") == restored
        assert [line["step"] for line in events(lines, index, "loss")] == [6, 7]
        assert only(lines, index, "stopped")["global_step"] == 7
        assert only(lines, index, "stopped")["count"] == 7  # Adam's count went on from 5
    assert only(lines, 1, "stopped") == only(lines, 0, "stopped")
    assert not (tmp_path / "p1").exists()
    latest = looprt.latest_checkpoint(str(tmp_path / "p0"))
    assert latest is not None and latest.endswith("model.ckpt-7")


def test_a_worker_gives_up_waiting_for_the_chief_after_max_wait_secs(refusals: list[dict[str, Any]]) -> None:
    gave_up = only(refusals, 1, "gave up")
    assert "not ready after waiting 0.3 secs" in gave_up["error"] and "chief (process 0)" in gave_up["error"]
    assert 0.3 <= gave_up["waited"] < 10


def test_state_that_spans_processes_is_refused_by_every_process(refusals: list[dict[str, Any]]) -> None:
    for index in (0, 1):
        assert "spans processes" in only(refusals, index, "refused")["error"]


if __name__ == "__main__":
    main()
