"""The torch backend's values, state, checkpoints and errors, with real modules and files."""

from __future__ import annotations

import doctest
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import looprt  # noqa: E402
from looprt.backends.torch import Epochs, TorchBackend  # noqa: E402
from looprt.backends.torch import data as torch_data  # noqa: E402
from looprt.checkpoint import verify_checkpoint  # noqa: E402

pytestmark = pytest.mark.torch


def session(prog: looprt.Program) -> Any:
    return looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)).create_session()


def regression() -> tuple[looprt.Program, Any, Any]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    prog = looprt.Program(backend="torch")
    prog.state("model", model)
    prog.state("opt", opt)
    prog.input("x")

    @prog.step(outputs=("loss", "pred"))
    def train(x: Any, model: Any, opt: Any) -> dict[str, Any]:
        pred = model(x)
        loss = pred.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "pred": pred}

    return prog, train, model


def test_fetched_values_come_back_as_numpy_and_independent() -> None:
    prog, train, model = regression()
    sess = session(prog)
    x = np.ones((4, 3), dtype=np.float32)
    out = sess.run({"loss": train.loss, "pred": train.pred, "gs": prog.global_step}, feed_dict={"x": x})
    assert isinstance(out["loss"], np.float32)  # 0-d: a NumPy scalar, as TF gives
    assert isinstance(out["pred"], np.ndarray) and out["pred"].shape == (4, 1)
    assert out["gs"] == 0 and isinstance(out["gs"], np.integer)
    weights = sess.run("model")
    assert set(weights) == {"weight", "bias"} and weights["weight"].device.type == "cpu"
    sess.run(train, feed_dict={"x": x})
    assert not torch.equal(weights["weight"], model.weight.detach())  # a copy, not the live tensor


def test_outputs_of_other_kinds_and_dtypes() -> None:
    prog = looprt.Program(backend="torch")
    live = torch.zeros(3)
    prog.state("w", live)

    @prog.step(outputs=("half", "nested", "alias", "plain"))
    def show(w: Any) -> dict[str, Any]:
        return {
            "half": torch.ones(2, dtype=torch.bfloat16),
            "nested": {"a": (torch.tensor(1), [torch.tensor([2.0])])},
            "alias": w,
            "plain": "text",
        }

    out = session(prog).run(show.outputs)
    assert out["half"].dtype == np.float32  # NumPy has no bfloat16
    assert out["nested"]["a"][0] == 1 and isinstance(out["nested"]["a"][1][0], np.ndarray)
    assert out["plain"] == "text"
    live += 5
    assert out["alias"].tolist() == [0.0, 0.0, 0.0]  # copied when fetched
    fetched_state = session(prog).run("w")
    assert isinstance(fetched_state, np.ndarray)  # a tensor state fetches as a NumPy array


class Recording(torch.Tensor):
    """A tensor that records which torch functions touch it."""

    calls: list[str] = []

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        cls.calls.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_outputs_nobody_fetches_are_never_brought_to_the_host(tmp_path: Path) -> None:
    prog = looprt.Program(backend="torch")
    prog.state("w", torch.zeros(()))

    @prog.step(outputs=("loss",))
    def train(w: Any) -> dict[str, Any]:
        return {"loss": torch.ones(()).as_subclass(Recording)}

    Recording.calls = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog), save_summaries_steps=1
    ) as sess:
        for _ in range(5):
            sess.run(train)
        assert not {"numpy", "cpu", "item", "detach"} & set(Recording.calls)
        sess.run(train.loss)
    assert "numpy" in Recording.calls  # the check above can fail


def test_feeds_become_tensors_and_go_to_the_device() -> None:
    seen: dict[str, Any] = {}
    prog = looprt.Program(backend=TorchBackend(device="meta"))
    prog.input("x")

    @prog.step
    def look(x: Any) -> None:
        seen["x"] = x

    sess = session(prog)
    sess.run(look, feed_dict={"x": np.arange(3.0)})
    assert isinstance(seen["x"], torch.Tensor) and seen["x"].device.type == "meta"
    sess.run(look, feed_dict={"x": (torch.ones(2), {"y": np.zeros(1)})})
    assert seen["x"][0].device.type == "meta" and seen["x"][1]["y"].device.type == "meta"

    cpu = looprt.Program(backend="torch")
    cpu.input("x")
    shared = np.arange(3.0)
    readonly = np.arange(3.0)
    readonly.flags.writeable = False

    @cpu.step
    def keep(x: Any) -> None:
        seen["cpu"] = x

    cpu_sess = session(cpu)
    cpu_sess.run(keep, feed_dict={"x": shared})
    shared[0] = 7.0
    assert seen["cpu"][0] == 7.0  # device=None: NumPy memory is shared, not copied
    cpu_sess.run(keep, feed_dict={"x": readonly})
    assert seen["cpu"].tolist() == [0.0, 1.0, 2.0]
    cpu_sess.run(keep, feed_dict={"x": np.array(["a"])})
    assert isinstance(seen["cpu"], np.ndarray)  # not numbers: left alone


