"""The JAX backend: pytree state, functional updates, device residency, checkpoints and hooks."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import looprt  # noqa: E402
from looprt.backends.jax import JaxBackend, KeyData, load_tree  # noqa: E402
from looprt.checkpoint import verify_checkpoint  # noqa: E402

pytestmark = pytest.mark.jax


def session(prog: looprt.Program) -> Any:
    return looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)).create_session()


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Layer:
    w: Any
    b: Any


class Pair(NamedTuple):
    first: Any
    second: Any


def regression(lr: float = 0.1) -> tuple[looprt.Program, looprt.Step]:
    """A linear model trained with Adam on batches drawn from a PRNG key in state."""
    prog = looprt.Program(backend="jax")
    params = {"layer": Layer(jnp.zeros((3, 1)), jnp.zeros(1))}
    opt = optax.adam(lr)
    prog.state("params", params)
    prog.state("opt_state", opt.init(params))
    prog.state("key", jax.random.key(0))
    target = jnp.array([[1.0], [-2.0], [0.5]])

    @jax.jit
    def train(params: Any, opt_state: Any, key: Any) -> Any:
        key, sub = jax.random.split(key)
        x = jax.random.normal(sub, (16, 3))

        def loss_fn(p: Any) -> Any:
            return jnp.mean((x @ p["layer"].w + p["layer"].b - x @ target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, key, loss, x[:2]

    step = prog.step(train, updates=("params", "opt_state", "key"), outputs=("loss", "pred"))
    return prog, step


def test_fetched_values_are_independent_numpy_copies_and_state_stays_jax() -> None:
    prog, train = regression()
    sess = session(prog)
    out = sess.run({"m": {"loss": train.loss, "pred": train.pred}, "gs": prog.global_step})
    assert isinstance(out["m"]["loss"], np.float32)  # 0-d: a NumPy scalar, as TF gives
    assert isinstance(out["m"]["pred"], np.ndarray) and out["m"]["pred"].flags.writeable
    assert out["gs"] == 0
    assert isinstance(prog.states["params"].value["layer"].w, jax.Array)  # assigned as it is
    params = sess.run("params")
    assert isinstance(params["layer"], Layer) and isinstance(params["layer"].w, np.ndarray)
    key = sess.run("key")
    assert isinstance(key, KeyData) and key.impl == "threefry2x32"
    sess.run(train)
    assert not np.array_equal(params["layer"].w, np.asarray(prog.states["params"].value["layer"].w))
    assert int(sess.run(prog.global_step)) == 2


def test_jax_state_must_be_declared_as_updated() -> None:
    prog = looprt.Program(backend="jax")
    prog.state("w", jnp.zeros(2))
    prog.state("tree", {"a": jnp.zeros(2)})
    assert not JaxBackend().updatable_in_place(jnp.zeros(2))
    assert not JaxBackend().updatable_in_place({"a": [jnp.zeros(2)]})
    assert JaxBackend().updatable_in_place(np.zeros(2))
    with pytest.raises(looprt.StateUpdateError, match="'w'"):

        @prog.step
        def bad(w: Any) -> None:
            w += 1  # rebinds: the state would never change

    @prog.step(updates=("w",))
    def good(w: Any) -> Any:
        return w + 1

    sess = session(prog)
    sess.run(good)
    assert sess.run("w").tolist() == [1.0, 1.0]


def every_kind_of_state(scale: float) -> dict[str, Any]:
    return {
        "tree": {
            "layers": [Layer(jnp.full((2, 3), scale), jnp.full(3, scale, jnp.bfloat16))],
            "pair": Pair(jnp.arange(4, dtype=jnp.int8) * int(scale), np.full(2, scale)),
            "lr": scale,  # a Python number in the tree
        },
        "key": jax.random.key(int(scale)),
        "old_key": jax.random.PRNGKey(int(scale)),
        "adam": optax.adam(0.1).init({"w": jnp.full(2, scale)}),
    }


def declare(prog: looprt.Program, values: dict[str, Any]) -> None:
    for name, value in values.items():
        prog.state(name, value)


def test_every_kind_of_leaf_round_trips_with_its_dtype_shape_and_sharding(tmp_path: Path) -> None:
    saved = looprt.Program(backend="jax")
    declare(saved, every_kind_of_state(3.0))
    path = looprt.Saver(saved).save(session(saved), str(tmp_path / "model.ckpt"))
    assert verify_checkpoint(path) is None
    with np.load(os.path.join(path, "arrays.npz"), allow_pickle=False) as data:  # NumPy alone reads it
        assert "tree['layers'][0].w" in data.files and "adam[0].mu['w']" in data.files

    live = looprt.Program(backend="jax")
    declare(live, every_kind_of_state(1.0))
    looprt.Saver(live).restore(session(live), path)
    tree = live.states["tree"].value
    assert tree["layers"][0].b.dtype == jnp.bfloat16 and tree["layers"][0].b.tolist() == [3.0] * 3
    assert tree["layers"][0].w.sharding == jnp.zeros(1).sharding
    assert tree["pair"].first.dtype == jnp.int8 and tree["pair"].first.tolist() == [0, 3, 6, 9]
    assert isinstance(tree["pair"].second, np.ndarray) and tree["lr"] == 3.0
    key = live.states["key"].value
    assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0))
    assert jax.random.normal(key, (3,)).tolist() == jax.random.normal(jax.random.key(3), (3,)).tolist()
    assert live.states["old_key"].value.tolist() == jax.random.PRNGKey(3).tolist()
    assert live.states["adam"].value[0].mu["w"].tolist() == [0.0, 0.0]
    # Outside a session: a tree shaped like the live one, with the saved values.
    assert load_tree(path, "tree", every_kind_of_state(0.0)["tree"])["pair"].first.tolist() == [0, 3, 6, 9]


def test_a_tree_that_differs_is_refused_naming_the_leaf_and_nothing_changes(tmp_path: Path) -> None:
    saved = looprt.Program(backend="jax")
    declare(saved, every_kind_of_state(3.0))
    path = looprt.Saver(saved).save(session(saved), str(tmp_path / "model.ckpt"))

    def attempt(change: Any, error: type[Exception], match: str) -> None:
        values = every_kind_of_state(1.0)
        change(values)
        prog = looprt.Program(backend="jax")
        declare(prog, values)
        before = jax.tree_util.tree_map(np.asarray, prog.states["tree"].value)
        with pytest.raises(error, match=match):
            looprt.Saver(prog).restore(session(prog), path)
        after = jax.tree_util.tree_map(np.asarray, prog.states["tree"].value)
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, before, after))

    def wider(v: dict[str, Any]) -> None:
        v["tree"]["layers"][0].w = jnp.zeros((2, 4))

    def renamed(v: dict[str, Any]) -> None:
        v["tree"]["pairs"] = v["tree"].pop("pair")

    def retyped(v: dict[str, Any]) -> None:
        v["tree"]["layers"][0].b = jnp.zeros(3, jnp.float32)

    def rekeyed(v: dict[str, Any]) -> None:
        v["key"] = jax.random.key(0, impl="rbg")

    attempt(wider, ValueError, r"leaf tree\['layers'\]\[0\]\.w: the live tree has shape \(2, 4\).*\(2, 3\)")
    attempt(renamed, KeyError, r"lacks: \['pairs'\]\.first, \['pairs'\]\.second; .*only the saved tree has: \['pair'\]\.first")
    attempt(retyped, ValueError, r"\.b: .*dtype float32; the saved value has shape \(3,\) and dtype bfloat16")
    attempt(rekeyed, ValueError, r"key<rbg>.*key<threefry2x32>")


def test_a_leaf_a_checkpoint_cannot_hold_is_refused_naming_its_path(tmp_path: Path) -> None:
    prog = looprt.Program(backend="jax")
    prog.state("tree", {"ok": jnp.zeros(2), "odd": [object()]})
    with pytest.raises(TypeError, match=r"leaf tree\['odd'\]\[0\] is a object"):
        looprt.Saver(prog).save(session(prog), str(tmp_path / "model.ckpt"))
    assert looprt.latest_checkpoint(str(tmp_path)) is None


def slow_program() -> tuple[looprt.Program, looprt.Step]:
    """A step slow enough that waiting for it shows: tens of ms on a CPU, and on an accelerator."""
    on_cpu = jax.default_backend() == "cpu"
    size, depth = (600, 8) if on_cpu else (4096, 64)  # an H200 does 600x600 products in microseconds
    prog = looprt.Program(backend="jax")
    prog.state("w", jnp.eye(size) * 0.5)

    @jax.jit
    def train(w: Any) -> Any:
        for _ in range(depth):
            w = jnp.tanh(w @ w) * 0.9 + jnp.eye(size) * 0.5
        return w, w.mean()

    step = prog.step(train, updates=("w",), outputs=("loss",))
    return prog, step


def test_a_run_nobody_fetches_from_never_waits_for_or_copies_from_the_device(tmp_path: Path) -> None:
    prog, train = slow_program()
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog), save_summaries_steps=100,
        save_checkpoint_steps=100, hooks=[looprt.StepCounterHook(every_n_steps=100)],
    ) as sess:
        sess.run(train)  # compiled; the first checkpoint is written
        jax.block_until_ready(prog.states["w"].value)
        with jax.transfer_guard_device_to_host("disallow"):
            for _ in range(5):
                sess.run(train)
            # Nothing waited for the device: the last results are still being computed.
            assert not prog.states["w"].value.is_ready()
            if jax.default_backend() != "cpu":  # on a CPU, device memory is host memory: no guard
                with pytest.raises(Exception, match="[Dd]isallowed device-to-host transfer"):
                    sess.run(train.loss)
        loss = sess.run(train.loss)
        assert isinstance(loss, np.float32) and prog.states["w"].value.is_ready()


def test_async_dispatch_is_kept_when_nothing_is_fetched() -> None:
    prog, train = slow_program()
    sess = session(prog)
    sess.run(train.loss)  # compile

    def timed(fetch: Any) -> tuple[float, float]:
        start = time.perf_counter()
        for _ in range(8):
            sess.run(fetch)
        returned = time.perf_counter() - start
        jax.block_until_ready(prog.states["w"].value)
        return returned, time.perf_counter() - start

    unfetched, unfetched_total = timed(train)
    fetched, _ = timed(train.loss)
    # Without fetches the loop returns long before the device finishes; fetching every step waits.
    assert unfetched < 0.5 * unfetched_total
    assert unfetched < 0.5 * fetched


def test_the_standard_hooks_run_on_a_jax_program(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prog, train = regression()
    prog.summary("loss", train.loss)
    stop = looprt.StopAtStepHook(last_step=12)
    hooks = [
        stop,
        looprt.NanTensorHook(train.loss),
        looprt.LoggingTensorHook({"loss": train.loss, "step": prog.global_step}, every_n_iter=5),
        looprt.ProgressBarHook(total=12, every_n_steps=4, disable=True),
        looprt.ProfilerHook(save_steps=10, output_dir=str(tmp_path / "profile")),
    ]
    caplog.set_level(logging.INFO)
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog), hooks=hooks,
        save_checkpoint_steps=5, save_summaries_steps=3, log_step_count_steps=4,
    ) as sess:
        while not sess.should_stop():
            sess.run(train)
    assert int(np.asarray(prog.global_step.value)) == 12
    assert looprt.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-12")  # type: ignore[union-attr]
    assert any("loss = " in r.getMessage() for r in caplog.records)
    assert list(tmp_path.glob("events.out.tfevents.*"))
    traces = list((tmp_path / "profile").glob("jax-trace-*/**/*.xplane.pb"))
    assert traces, list((tmp_path / "profile").rglob("*"))


def test_a_nan_loss_stops_training() -> None:
    prog = looprt.Program(backend="jax")
    prog.state("w", jnp.ones(()))

    @prog.step(updates=("w",), outputs=("loss",))
    def train(w: Any) -> Any:
        return w - 1, jnp.log(w - 1)

    with pytest.raises(looprt.NanLossDuringTrainingError), looprt.MonitoredTrainingSession(
        scaffold=looprt.Scaffold(program=prog), hooks=[looprt.NanTensorHook(train.loss)],
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            sess.run(train)


def test_lost_peer_errors_are_recoverable() -> None:
    backend = JaxBackend()
    assert isinstance(backend.translate_error(RuntimeError("UNAVAILABLE: connection reset")), looprt.UnavailableError)
    assert isinstance(backend.translate_error(RuntimeError("ABORTED: barrier")), looprt.AbortedError)
    assert backend.translate_error(RuntimeError("INVALID_ARGUMENT: shapes")) is None
    assert backend.translate_error(ValueError("UNAVAILABLE: not a runtime error")) is None
