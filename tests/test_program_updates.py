"""State updates that cannot silently do nothing: functional updates, rebinding caught at declaration.

Also the strict output attributes of a step, fetches in ``end()`` that would
train past the end, and when the program keeps a copy of the initial state.
"""

from __future__ import annotations

import collections
import decimal
import dis
import fractions
import functools
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import looprt
from looprt.errors import StateUpdateError, TrainingEndedError


def session(prog: looprt.Program) -> Any:
    return looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)).create_session()


# --------------------------------------------------------------------------- the two traps


def test_rebinding_a_state_parameter_is_an_error_at_declaration_naming_step_state_and_fix() -> None:
    prog = looprt.Program()
    prog.state("w", np.zeros(2))
    with pytest.raises(StateUpdateError) as caught:

        @prog.step(outputs=("loss",))
        def train(w: np.ndarray) -> dict[str, float]:
            w = w - 1.0  # rebinds the local name
            return {"loss": float(w.sum())}

    message = str(caught.value)
    assert "step 'train'" in message and "`w = w - 1.0`" in message
    assert "updates=('w',)" in message and "in place" in message
    assert "train" not in prog.steps  # nothing half-declared


def test_augmented_assignment_to_immutable_state_is_an_error_at_declaration() -> None:
    prog = looprt.Program()
    prog.state("b", 0.0)
    with pytest.raises(StateUpdateError, match=r"step 'train'.*'b' is a float.*`b \+= 1`.*updates=\('b',\)"):

        @prog.step
        def train(b: float) -> None:
            b += 1


@pytest.mark.parametrize(
    "value",
    [np.float64(1.0), (1, 2), "text", np.int64(3), np.frombuffer(b"\0" * 16)],
    ids=["numpy-scalar", "tuple", "str", "numpy-int", "read-only-array"],
)
def test_every_immutable_kind_is_caught(value: Any) -> None:
    prog = looprt.Program()
    prog.state("s", value)
    with pytest.raises(StateUpdateError, match="'s'"):

        @prog.step
        def train(s: Any) -> None:
            s += s


def test_in_place_updates_reading_immutable_state_and_nested_scopes_are_accepted() -> None:
    prog = looprt.Program()
    w = prog.state("w", np.zeros(2))
    prog.state("lr", 0.5)

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray, lr: float) -> dict[str, float]:
        w -= lr  # in place on an array
        w[0] += 1.0

        def helper() -> float:
            lr = 3.0  # another scope's name
            return lr

        return {"loss": float(w.sum()) + helper() * 0}

    sess = session(prog)
    assert sess.run(train.loss) == 0.0
    np.testing.assert_array_equal(sess.run(w), [0.5, -0.5])


