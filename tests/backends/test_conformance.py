"""What every eager backend promises, checked the same way on each: NumPy, PyTorch and JAX.

Each backend gets the same program in its own idiom: state ``w`` (three
float32 numbers) to which each step adds its input ``x``, returning
``total`` (the sum of the new ``w``). NumPy and PyTorch change ``w`` in
place; JAX returns the new ``w`` (``updates``). A backend whose framework is
not installed is skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import looprt


def numpy_program(w: list[float], iterable: Any = None) -> tuple[looprt.Program, looprt.Step]:
    prog = looprt.Program(backend="numpy")
    prog.state("w", np.array(w, np.float32))
    prog.input("x", iterable=iterable)

    @prog.step(outputs=("total",))
    def train(x: Any, w: Any) -> dict[str, Any]:
        w += x
        return {"total": w.sum()}

    return prog, train


def torch_program(w: list[float], iterable: Any = None) -> tuple[looprt.Program, looprt.Step]:
    import torch

    prog = looprt.Program(backend="torch")
    prog.state("w", torch.tensor(w, dtype=torch.float32))
    prog.input("x", iterable=iterable)

    @prog.step(outputs=("total",))
    def train(x: Any, w: Any) -> dict[str, Any]:
        w.add_(torch.as_tensor(x, dtype=torch.float32))
        return {"total": w.sum()}

    return prog, train


def jax_program(w: list[float], iterable: Any = None) -> tuple[looprt.Program, looprt.Step]:
    import jax
    import jax.numpy as jnp

    prog = looprt.Program(backend="jax")
    prog.state("w", jnp.array(w, jnp.float32))
    prog.input("x", iterable=iterable)

    @jax.jit
    def add(x: Any, w: Any) -> Any:
        new = w + x
        return new, new.sum()

    prog.step(add, updates=("w",), outputs=("total",), name="train")
    return prog, prog.steps["train"]


BACKENDS: dict[str, tuple[str, Callable[..., tuple[looprt.Program, looprt.Step]]]] = {
    "numpy": ("numpy", numpy_program),
    "torch": ("torch", torch_program),
    "jax": ("jax", jax_program),
}


@pytest.fixture(params=sorted(BACKENDS))
def build(request: pytest.FixtureRequest) -> Callable[..., tuple[looprt.Program, looprt.Step]]:
    module, factory = BACKENDS[request.param]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    if module != "numpy":
        request.node.add_marker(getattr(pytest.mark, module))
    return factory


def session(prog: looprt.Program) -> Any:
    return looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)).create_session()


ONES = np.ones(3, np.float32)


def test_fetched_values_are_host_numpy_and_independent_of_later_steps(build: Any) -> None:
    prog, train = build([0.0, 1.0, 2.0])
    sess = session(prog)
    total = sess.run(train.total, feed_dict={"x": ONES})
    assert isinstance(total, np.generic) and total == 6.0
    w = sess.run("w")
    assert isinstance(w, np.ndarray) and w.dtype == np.float32 and w.tolist() == [1.0, 2.0, 3.0]
    sess.run(train, feed_dict={"x": ONES})
    assert w.tolist() == [1.0, 2.0, 3.0]
    assert sess.global_step_value() == 2  # counted on the host, read without a run
    assert int(sess.run(prog.global_step)) == 2


def test_state_round_trips_through_a_checkpoint(build: Any, tmp_path: Path) -> None:
    prog, train = build([0.0, 1.0, 2.0])
    sess = session(prog)
    for _ in range(3):
        sess.run(train, feed_dict={"x": ONES})
    path = looprt.Saver(prog).save(sess, str(tmp_path / "model.ckpt"), global_step=3)
    other, _ = build([9.0, 9.0, 9.0])
    other_sess = session(other)
    looprt.Saver(other).restore(other_sess, path)
    w = other_sess.run("w")
    assert w.dtype == np.float32 and w.tolist() == [3.0, 4.0, 5.0]
    assert int(other_sess.run(other.global_step)) == 3


def test_a_restore_that_does_not_fit_is_refused_and_changes_nothing(build: Any, tmp_path: Path) -> None:
    prog, _ = build([0.0, 1.0, 2.0])
    path = looprt.Saver(prog).save(session(prog), str(tmp_path / "model.ckpt"))
    wider, _ = build([5.0, 5.0, 5.0, 5.0])
    with pytest.raises((ValueError, KeyError), match="w"):
        looprt.Saver(wider).restore(session(wider), path)
    assert session(wider).run("w").tolist() == [5.0] * 4

    extra, _ = build([0.0, 1.0, 2.0])
    extra.state("more", np.zeros(2, np.float32))
    with pytest.raises(KeyError, match="more"):
        looprt.Saver(extra).restore(session(extra), path)


def test_an_iterable_input_ends_the_session_cleanly_when_exhausted(build: Any, tmp_path: Path) -> None:
    prog, train = build([0.0, 0.0, 0.0], iterable=[ONES, ONES, ONES])
    totals = []
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog), log_step_count_steps=None
    ) as sess:
        while not sess.should_stop():
            totals.append(float(sess.run(train.total)))
    assert totals == [3.0, 6.0, 9.0]


def test_bad_fetches_and_feeds_name_the_key(build: Any) -> None:
    prog, train = build([0.0, 1.0, 2.0])
    sess = session(prog)
    with pytest.raises(looprt.FetchError, match="train/accuracy"):
        sess.run("train/accuracy")
    with pytest.raises(looprt.FeedError, match="'y' names no input"):
        sess.run(train, feed_dict={"x": ONES, "y": 1})
    with pytest.raises(looprt.FeedError, match="'x'.*must be fed"):
        sess.run(train)