def test_state_kinds_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    gen = torch.Generator().manual_seed(3)
    nprng = np.random.default_rng(4)
    tensor = torch.zeros(2)
    prog = looprt.Program(backend="torch")
    for name, value in dict(
        model=model, opt=opt, sched=sched, scaler=scaler, gen=gen, nprng=nprng, tensor=tensor, note={"a": 1}
    ).items():
        prog.state(name, value)

    @prog.step
    def train(model: Any, opt: Any, sched: Any, gen: Any, nprng: Any, tensor: Any) -> None:
        model(torch.randn(4, 2)).sum().backward()
        opt.step()
        sched.step()
        torch.rand(1, generator=gen)
        nprng.random()
        tensor += 1

    sess = session(prog)
    saver = looprt.Saver(prog)
    sess.run(train)
    path = saver.save(sess, str(tmp_path / "model.ckpt"))
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    next_draw = torch.rand(1, generator=torch.Generator().set_state(gen.get_state()))
    nprng_state = dict(nprng.bit_generator.state)
    sess.run(train)
    saver.restore(sess, path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in model_state.items())
    assert torch.equal(torch.rand(1, generator=gen), next_draw)
    assert nprng.bit_generator.state == nprng_state
    assert tensor.tolist() == [1.0, 1.0] and sched.last_epoch == 1 and int(sess.run(prog.global_step)) == 1
    assert scaler.get_scale() == 8.0
    loaded = torch.load(os.path.join(path, "state.pt"), weights_only=True)  # no pickled objects
    assert {"model", "opt", "sched", "scaler", "global_step", "looprt/rng"} <= set(loaded["values"])


def test_a_mismatched_state_dict_names_the_key_and_changes_nothing(tmp_path: Path) -> None:
    prog, train, model = regression()
    sess = session(prog)
    sess.run(train, feed_dict={"x": np.ones((2, 3), np.float32)})
    path = looprt.Saver(prog).save(sess, str(tmp_path / "model.ckpt"))
    files = {name: (tmp_path / path / name).read_bytes() for name in os.listdir(path)}

    other = looprt.Program(backend="torch")
    bigger = torch.nn.Linear(4, 1)
    other.state("model", bigger)
    other.state("opt", torch.optim.SGD(bigger.parameters(), lr=0.1, momentum=0.9))
    before = {k: v.clone() for k, v in bigger.state_dict().items()}
    with pytest.raises(ValueError, match=r"'weight' has shape \[1, 4\] in the model, \[1, 3\]"):
        looprt.Saver(other).restore(session(other), path)
    assert all(torch.equal(bigger.state_dict()[k], v) for k, v in before.items())

    renamed = looprt.Program(backend="torch")
    seq = torch.nn.Sequential(torch.nn.Linear(3, 1))
    renamed.state("model", seq)
    renamed.state("opt", torch.optim.SGD(seq.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(KeyError, match=r"missing keys \['0.weight', '0.bias'\], unexpected keys \['weight', 'bias'\]"):
        looprt.Saver(renamed).restore(session(renamed), path)

    no_opt = looprt.Program(backend="torch")
    no_opt.state("model", torch.nn.Linear(3, 1))
    with pytest.raises(KeyError, match=r"unexpected \['opt'\]"):
        looprt.Saver(no_opt).restore(session(no_opt), path)
    # the checkpoint is intact
    assert verify_checkpoint(path) is None
    assert files == {name: (tmp_path / path / name).read_bytes() for name in os.listdir(path)}


def test_an_optimizer_that_does_not_match_is_refused_before_anything_changes(tmp_path: Path) -> None:
    prog, train, model = regression()
    sess = session(prog)
    sess.run(train, feed_dict={"x": np.ones((2, 3), np.float32)})
    path = looprt.Saver(prog).save(sess, str(tmp_path / "model.ckpt"))

    other = looprt.Program(backend="torch")
    twin = torch.nn.Linear(3, 1)
    other.state("model", twin)
    other.state("opt", torch.optim.SGD([{"params": [twin.weight]}, {"params": [twin.bias]}], lr=0.1))
    before = twin.weight.detach().clone()
    with pytest.raises(ValueError, match="the optimizer has 2 parameter groups, the value to restore 1"):
        looprt.Saver(other).restore(session(other), path)
    assert torch.equal(twin.weight, before)  # the module was checked, not loaded


def test_state_a_checkpoint_cannot_hold_is_refused_and_the_last_checkpoint_kept(tmp_path: Path) -> None:
    prog = looprt.Program(backend="torch")
    prog.state("weights", torch.zeros(2))
    prog.state("odd", {"obj": object()})
    sess = session(prog)
    saver = looprt.Saver(prog)
    with pytest.raises(TypeError, match=r"at \['odd'\]\['obj'\] \(a object\)"):
        saver.save(sess, str(tmp_path / "model.ckpt"))
    assert looprt.latest_checkpoint(str(tmp_path)) is None


def test_bad_fetches_and_feeds_name_the_key() -> None:
    prog, train, _ = regression()
    sess = session(prog)
    undeclared = looprt.wrap(lambda batch: {"loss": torch.tensor(1.0)}, inputs=[1, 2], backend="torch")
    with pytest.raises(looprt.FetchError, match="'accuracy'.*it returned 'loss'"):
        session(undeclared.program).run(undeclared["accuracy"])
    with pytest.raises(looprt.FetchError, match="has no output 'accuracy'"):
        train["accuracy"]
    with pytest.raises(looprt.FeedError, match="'y' names no input"):
        sess.run(train, feed_dict={"x": np.ones((1, 3), np.float32), "y": 1})


def scalar_steps(directory: Path, tag: str) -> list[int]:
    """Steps at which ``tag`` was written, read from the event files record by record.

    (TensorBoard's EventAccumulator would import TensorFlow, when installed, to do this.)
    """
    import struct

    from tensorboard.compat.proto import event_pb2

    steps = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4  # length, its CRC, the record, its CRC
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def test_wrap_runs_an_unchanged_step_until_the_loader_is_exhausted(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,))), batch_size=8)

    def train_step(batch: Any) -> dict[str, Any]:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    step = looprt.wrap(train_step, state={"model": model, "opt": opt}, inputs=loader, outputs=("loss",))
    assert step.program.backend.name == "torch"
    step.program.summary("loss", step.loss)
    runs = 0
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=step.program), save_summaries_steps=1
    ) as sess:
        while not sess.should_stop():
            sess.run(step)
            runs += 1
    assert runs == 5  # 40 items, batches of 8; the sixth pull ended the block cleanly
    latest = looprt.latest_checkpoint(str(tmp_path))
    assert latest is not None and latest.endswith("model.ckpt-5")  # saved by the checkpoint hook's end
    assert scalar_steps(tmp_path, "loss") == [1, 2, 3, 4, 5]