def test_the_issues_example_is_caught_with_no_source_file_to_read() -> None:
    # `python -c`: no file holds the step's source, its compiled code is checked all the same.
    code = textwrap.dedent(
        """
        import numpy as np, looprt
        prog = looprt.Program()
        w = prog.state("w", np.zeros(2)); b = prog.state("b", 0.0)
        @prog.step(outputs=("loss",))
        def train(w, b):
            w = w - 1.0
            b += 1
            return {"loss": float(w.sum())}
        """
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "StateUpdateError: step 'train': `w = ...` (line 7) binds a new object" in done.stderr


def test_every_way_of_writing_a_step_is_checked() -> None:
    class Scaled:
        def __init__(self) -> None:
            self.scale = 2.0

        def method(self, w: np.ndarray) -> None:
            w = w * self.scale

        def __call__(self, w: np.ndarray) -> None:
            w = w * self.scale

    def scaled(w: np.ndarray, scale: float) -> None:
        w = w * scale

    def decorated(f: Any) -> Any:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return f(*args, **kwargs)

        return wrapper

    @decorated
    def wrapped(w: np.ndarray) -> None:
        w = w * 2.0

    lam = lambda w: (w := w * 2.0)  # noqa: E731 - a lambda is the point
    steps = {
        "lambda": lam,
        "method": Scaled().method,
        "object": Scaled(),
        "partial": functools.partial(scaled, scale=2.0),
        "wrapped": wrapped,
    }
    for name, fn in steps.items():
        prog = looprt.Program()
        prog.state("w", np.zeros(2))
        with pytest.raises(StateUpdateError, match=rf"step {name!r}: `.*w \* .*` \(line \d+\) binds"):
            prog.step(fn, name=name)


def test_every_statement_that_binds_the_name_is_a_rebinding() -> None:
    prog = looprt.Program()
    prog.state("w", np.zeros(2))
    sources = {
        "import": "import math as w",
        "match": "match 1:\n        case w:\n            pass",
        "except": "try:\n        pass\n    except Exception as w:\n        pass",
        "for": "for w in range(2):\n        pass",
        "with": "with open(__file__) as w:\n        pass",
        "unpack": "w, = (w * 2,)",
    }
    for kind, body in sources.items():
        namespace: dict[str, Any] = {}
        exec(f"def by_{kind}(w):\n    {body}\n", namespace)
        with pytest.raises(StateUpdateError, match=rf"step 'by_{kind}': .*local name 'w'"):
            prog.step(namespace[f"by_{kind}"])


@pytest.mark.parametrize("value", [fractions.Fraction(1, 2), decimal.Decimal("0.5")], ids=["Fraction", "Decimal"])
def test_augmented_assignment_to_a_type_without_an_in_place_method_is_caught(value: Any) -> None:
    # Neither type is in the backend's list of immutable kinds: it has no __iadd__ to change in place.
    prog = looprt.Program()
    prog.state("t", value)
    with pytest.raises(StateUpdateError, match=rf"state 't' is a {type(value).__name__}, which cannot change"):

        @prog.step
        def train(t: Any) -> None:
            t += 1


def test_a_comprehension_variable_named_like_the_state_hides_no_later_rebinding() -> None:
    # Python 3.12+ inlines comprehensions: their variable is saved and restored around them.
    prog = looprt.Program()
    prog.state("w", np.zeros(2))
    with pytest.raises(StateUpdateError, match=r"`w = w - 1.0 \+ squares\[0\]`"):

        @prog.step
        def train(w: np.ndarray) -> None:
            squares = [w * w for w in range(3)]
            w = w - 1.0 + squares[0]

    @prog.step(name="reads")
    def reads(w: np.ndarray) -> dict[str, Any]:
        w += 1.0
        return {"n": len({w: 0 for w in range(3)})}


def test_a_long_step_updating_its_global_state_in_place_is_accepted() -> None:
    # Past 256 names an instruction carries EXTENDED_ARG: the in-place `+=` must still be seen.
    reads = "".join(f"    x = n{i}\n" for i in range(300))  # 300 global names before w
    namespace: dict[str, Any] = {"w": np.zeros(2), **{f"n{i}": i for i in range(300)}}
    exec(f"def train():\n    global w\n{reads}    w += 1.0\n", namespace)
    assert any(i.opname == "EXTENDED_ARG" for i in dis.get_instructions(namespace["train"]))
    step = looprt.wrap(namespace["train"], state={"w": namespace["w"]})
    sess = session(step.program)
    sess.run(step)
    assert sess.run(step.program.states["w"]).tolist() == [1.0, 1.0]


def test_a_nested_function_rebinding_a_state_parameter_is_caught() -> None:
    prog = looprt.Program()
    prog.state("w", np.zeros(2))
    with pytest.raises(StateUpdateError, match=r"`w = w - 1.0` \(line \d+, in the nested function 'shrink'\)"):

        @prog.step
        def train(w: np.ndarray) -> None:
            def shrink() -> None:
                nonlocal w
                w = w - 1.0

            shrink()


def test_a_wrapped_step_rebinding_the_state_it_closes_over_is_caught() -> None:
    w = np.zeros(2)
    b = 0.0

    def rebinds() -> float:
        nonlocal w
        w = w - 1.0
        return float(w.sum())

    with pytest.raises(StateUpdateError, match=r"the closed-over name 'w'.*take the state as a parameter"):
        looprt.wrap(rebinds, state={"w": w})

    def counts() -> None:
        nonlocal b
        b += 1

    with pytest.raises(StateUpdateError, match=r"state 'b' is a float.*`b \+= 1`.*the closed-over name"):
        looprt.wrap(counts, state={"b": b})

    def in_place() -> None:
        nonlocal w
        w += 1.0  # an array: changes the state itself

    step = looprt.wrap(in_place, state={"w": w})
    sess = session(step.program)
    sess.run(step)
    np.testing.assert_array_equal(sess.run(step.program.states["w"]), [1.0, 1.0])

    other = 0.0

    def another_name() -> None:
        nonlocal other
        other += 1  # not the state: a name of its own

    looprt.wrap(another_name, state={"b": b})


GLOBAL_W = np.zeros(2)


def test_a_step_rebinding_the_global_that_holds_its_state_is_caught() -> None:
    def rebinds() -> None:
        global GLOBAL_W  # noqa: PLW0603 - the trap under test
        GLOBAL_W = GLOBAL_W - 1.0

    with pytest.raises(StateUpdateError, match=r"the global name 'GLOBAL_W'"):
        looprt.wrap(rebinds, state={"GLOBAL_W": GLOBAL_W})
    looprt.wrap(rebinds, state={"GLOBAL_W": np.zeros(2)})  # another object: not caught


def test_a_functional_update_may_not_turn_state_another_step_updates_in_place_immutable() -> None:
    prog = looprt.Program()
    w = prog.state("w", np.ones(()))

    @prog.step(updates=("w",), advance_global_step=False)
    def halve(w: np.ndarray) -> dict[str, Any]:
        return {"w": w * 0.5}  # a NumPy scalar, not a 0-d array

    @prog.step
    def bump(w: np.ndarray) -> None:
        w += 1.0

    sess = session(prog)
    sess.run(bump)
    with pytest.raises(StateUpdateError, match=r"step 'halve' returned a float64 .* step 'bump' .*`w \+= 1.0`"):
        sess.run(halve)
    assert sess.run(w) == 2.0  # kept: the refused value was not assigned


def test_a_functional_update_keeping_state_mutable_mixes_with_in_place_steps() -> None:
    prog = looprt.Program()
    w = prog.state("w", np.ones(()))

    @prog.step(updates=("w",), advance_global_step=False)
    def halve(w: np.ndarray) -> dict[str, Any]:
        return {"w": np.asarray(w * 0.5)}

    @prog.step
    def bump(w: np.ndarray) -> None:
        w += 1.0

    sess = session(prog)
    for step in (bump, bump, halve, bump):
        sess.run(step)
    assert sess.run(w) == 2.5


def test_a_result_holding_state_the_step_does_not_declare_updated_is_an_error() -> None:
    prog = looprt.Program()
    w = prog.state("w", np.zeros(2))
    prog.state("b", 0.0)

    @prog.step(outputs=("loss",))
    def forgets(w: np.ndarray) -> dict[str, Any]:
        return {"loss": 1.0, "w": w + 1}  # meant as an update, but not declared one

    @prog.step(outputs=("loss", "w"), name="logs_w")
    def logs_w(w: np.ndarray) -> dict[str, Any]:
        return {"loss": 1.0, "w": w + 1}  # a declared output that shares the state's name

    @prog.step(outputs=("loss",), updates=("w",), name="returns_b")
    def returns_b(w: np.ndarray) -> tuple[Any, ...]:
        return w + 1, 1.0

    @prog.step(updates=("w",), name="mapping")
    def mapping(w: np.ndarray) -> Any:
        return collections.OrderedDict(w=w + 1, b=2.0)  # not a dict: Step.results names it

    @prog.step(outputs=("loss",), name="logs_live")
    def logs_live(w: np.ndarray) -> dict[str, Any]:
        w += 0.0
        return {"loss": 1.0, "w": w}  # the live object, changed in place: nothing is dropped

    sess = session(prog)
    assert sess.run(logs_live.loss) == 1.0
    with pytest.raises(StateUpdateError, match=r"step 'forgets' returned 'w', which is state it does not "):
        sess.run(forgets.loss)
    with pytest.raises(StateUpdateError, match=r"step 'mapping' returned 'b'.*updates=\('b',\)"):
        sess.run(mapping)
    np.testing.assert_array_equal(sess.run(w), [0.0, 0.0])  # nothing was assigned
    assert sess.run(logs_w["w"]).tolist() == [1.0, 1.0] and sess.run(w).tolist() == [0.0, 0.0]
    assert sess.run(returns_b.loss) == 1.0 and sess.run(w).tolist() == [1.0, 1.0]


def test_the_issues_example_trains_once_it_declares_its_updates() -> None:
    prog = looprt.Program()
    w = prog.state("w", np.zeros(2))
    b = prog.state("b", 0.0)

    @prog.step(outputs=("loss",), updates=("w", "b"))
    def train(w: np.ndarray, b: float) -> dict[str, Any]:
        w = w - 1.0
        b += 1
        return {"loss": float(w.sum()), "w": w, "b": b}

    sess = session(prog)
    assert [sess.run(train.loss) for _ in range(3)] == [-2.0, -4.0, -6.0]
    np.testing.assert_array_equal(sess.run(w), [-3.0, -3.0])
    assert sess.run(b) == 3.0 and sess.run(prog.global_step) == 3
    # State fetched in the same run is read before the step, as for in-place updates.
    assert sess.run({"b": b, "loss": train.loss}) == {"b": 3.0, "loss": -8.0}


def test_a_functional_step_may_return_updates_then_outputs_in_order() -> None:
    params = {"w": np.ones(2)}
    step = looprt.wrap(
        lambda params, batch: ({"w": params["w"] * batch}, float(batch)),
        state={"params": params},
        inputs=[2.0, 3.0],
        updates=("params",),
        outputs=("loss",),
    )
    sess = session(step.program)
    assert sess.run(step.loss) == 2.0 and sess.run(step.loss) == 3.0
    np.testing.assert_array_equal(sess.run("params")["w"], [6.0, 6.0])
    assert params["w"].tolist() == [1.0, 1.0]  # replaced, not written into


def test_a_declared_update_that_is_not_returned_is_an_error_naming_step_and_state() -> None:
    prog = looprt.Program()
    prog.state("w", np.zeros(2))

    @prog.step(outputs=("loss",), updates=("w",))
    def train(w: np.ndarray) -> dict[str, float]:
        return {"loss": 0.0}

    with pytest.raises(looprt.FetchError, match=r"step 'train' declares updates of 'w' but returned no 'w'"):
        session(prog).run(train)


def test_updates_must_name_state_and_not_the_global_step_nor_an_output() -> None:
    prog = looprt.Program()
    prog.state("w", np.zeros(2))
    with pytest.raises(ValueError, match="'nope', which is not state"):
        prog.step(lambda: None, updates=("nope",), name="a")
    with pytest.raises(StateUpdateError, match="global step"):
        prog.step(lambda: None, updates=("global_step",), name="b")
    with pytest.raises(ValueError, match="both outputs and updates"):
        prog.step(lambda w: {"w": w}, updates=("w",), outputs=("w",), name="c")
    with pytest.raises(TypeError, match=r"updates=\('w',\)"):
        prog.step(lambda w: {"w": w}, updates="w", name="d")  # type: ignore[arg-type]


def test_functional_state_checkpoints_and_resumes(tmp_path: Path) -> None:
    def build() -> tuple[looprt.Program, looprt.Step]:
        prog = looprt.Program()
        prog.state("w", np.zeros(2))
        prog.state("count", 0)

        @prog.step(outputs=("loss",), updates=("w", "count"))
        def train(w: np.ndarray, count: int) -> dict[str, Any]:
            return {"w": w + 1.0, "count": count + 1, "loss": float(w.sum())}

        return prog, train

    for last_step, expected in ((3, 3), (5, 5)):
        prog, train = build()
        with looprt.MonitoredTrainingSession(
            checkpoint_dir=str(tmp_path),
            scaffold=looprt.Scaffold(program=prog),
            hooks=[looprt.StopAtStepHook(last_step=last_step)],
            save_summaries_steps=None,
        ) as sess:
            while not sess.should_stop():
                sess.run(train)
        assert prog.states["count"].value == expected
        np.testing.assert_array_equal(prog.states["w"].value, [expected, expected])


# --------------------------------------------------------------------------- step attributes


def test_a_typo_in_an_output_attribute_is_an_error_listing_the_declared_outputs() -> None:
    prog = looprt.Program()

    @prog.step(outputs=("loss", "accuracy"))
    def train() -> dict[str, float]:
        return {"loss": 1.0, "accuracy": 0.5}

    with pytest.raises(AttributeError, match=r"no attribute or output 'lsos'.*'loss', 'accuracy'"):
        train.lsos
    with pytest.raises(looprt.FetchError, match="no output 'lsos'"):
        train["lsos"]
    assert train.loss is train["loss"]


# --------------------------------------------------------------------------- fetches in end()


def counting_program() -> tuple[looprt.Program, looprt.Step, looprt.Step]:
    prog = looprt.Program()
    total = prog.state("total", np.zeros(()))

    @prog.step(outputs=("loss",))
    def train(total: np.ndarray) -> dict[str, float]:
        total += 1.0
        return {"loss": float(total)}

    @prog.step(outputs=("double",), advance_global_step=False)
    def evaluate(total: np.ndarray) -> dict[str, float]:
        return {"double": float(total) * 2}

    assert total.name == "total"
    return prog, train, evaluate


def test_a_fetch_in_end_that_would_train_raises_instead_of_training_past_the_end() -> None:
    prog, train, _ = counting_program()
    hook = looprt.LoggingTensorHook({"loss": train.loss}, at_end=True)
    sess = looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=[hook])
    sess.run(train)
    with pytest.raises(TrainingEndedError, match=r"run step 'train'.*advance_global_step=False"):
        sess.close()
    assert int(prog.global_step.value) == 1 and float(prog.states["total"].value) == 1.0


