"""The eager program model on the NumPy backend: inputs, state, steps, outputs."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import looprt


def make() -> tuple[looprt.Program, Any]:
    prog = looprt.Program(name="reg")
    prog.state("w", np.zeros(2))
    prog.input("x")
    prog.input("lr", default=0.5)

    @prog.step(outputs=("loss", "grad"))
    def train(x: np.ndarray, lr: float, w: np.ndarray) -> tuple[float, np.ndarray]:
        grad = w - x
        w -= lr * grad
        return float((grad**2).sum()), grad

    return prog, train


def session(prog: looprt.Program) -> looprt.ProgramSession:
    return looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)).create_session()


def test_fetch_handles_and_names_with_state_read_before_the_step() -> None:
    prog, train = make()
    sess = session(prog)
    out = sess.run({"loss": train.loss, "w": "w", "gs": prog.global_step, "op": train}, feed_dict={"x": np.ones(2)})
    assert out["loss"] == 2.0 and out["op"] is None
    np.testing.assert_array_equal(out["w"], [0.0, 0.0])  # snapshot from before the step
    assert out["gs"] == 0 and isinstance(out["gs"], np.integer)
    np.testing.assert_array_equal(sess.run("w"), [0.5, 0.5])
    assert sess.run(prog.global_step) == 1
    # a fetched state array is a copy, not the live array
    snap = sess.run("w")
    sess.run(train, feed_dict={"x": np.ones(2)})
    np.testing.assert_array_equal(snap, [0.5, 0.5])


def test_a_step_runs_once_per_run_however_often_it_is_fetched() -> None:
    prog, train = make()
    sess = session(prog)
    out = sess.run([train, train.loss, train["grad"], "train/loss", (train,)], feed_dict={"x": np.ones(2)})
    assert out[1] == out[3] == 2.0
    assert sess.run(prog.global_step) == 1


def test_inputs_pull_from_iterables_once_per_run_and_never_for_state_only_fetches() -> None:
    pulled: list[int] = []

    def items() -> Any:
        for i in range(3):
            pulled.append(i)
            yield i

    prog = looprt.Program()
    total = prog.state("total", np.zeros(()))
    batch = prog.input("batch", iterable=items())

    @prog.step(outputs=("seen",))
    def consume(batch: int, total: np.ndarray) -> dict[str, int]:
        total += batch
        return {"seen": batch}

    sess = session(prog)
    assert sess.run(total) == 0
    assert pulled == []
    assert sess.run([consume.seen, batch, consume.seen]) == [0, 0, 0]
    assert pulled == [0]
    assert sess.run(consume.seen, feed_dict={batch: 10}) == 10  # a fed input is not pulled
    assert pulled == [0]
    assert sess.run(consume.seen) == 1
    assert sess.run(consume.seen) == 2
    with pytest.raises(looprt.OutOfRangeError, match="'batch'.*exhausted after 3"):
        sess.run(consume.seen)
    assert batch.position == 3


def test_outputs_declared_or_not_and_missing_output_errors_name_the_key() -> None:
    prog = looprt.Program()
    prog.input("x", default=2)

    @prog.step
    def free(x: int) -> dict[str, int]:
        return {"double": 2 * x}

    sess = session(prog)
    assert sess.run(free["double"]) == 4
    with pytest.raises(AttributeError, match=r"'double'.*declares no outputs"):
        free.double  # attribute access is for declared outputs only
    with pytest.raises(looprt.FetchError, match=r"output 'tripel' of step 'free'.*returned 'double'"):
        sess.run({"a": free["tripel"]})

    prog2, train = make()
    with pytest.raises(looprt.FetchError, match="no output 'acc'"):
        train["acc"]
    with pytest.raises(AttributeError):
        train.acc


def test_bad_fetches_and_feeds_are_specific_errors_naming_the_path_or_key() -> None:
    prog, train = make()
    sess = session(prog)
    with pytest.raises(looprt.FetchError, match=r"fetch at \['a'\]\[1\] is a float") as info:
        sess.run({"a": [train.loss, 3.5]}, feed_dict={"x": 1})
    assert isinstance(info.value, TypeError)
    with pytest.raises(looprt.FetchError, match=r"fetch at \[0\] names 'nope'"):
        sess.run(["nope"])
    with pytest.raises(looprt.FetchError, match="is a list|unhashable|cannot be a fetch"):
        sess.run({"s": {1, 2}})
    with pytest.raises(looprt.FetchError, match="fetch at \\(the fetch itself\\) is a NoneType"):
        sess.run(None)
    other, other_train = make()
    with pytest.raises(looprt.FetchError, match="belongs to program"):
        sess.run(other_train.loss, feed_dict={"x": 1})
    with pytest.raises(looprt.FeedError, match="names no input.*inputs: x, lr") as feed_info:
        sess.run(train, feed_dict={"y": 1})
    assert isinstance(feed_info.value, TypeError)
    with pytest.raises(looprt.FeedError, match="is state 'w'; only inputs can be fed"):
        sess.run(train, feed_dict={"w": 1, "x": 1})
    with pytest.raises(looprt.FeedError, match="fed twice"):
        sess.run(train, feed_dict={"x": 1, prog.inputs["x"]: 2})
    with pytest.raises(looprt.FeedError, match="'x' of 'reg' must be fed"):
        sess.run(train)


def test_step_parameters_must_name_inputs_or_state() -> None:
    prog = looprt.Program(name="p")
    prog.input("x")
    with pytest.raises(ValueError, match="step 'f' takes 'y'.*inputs: x"):
        prog.step(lambda x, y: None, name="f")
    with pytest.raises(ValueError, match="already has a input named 'x'"):
        prog.input("x")


def test_finalized_program_accepts_nothing_new() -> None:
    prog, _ = make()
    session(prog)
    assert prog.finalized
    with pytest.raises(RuntimeError, match="finalized"):
        prog.state("v", np.zeros(1))


def test_state_dict_round_trip_and_mismatch_errors() -> None:
    prog, train = make()
    sess = session(prog)
    sess.run(train, feed_dict={"x": np.ones(2)})
    saved = prog.backend.state_dict(prog)
    assert set(saved) == {"w", "global_step"}
    sess.run(train, feed_dict={"x": np.ones(2)})
    prog.backend.load_state_dict(prog, saved)
    np.testing.assert_array_equal(sess.run("w"), [0.5, 0.5])
    assert sess.run(prog.global_step) == 1
    with pytest.raises(KeyError, match=r"missing \['w'\]"):
        prog.backend.load_state_dict(prog, {"global_step": 0})
    with pytest.raises(ValueError, match="shape"):
        prog.backend.load_state_dict(prog, {"global_step": 0, "w": np.zeros(3)})


def test_initializer_resets_live_state_in_place() -> None:
    prog, train = make()
    w = prog.states["w"].value
    sess = session(prog)
    sess.run(train, feed_dict={"x": np.ones(2)})
    sess.run(prog.initializer)
    assert w is prog.states["w"].value
    np.testing.assert_array_equal(w, [0, 0])
    assert sess.run(prog.global_step) == 0


def test_wrap_makes_a_program_from_a_plain_step_function() -> None:
    w = np.zeros(2)

    def train_step(batch: np.ndarray) -> dict[str, float]:
        w[...] += batch
        return {"loss": float(w.sum())}

    step = looprt.wrap(train_step, state={"w": w}, inputs=[np.ones(2)] * 3, outputs=("loss",))
    assert step.name == "train_step" and step.program.backend.name == "numpy"
    losses = []
    with looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=step))) as sess:
        while not sess.should_stop():
            losses.append(sess.run(step.loss))
    assert losses == [2.0, 4.0, 6.0]
    assert sess.should_stop()

    fed = looprt.wrap(lambda x, scale=3: {"y": x * scale}, outputs=("y",))
    raw = looprt.ChiefSessionCreator(looprt.Scaffold(program=fed.program)).create_session()
    assert raw.run(fed.y, feed_dict={"x": 2}) == 6


def test_closed_program_session_refuses_runs() -> None:
    prog, train = make()
    sess = session(prog)
    sess.close()
    with pytest.raises(looprt.ClosedSessionError):
        sess.run("w")


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no backend named 'mxnet'.*available: jax, numpy"):
        looprt.Program(backend="mxnet")


def test_import_looprt_imports_no_framework() -> None:
    code = (
        "import sys, looprt, looprt.backends, looprt.hooks;"
        "p = looprt.Program();"
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'tensorboardX') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_input_restarts_from_a_given_iterator_and_position() -> None:
    prog = looprt.Program()
    batch = prog.input("batch", iterable=[10, 20, 30, 40])

    @prog.step(outputs=("seen",))
    def consume(batch: int) -> dict[str, int]:
        return {"seen": batch}

    sess = session(prog)
    assert [sess.run(consume.seen) for _ in range(2)] == [10, 20]
    assert batch.position == 2
    batch.restart(iter([40]), 3)  # as if three items had been pulled
    assert sess.run(consume.seen) == 40
    assert batch.position == 4
    batch.restart(None, 0)  # the next pull iterates the iterable afresh
    assert sess.run(consume.seen) == 10
    assert batch.position == 1
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="position must be an int >= 0"):
            batch.restart(None, bad)  # type: ignore[arg-type]


def test_the_session_reads_the_global_step_on_the_host_and_counts_a_replaced_counter() -> None:
    prog = looprt.Program()
    total = prog.state("total", np.zeros(()))
    batch = prog.input("batch", iterable=[1.0, 2.0, 3.0])

    @prog.step(outputs=("seen",))
    def add(batch: float, total: np.ndarray) -> dict[str, float]:
        total += batch
        return {"seen": batch}

    sess = session(prog)
    assert sess.global_step_value() == 0
    assert sess.run(add) is None
    assert sess.global_step_value() == 1 and sess.run(total) == 1.0
    prog.global_step.value = np.array(7, dtype=np.int64)  # a replaced counter is still counted
    assert sess.global_step_value() == 7
    sess.run(add)
    assert int(prog.global_step.value) == 8 and sess.global_step_value() == 8
    assert batch.position == 2


def test_steps_get_their_bound_values_whatever_their_signature() -> None:
    """Bound values are passed in order where the signature allows it, by name otherwise."""
    prog = looprt.Program()
    prog.state("w", np.ones(()))
    prog.input("x", default=2.0)
    seen: dict[str, Any] = {}

    def record(name: str, **values: Any) -> dict[str, float]:
        seen[name] = {key: float(value) for key, value in values.items()}
        return {"out": 0.0}

    @prog.step(outputs=("out",), advance_global_step=False)
    def positional_only(x: float, w: np.ndarray, /) -> dict[str, float]:
        return record("positional_only", x=x, w=w)

    @prog.step(outputs=("out",), advance_global_step=False)
    def reversed_order(w: np.ndarray, x: float) -> dict[str, float]:
        return record("reversed_order", x=x, w=w)

    @prog.step(outputs=("out",), advance_global_step=False)
    def keyword_only(*, x: float, w: np.ndarray) -> dict[str, float]:
        return record("keyword_only", x=x, w=w)

    @prog.step(outputs=("out",), advance_global_step=False)
    def default_between(x: float, scale: float = 10.0, w: Any = None) -> dict[str, float]:
        return record("default_between", x=x * scale, w=w)

    @prog.step(outputs=("out",), advance_global_step=False)
    def with_var_args(x: float, *rest: Any, w: np.ndarray, **extra: Any) -> dict[str, float]:
        assert not rest and not extra
        return record("with_var_args", x=x, w=w)

    class Callable:
        def __call__(self, x: float, w: np.ndarray) -> dict[str, float]:
            return record("callable_object", x=x, w=w)

    callable_object = prog.step(outputs=("out",), name="callable_object", advance_global_step=False)(Callable())

    steps = [positional_only, reversed_order, keyword_only, default_between, with_var_args, callable_object]
    assert [step.keywords for step in steps] == [
        None,
        None,
        ("x", "w"),
        ("x", "w"),
        ("x", "w"),
        None,
    ]
    session(prog).run([step.out for step in steps], feed_dict={"x": 3.0})
    assert seen == {
        "positional_only": {"x": 3.0, "w": 1.0},
        "reversed_order": {"x": 3.0, "w": 1.0},
        "keyword_only": {"x": 3.0, "w": 1.0},
        "default_between": {"x": 30.0, "w": 1.0},
        "with_var_args": {"x": 3.0, "w": 1.0},
        "callable_object": {"x": 3.0, "w": 1.0},
    }


def test_any_mapping_a_step_returns_names_its_outputs() -> None:
    """A Mapping of any type (not only a dict) names outputs, also on later runs; other values are values."""
    import collections
    import types

    prog = looprt.Program()
    returns: list[Any] = [
        collections.OrderedDict(loss=1.0),
        types.MappingProxyType({"loss": 2.0}),
        collections.OrderedDict(loss=3.0),
    ]

    @prog.step(outputs=("loss",))
    def train() -> Any:
        return returns.pop(0)

    @prog.step(outputs=("pair",), advance_global_step=False)
    def evaluate() -> Any:
        return (4.0, 5.0)  # one output: the tuple is its value

    sess = session(prog)
    assert [sess.run(train.loss) for _ in range(3)] == [1.0, 2.0, 3.0]
    assert sess.run(evaluate.pair) == (4.0, 5.0)