def test_epochs_runs_a_loader_several_times_and_resumes_mid_epoch() -> None:
    assert doctest.testmod(torch_data).failed == 0
    loader = torch.utils.data.DataLoader(list(range(6)), batch_size=2, shuffle=True)
    batches = Epochs(loader, count=3)
    iterator = iter(batches)
    for _ in range(4):
        next(iterator)
    state = batches.state_dict()
    at_checkpoint = torch.get_rng_state()
    assert (state["epoch"], state["position"]) == (1, 1)
    rest = [b.tolist() for b in iterator]
    assert len(rest) == 5

    torch.rand(5)  # whatever the global generator does now, the epoch in progress resumes as it was
    again = Epochs(loader, count=3)
    again.load_state_dict(state)
    assert [b.tolist() for b in again][:2] == rest[:2]
    # and with the global generator as it was at the checkpoint, the later epochs match too
    again.load_state_dict(state)
    torch.set_rng_state(at_checkpoint)
    assert [b.tolist() for b in again] == rest
    with pytest.raises(ValueError, match="count must be"):
        Epochs(loader, count=-1)


def test_epochs_tells_a_distributed_sampler_the_epoch() -> None:
    from torch.utils.data.distributed import DistributedSampler

    items = list(range(8))
    sampler = DistributedSampler(items, num_replicas=1, rank=0, shuffle=True, seed=0)
    orders = [b.tolist() for b in Epochs(torch.utils.data.DataLoader(items, batch_size=8, sampler=sampler), 2)]
    assert sorted(orders[0]) == sorted(orders[1]) == items and orders[0] != orders[1]
    assert sampler.epoch == 1


def test_lost_peer_errors_are_recoverable() -> None:
    backend = TorchBackend()
    closed = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1234"
    )
    timed_out = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1000ms for recv"
    )
    assert isinstance(backend.translate_error(closed), looprt.UnavailableError)
    assert isinstance(backend.translate_error(timed_out), looprt.AbortedError)
    assert isinstance(backend.translate_error(torch.distributed.DistNetworkError("gone")), looprt.UnavailableError)
    assert backend.translate_error(RuntimeError("shape mismatch")) is None
    assert backend.translate_error(RuntimeError("DataLoader timed out after 5 seconds")) is None
    assert backend.translate_error(ValueError("gloo")) is None


def test_the_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import runpy

    bench = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "bench_torch.py"), run_name="bench")
    threads = torch.get_num_threads()
    try:
        report = bench["main"](["--quick", "--json", str(tmp_path / "figures.json")])
    finally:
        torch.set_num_threads(threads)
    assert [row["variant"] for row in report["rows"]] == [
        "bare", "bare, again (A/A control)", "floor: one Python function", "raw session",
        "MonitoredTrainingSession",
    ]
    assert json.loads((tmp_path / "figures.json").read_text())["target"]["met"] in (True, False)
    assert "target: MonitoredTrainingSession adds < 1%" in capsys.readouterr().out