def test_end_may_fetch_state_and_evaluation_steps(caplog: pytest.LogCaptureFixture) -> None:
    prog, train, evaluate = counting_program()
    final = looprt.FinalOpsHook({"double": evaluate.double, "total": "total"})
    logged = looprt.LoggingTensorHook({"total": "total"}, at_end=True)
    with caplog.at_level(logging.INFO), looprt.MonitoredSession(
        looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=[final, logged]
    ) as sess:
        sess.run(train)
        sess.run(train)
    assert final.final_ops_values == {"double": 4.0, "total": 2.0}
    assert int(prog.global_step.value) == 2
    assert "total = 2.0" in caplog.text


# --------------------------------------------------------------------------- the initial copy


def test_declaring_state_takes_no_copy_and_a_checkpointed_run_never_does(tmp_path: Path) -> None:
    prog, train, _ = counting_program()
    assert all(state.initial is None for state in prog.states.values())
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=str(tmp_path), scaffold=looprt.Scaffold(program=prog), save_summaries_steps=None
    ) as sess:
        sess.run(train)
        assert prog.checkpointed
        assert all(state.initial is None for state in prog.states.values())


def test_without_checkpoints_a_recovered_session_starts_from_the_initial_values() -> None:
    prog, train, _ = counting_program()
    failures = [True]

    class AbortOnce(looprt.SessionRunHook):
        def after_run(self, run_context: Any, run_values: Any) -> None:
            if failures and int(prog.global_step.value) == 2:
                failures.clear()
                raise looprt.AbortedError(None, None, "peer lost")

    with looprt.MonitoredSession(
        looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks=[AbortOnce()]
    ) as sess:
        sess.run(train)
        assert float(prog.states["total"].initial) == 0.0  # kept: no checkpoint exists
        sess.run(train)  # aborts after the step; the session is re-created and re-initialized
        assert int(prog.global_step.value) == 1 and float(prog.states["total"].value) == 1.0


# --------------------------------------------------------------------------- a model-based test

MODES = ("in_place", "functional", "read", "ignore")


def make_step(prog: looprt.Program, name: str, modes: dict[str, str], add: float) -> looprt.Step:
    """A step whose function takes ``modes``' state and changes each as its mode says."""
    taken = [s for s, mode in modes.items() if mode != "ignore"]
    functional = tuple(s for s, mode in modes.items() if mode == "functional")
    lines = [f"def {name}({', '.join(taken)}):", "    out = {}"]
    for state, mode in modes.items():
        if mode == "in_place":
            lines.append(f"    {state} += {add}")
        elif mode == "functional":
            lines.append(f"    out[{state!r}] = {state} + {add}")
    lines += ["    out['seen'] = " + (" + ".join(f"float(np.sum({s}))" for s in taken) or "0.0"), "    return out"]
    namespace: dict[str, Any] = {"np": np}
    exec("\n".join(lines), namespace)  # generated steps; the model below is independent of them
    return prog.step(namespace[name], outputs=("seen",), updates=functional)


def build(plan: list[dict[str, str]], adds: list[float]) -> tuple[looprt.Program, list[looprt.Step]]:
    prog = looprt.Program()
    prog.state("a", np.zeros(2))
    prog.state("f", 0.0)
    steps = [make_step(prog, f"step{i}", modes, add) for i, (modes, add) in enumerate(zip(plan, adds))]
    return prog, steps


state_modes = st.fixed_dictionaries(
    {"a": st.sampled_from(MODES), "f": st.sampled_from(("functional", "read", "ignore"))}
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(state_modes, min_size=1, max_size=3),
    adds=st.lists(st.integers(1, 5).map(float), min_size=3, max_size=3),
    runs=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    split=st.integers(0, 8),
)
def test_mixed_updates_match_a_plain_python_model_through_checkpoint_and_resume(
    tmp_path_factory: pytest.TempPathFactory,
    plan: list[dict[str, str]],
    adds: list[float],
    runs: list[int],
    split: int,
) -> None:
    runs = [i % len(plan) for i in runs]
    split = min(split, len(runs))
    model = {"a": 0.0, "f": 0.0}  # every element of "a" moves together
    for i in runs:
        for state, mode in plan[i].items():
            if mode in ("in_place", "functional"):
                model[state] += adds[i]

    directory = tmp_path_factory.mktemp("ckpt")
    for part in (runs[:split], runs[split:]):
        prog, steps = build(plan, adds)  # a new process's program: restored from the checkpoint
        with looprt.MonitoredTrainingSession(
            checkpoint_dir=str(directory), scaffold=looprt.Scaffold(program=prog), save_summaries_steps=None
        ) as sess:
            for i in part:
                sess.run(steps[i])
    assert int(prog.global_step.value) == len(runs)
    np.testing.assert_array_equal(prog.states["a"].value, [model["a"]] * 2)
    assert float(prog.states["f"].value) == model["f"]


# --------------------------------------------------------------------------- hooks by position


def test_unhashable_and_equal_hooks_each_get_their_own_results() -> None:
    import dataclasses

    @dataclasses.dataclass  # eq=True makes it unhashable
    class Fetching(looprt.SessionRunHook):
        fetch: Any
        seen: list[Any] = dataclasses.field(default_factory=list)

        def before_run(self, run_context: Any) -> Any:
            return looprt.SessionRunArgs(self.fetch)

        def after_run(self, run_context: Any, run_values: Any) -> None:
            self.seen.append(run_values.results)

    prog, train, evaluate = counting_program()
    first, second = Fetching("total"), Fetching("total")
    assert first == second
    other = Fetching(evaluate.double)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    with looprt.MonitoredSession(creator, hooks=[first, second, other]) as sess:
        sess.run(train)
        sess.run(train)
    assert first.seen == second.seen == [0.0, 1.0]  # state is read before the step
    assert other.seen == [2.0, 4.0]
    assert first.seen is not second.seen


def test_a_step_whose_result_does_not_match_its_outputs_fails_however_it_is_fetched() -> None:
    prog = looprt.Program()

    @prog.step(outputs=("loss", "accuracy"))
    def train() -> float:
        return 1.0  # one value for two declared outputs

    sess = session(prog)
    for fetches in (train, [train], {"t": train}, train.loss):
        with pytest.raises(TypeError, match=r"step 'train' returned float.*2 values"):
            sess.run(fetches)
