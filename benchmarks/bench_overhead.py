"""Per-step overhead of ``MonitoredSession.run`` over a bare ``session.run``.

Usage::

    python benchmarks/bench_overhead.py [--quick] [--json PATH] [--profile]
                                        [--no-tf] [--no-ignite] [--no-training]

Table 1 drives one trivial session-like object (``run`` returns a constant;
``close()``; ``graph = None``) made by a creator object, side by side in one
process:

* bare: ``raw.run(fetches)``;
* hook calls only (floor): the bare run plus a direct call of every hook's
  ``before_run`` and ``after_run`` -- what any runtime must spend on the hooks;
* ``looprt.MonitoredSession`` with 0, 5 and 20 hooks;
* ``tf.compat.v1.train.MonitoredSession`` with the same hooks, inside
  ``with tf.Graph().as_default():`` (skipped when TensorFlow is missing);
* PyTorch Ignite's ``Engine`` whose process function is the same bare run,
  with 0, 5 and 20 handlers on ``Events.ITERATION_COMPLETED(every=100)``
  (skipped when ``pytorch-ignite`` is missing). Ignite owns its loop, so a
  block is one ``engine.run`` of ``--steps`` iterations over an endless
  iterator of the same fetches.

Each hook fetches ``{"x": "a"}`` on every 100th step (``before_run`` returns
``SessionRunArgs`` when its own counter % 100 == 0, else None) and reads
``run_values.results`` in ``after_run``. The same hook class serves both
runtimes: TF duck-types hooks and ``SessionRunArgs``. Ignite's handlers read
``engine.state.output`` when Ignite's event filter calls them (every 100th
iteration): the same work, in each framework's own idiom.

The trivial session answers a dict of fetches with a dict of answers (TF's
``_HookedSession`` always sends ``{"caller": fetches, ...}``; looprt sends a
dict only on the runs where a hook fetches), so each runtime pays for the
merged request it makes.

Timing: ``time.perf_counter_ns`` around blocks of ``--steps`` runs, repeated
``--repeats`` times; every repeat runs every variant once (the order reversed
on odd repeats, so a linear drift cancels), with the garbage collector off
inside a block, as ``timeit`` does (and everything alive before timing
frozen out of its reach). The figures are medians over repeats (the fastest
block is shown too); overhead = a variant's median per-step time minus the
bare one's. A line after the table gives the overhead beyond the floor.

Allocation check (5 hooks; TrivialSession): on runs where no hook fetches,
does looprt build any result structure? Probe hooks placed first and last
count ``sys.getallocatedblocks()`` between the first ``before_run`` and the
last ``after_run`` (objects born during the run and still alive then, as a
merged request or per-hook ``SessionRunValues`` would be), the raw session
records whether it got the caller's own fetches object, and the last hook
records whether every run showed it the one shared ``SessionRunValues``.
``tracemalloc`` then gives the bytes allocated (peak over the run) per run by
the floor, looprt and TF, and the live-block growth over all the runs.

Table 2 is a NumPy softmax-regression training step (``looprt.Program``, one
step with output ``loss``, minibatch 64x784 -> 10 classes, synthetic data):
the step function called directly, the raw ``ProgramSession``,
``looprt.MonitoredSession`` (``ChiefSessionCreator``) with 5 hooks that fetch
the global step every 100th run, and ``looprt.MonitoredTrainingSession`` with
its default hooks (step counter, summaries every 100 steps, checkpoints every
600 s: one at the start) writing into a temporary directory.

Table 3 runs each runtime's own standard hooks on its own session. looprt:
``looprt.MonitoredSession`` over the ``ProgramSession`` of a NumPy program
whose one step returns a constant loss (the caller fetches the step). TF:
``tf.compat.v1.train.MonitoredSession`` over a ``tf.compat.v1.Session`` of a
graph whose train op increments the global step (``assign_add``) beside a
constant loss. Ignite: an ``Engine`` whose process function is the same
Python step as looprt's. With 5 and 20 hooks the first three are
``LoggingTensorHook({"loss": loss}, every_n_iter=100)``,
``NanTensorHook(loss)`` and ``StepCounterHook(every_n_steps=100)`` (no
summary writer), looprt's and TF's own; Ignite's are a handler logging the
loss every 100 iterations, Ignite's own ``TerminateOnNan`` every iteration
(it turns the float into a tensor to check it) and a handler logging
iterations per second every 100. The rest are ``FetchEveryHook``s of the
global step (Ignite: ``IgniteHandler``s every 100). Log records are made at
INFO and dropped by the loggers' WARNING level, the default (TF's logger is
set to ERROR meanwhile: see ``standard_runtimes``). Each runtime's bare row
is its own raw run (``ProgramSession.run``, ``tf.Session.run`` of the train
op, the step function called directly), next to an A/A copy of it that shows
the resolution; overhead = per-step - that runtime's bare per-step. A line
after the table gives looprt's overhead over the plain step function
(``ProgramSession``'s own cost included), divided by Ignite's.

``--profile`` adds a cProfile listing of looprt with 5 hooks (sorted by own
time); ``--no-tf`` / ``--no-ignite`` leave those columns out even when
installed; ``--no-training`` skips table 2.

The script never fails on speed: it prints whether each target (looprt's
overhead <= 0.25 x TF's and <= 0.25 x Ignite's at 0, 5 and 20 hooks, judged
on table 3) is met and exits 0. Table 1's ratios are printed for reference.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import itertools
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import looprt

if TYPE_CHECKING:
    import numpy as np

# NumPy is imported only once main() has set these (unless already set): one
# BLAS thread keeps the softmax step's time steady on a busy or small machine.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

HOOK_COUNTS = (0, 5, 20)
TARGET_RATIO = 0.25
TARGET_HOOKS = HOOK_COUNTS  # judged on table 3 (standard hooks, native sessions)
FETCH_EVERY = 100
VALUE = 1.0
LOSS = 1.0  # table 3's constant loss
CALLER_FETCHES = "loss"
NO_FETCHES: Any = object()  # a variant whose ``run`` takes no argument
# MonitoredTrainingSession's default hooks with a checkpoint_dir: step counter, summaries, checkpoints.
TRAINING_HOOKS = 3
PEERS = (("tf", "TF"), ("ignite", "Ignite"))  # (runtime, column name) looprt is compared with
HEADER = (
    f"{'variant':<28} {'hooks':>5} {'per-step us':>12} {'overhead us':>12} "
    f"{'looprt/TF':>10} {'looprt/Ignite':>14} {'min us':>10}"
)


# --- the session-like object, its creator, the hook -------------------------------------


class TrivialSession:
    """A session-like object whose ``run`` answers at once with a constant.

    A dict of fetches (a merged request) gets a dict with the same keys, each
    answered the same way, as a real session would rebuild the structure.
    """

    graph = None

    def __init__(self) -> None:
        self.closed = False

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        if type(fetches) is dict:
            return {key: self.run(value) for key, value in fetches.items()}
        return VALUE

    def close(self) -> None:
        self.closed = True


class TrivialCreator:
    """A session creator: any object with ``create_session()``, for looprt and TF alike."""

    def __init__(self, session_type: Callable[[], Any] = TrivialSession) -> None:
        self.session_type = session_type
        self.sessions: list[Any] = []

    def create_session(self) -> Any:
        session = self.session_type()
        self.sessions.append(session)
        return session


class FetchEveryHook(looprt.SessionRunHook):
    """Fetches ``fetches`` on every ``every``-th run; counts the results it gets back."""

    def __init__(self, fetches: Any = None, every: int = FETCH_EVERY) -> None:
        self.fetches = {"x": "a"} if fetches is None else fetches
        self.every = every
        self.step = 0
        self.fetched = 0
        self.last: Any = None

    def before_run(self, run_context: Any) -> Any:
        step = self.step
        self.step = step + 1
        if step % self.every == 0:
            return looprt.SessionRunArgs(self.fetches)
        return None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        results = run_values.results
        if results is not None:
            self.fetched += 1
            self.last = results

    def expected_fetches(self) -> int:
        return (self.step + self.every - 1) // self.every


def make_hooks(count: int, fetches: Any = None) -> list[FetchEveryHook]:
    return [FetchEveryHook(fetches) for _ in range(count)]


class IgniteHandler:
    """Ignite's stand-in for ``FetchEveryHook``: reads the step's output when Ignite calls it."""

    def __init__(self) -> None:
        self.fetched = 0
        self.last: Any = None

    def __call__(self, engine: Any) -> None:
        self.fetched += 1
        self.last = {"x": engine.state.output}


# --- timing ----------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    runtime: str  # "bare", "floor", "looprt", "tf", "ignite", ...
    hooks: int
    run: Callable[..., Any]
    fetches: Any
    hook_objects: list[Any] = field(default_factory=list)
    samples_ns: list[float] = field(default_factory=list)  # per-step ns, one per repeat
    # For a runtime that owns its loop (Ignite): block(steps) runs ``steps`` steps.
    block: Callable[[int], None] | None = None
    expected_fetches: int = 0  # per hook, for block variants

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def min_ns(self) -> float:
        return min(self.samples_ns)


@contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_block(run: Callable[..., Any], fetches: Any, steps: int) -> float:
    """Per-step nanoseconds of ``steps`` calls of ``run(fetches)``, the collector off.

    With ``fetches`` NO_FETCHES, ``run()`` is called instead.
    """
    with collector_off():
        loop = itertools.repeat(None, steps)
        if fetches is NO_FETCHES:
            start = time.perf_counter_ns()
            for _ in loop:
                run()
            elapsed = time.perf_counter_ns() - start
        else:
            start = time.perf_counter_ns()
            for _ in loop:
                run(fetches)
            elapsed = time.perf_counter_ns() - start
    return elapsed / steps


def time_variant(variant: Variant, steps: int) -> float:
    if variant.block is None:
        return time_block(variant.run, variant.fetches, steps)
    with collector_off():
        start = time.perf_counter_ns()
        variant.block(steps)
        elapsed = time.perf_counter_ns() - start
    return elapsed / steps


def measure(variants: Sequence[Variant], steps: int, repeats: int, warmup: int) -> None:
    # Move what exists now (TensorFlow's modules included) out of the collector's
    # reach, so the collect before each block is quick.
    gc.collect()
    gc.freeze()
    for variant in variants:
        time_variant(variant, warmup)
    for repeat in range(repeats):
        order = variants if repeat % 2 == 0 else list(reversed(variants))
        for variant in order:
            variant.samples_ns.append(time_variant(variant, steps))


def check_hooks(variant: Variant) -> None:
    """Every hook got its own results back on exactly the runs it fetched."""
    for hook in variant.hook_objects:
        expected = variant.expected_fetches if variant.block is not None else hook.expected_fetches()
        if hook.fetched != expected or (expected and hook.last != {"x": VALUE}):
            raise AssertionError(
                f"{variant.name} ({variant.hooks} hooks): a hook fetched {expected} times but got "
                f"{hook.fetched} results, the last {hook.last!r}"
            )


# --- table 1: overhead over a trivial session ---------------------------------------------


def import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def import_ignite() -> Any:
    """``ignite.engine`` (with ``__version__`` set to Ignite's), or None when not installed."""
    try:
        import ignite
        import ignite.engine
    except ImportError:
        return None
    ignite.engine.__version__ = ignite.__version__
    return ignite.engine


def hook_calls_floor(raw: TrivialSession, hooks: Sequence[FetchEveryHook]) -> Callable[[Any], Any]:
    """What any runtime must spend on these hooks: their calls, around a bare run.

    Every hook's ``before_run`` and ``after_run`` is called once per run with
    one prepared context and values; the hooks' requests are ignored (their
    results come back None), so nothing is merged.
    """
    befores = [hook.before_run for hook in hooks]
    afters = [hook.after_run for hook in hooks]
    raw_run = raw.run
    context = looprt.SessionRunContext(looprt.SessionRunArgs(CALLER_FETCHES), raw)
    values = looprt.SessionRunValues(None, None, None)

    def run(fetches: Any) -> Any:
        for before in befores:
            before(context)
        result = raw_run(fetches)
        for after in afters:
            after(context, values)
        return result

    return run


def ignite_variant(engine_module: Any, count: int) -> Variant:
    """An Ignite ``Engine`` running the bare step, ``count`` handlers every 100 iterations."""
    raw = TrivialCreator().create_session()
    raw_run = raw.run

    def process(engine: Any, batch: Any) -> Any:
        return raw_run(batch)

    engine = engine_module.Engine(process)
    handlers = [IgniteHandler() for _ in range(count)]
    for handler in handlers:
        engine.add_event_handler(engine_module.Events.ITERATION_COMPLETED(every=FETCH_EVERY), handler)
    data = itertools.repeat(CALLER_FETCHES)
    variant = Variant("ignite.engine.Engine", "ignite", count, raw_run, CALLER_FETCHES, handlers)

    def block(steps: int) -> None:
        # A finished engine starts over on the next run(); every block is one epoch.
        state = engine.run(data, max_epochs=1, epoch_length=steps)
        if state.iteration != steps or state.output != VALUE:
            raise AssertionError(f"Ignite ran {state.iteration} of {steps} iterations")
        variant.expected_fetches += steps // FETCH_EVERY

    variant.block = block
    return variant


@contextmanager
def overhead_variants(tf: Any, ignite: Any = None) -> Iterator[list[Variant]]:
    """Bare, floor, looprt, TF and Ignite variants over trivial sessions; closed on exit."""
    with ExitStack() as stack:
        raw = TrivialCreator().create_session()
        variants = [Variant("bare session.run", "bare", 0, raw.run, CALLER_FETCHES)]
        for count in HOOK_COUNTS:
            if count:
                floor = hook_calls_floor(TrivialCreator().create_session(), make_hooks(count))
                variants.append(Variant("hook calls only (floor)", "floor", count, floor, CALLER_FETCHES))
        for count in HOOK_COUNTS:
            hooks = make_hooks(count)
            sess = looprt.MonitoredSession(session_creator=TrivialCreator(), hooks=hooks)
            stack.callback(sess.close)
            variants.append(
                Variant("looprt.MonitoredSession", "looprt", count, sess.run, CALLER_FETCHES, hooks)
            )
        if tf is not None:
            stack.enter_context(tf.Graph().as_default())
            for count in HOOK_COUNTS:
                hooks = make_hooks(count)
                tf_sess = tf.compat.v1.train.MonitoredSession(session_creator=TrivialCreator(), hooks=hooks)
                stack.callback(tf_sess.close)
                variants.append(
                    Variant("tf.train.MonitoredSession", "tf", count, tf_sess.run, CALLER_FETCHES, hooks)
                )
        if ignite is not None:
            variants.extend(ignite_variant(ignite, count) for count in HOOK_COUNTS)
        for variant in variants:  # a run must give the caller exactly the constant
            if variant.block is None and variant.run(variant.fetches) != VALUE:
                raise AssertionError(f"{variant.name} returned {variant.run(variant.fetches)!r}")
        yield variants


def overhead_rows(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    bare = next(v for v in variants if v.runtime == "bare")
    peer_overhead = {
        (v.runtime, v.hooks): v.median_ns - bare.median_ns for v in variants if v.runtime in dict(PEERS)
    }
    # The hooks' own calls: zero without hooks, else the floor variant's overhead.
    floor = {v.hooks: v.median_ns - bare.median_ns for v in variants if v.runtime == "floor"}
    floor[0] = 0.0
    rows = []
    for variant in variants:
        overhead_ns = variant.median_ns - bare.median_ns
        row: dict[str, Any] = {
            "variant": variant.name,
            "runtime": variant.runtime,
            "hooks": variant.hooks,
            "per_step_us": variant.median_ns / 1000,
            "overhead_us": None if variant is bare else overhead_ns / 1000,
            "above_floor_us": None,
            "min_us": variant.min_ns / 1000,
            "samples_us": [s / 1000 for s in variant.samples_ns],
        }
        if variant.runtime in ("looprt", "tf") and variant.hooks in floor:
            row["above_floor_us"] = (overhead_ns - floor[variant.hooks]) / 1000
        for peer, _ in PEERS:
            row[f"looprt_{peer}_ratio"] = None
            peer_ns = peer_overhead.get((peer, variant.hooks), 0.0)
            if variant.runtime == "looprt" and peer_ns > 0:
                row[f"looprt_{peer}_ratio"] = overhead_ns / peer_ns
        row["looprt_tf_ratio_above_floor"] = None
        tf_above = peer_overhead.get(("tf", variant.hooks), 0.0) - floor.get(variant.hooks, 0.0)
        if variant.runtime == "looprt" and variant.hooks in floor and tf_above > 0:
            row["looprt_tf_ratio_above_floor"] = (overhead_ns - floor[variant.hooks]) / tf_above
        rows.append(row)
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_overhead_table(rows: Sequence[dict[str, Any]]) -> None:
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        hooks = "-" if row["runtime"] == "bare" else str(row["hooks"])
        print(
            f"{row['variant']:<28} {hooks:>5} {row['per_step_us']:>12.3f} "
            f"{_fmt(row['overhead_us'], '.3f'):>12} {_fmt(row['looprt_tf_ratio'], '.3f'):>10} "
            f"{_fmt(row['looprt_ignite_ratio'], '.3f'):>14} {row['min_us']:>10.3f}"
        )


def target_verdicts(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each peer: looprt's overhead ratios at TARGET_HOOKS and whether all are <= TARGET_RATIO.

    ``met`` is None when the peer's figures are missing (not installed or skipped).
    """
    verdicts = {}
    for peer, _ in PEERS:
        ratios = {
            row["hooks"]: row[f"looprt_{peer}_ratio"]
            for row in rows
            if row["runtime"] == "looprt"
            and row.get("role", "hooks") == "hooks"  # table 3's bare and A/A rows are not looprt's figures
            and row["hooks"] in TARGET_HOOKS
        }
        met = None
        if ratios and all(ratio is not None for ratio in ratios.values()):
            met = all(ratio <= TARGET_RATIO for ratio in ratios.values())
        verdicts[peer] = {
            "ratio_limit": TARGET_RATIO, "hooks": list(TARGET_HOOKS), "ratios": ratios, "met": met
        }
    return verdicts


def print_targets(verdicts: dict[str, dict[str, Any]], judged: bool = True) -> None:
    """One line per peer: the ratios, and (``judged``) whether the target is met."""
    hooks = ", ".join(map(str, TARGET_HOOKS))
    for peer, name in PEERS:
        verdict = verdicts[peer]
        if judged:
            line = f"target: looprt overhead <= {TARGET_RATIO} x {name}'s at {hooks} hooks (standard hooks): "
        else:
            line = f"trivial session (no target): looprt overhead / {name}'s at {hooks} hooks: "
        if verdict["met"] is None:
            print(line + f"not checked (no {name} figures)")
            continue
        detail = ", ".join(f"{h} hooks {r:.3f}" for h, r in verdict["ratios"].items())
        print(line + (("MET" if verdict["met"] else "NOT MET") + " (" if judged else "(") + detail + ")")


def print_above_floor(rows: Sequence[dict[str, Any]]) -> None:
    """The overhead left once the hooks' own calls (the floor rows) are taken out."""
    parts = []
    for row in rows:
        if row["runtime"] == "looprt" and row["above_floor_us"] is not None:
            tf_row = next((r for r in rows if r["runtime"] == "tf" and r["hooks"] == row["hooks"]), None)
            part = f"{row['hooks']} hooks: looprt {row['above_floor_us']:.3f} us"
            if tf_row is not None:
                part += f", TF {tf_row['above_floor_us']:.3f} us"
            if row["looprt_tf_ratio_above_floor"] is not None:
                part += f", ratio {row['looprt_tf_ratio_above_floor']:.3f}"
            parts.append(part)
    print("overhead beyond the hooks' own calls (variant - floor): " + "; ".join(parts))


# --- table 3: each runtime's standard hooks on its native session ---------------------------


@dataclass
class StandardRuntime:
    """One runtime's variants in table 3: its bare run, an A/A copy of it, and 0/5/20 hooks."""

    runtime: str
    bare: Variant
    again: Variant
    hooked: list[Variant]


def _train() -> dict[str, float]:
    """The trivial training step of table 3: a constant loss (looprt and Ignite call this function)."""
    return {"loss": LOSS}


def _standard_program() -> tuple[looprt.Program, looprt.Step]:
    prog = looprt.Program(backend="numpy", name="standard")
    return prog, prog.step(outputs=("loss",))(_train)


def _fill(count: int, standard: list[Any], filler: Callable[[], Any]) -> list[Any]:
    """``count`` hooks: none, else the standard ones followed by fillers."""
    return [] if count == 0 else standard + [filler() for _ in range(count - len(standard))]


def looprt_standard(count: int) -> tuple[Variant, Callable[[], None]]:
    prog, step = _standard_program()
    standard = [
        looprt.LoggingTensorHook({"loss": step.loss}, every_n_iter=FETCH_EVERY),
        looprt.NanTensorHook(step.loss),
        looprt.StepCounterHook(every_n_steps=FETCH_EVERY),
    ]
    hooks = _fill(count, standard, lambda: FetchEveryHook({"x": prog.global_step}))
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
    sess = looprt.MonitoredSession(session_creator=creator, hooks=hooks)
    fillers = [hook for hook in hooks if isinstance(hook, FetchEveryHook)]
    return Variant("looprt.MonitoredSession", "looprt", count, sess.run, step, fillers), sess.close


def looprt_standard_runtime(stack: ExitStack) -> StandardRuntime:
    bares = []
    for name in ("looprt.ProgramSession (bare)", "looprt.ProgramSession (A/A)"):
        prog, step = _standard_program()
        raw = looprt.ProgramSession(prog)
        stack.callback(raw.close)
        bares.append(Variant(name, "looprt", 0, raw.run, step))
    hooked = []
    for count in HOOK_COUNTS:
        variant, close = looprt_standard(count)
        stack.callback(close)
        hooked.append(variant)
    return StandardRuntime("looprt", bares[0], bares[1], hooked)


def tf_standard_runtime(tf: Any, stack: ExitStack) -> StandardRuntime:
    """TF's own hooks in ``tf.compat.v1.train.MonitoredSession``, each in a graph of its own."""
    v1 = tf.compat.v1

    def graph() -> tuple[Any, Any, Any]:
        global_step = v1.train.get_or_create_global_step()
        return global_step, v1.assign_add(global_step, 1), tf.constant(LOSS, name="loss")

    bares = []
    for name in ("tf.Session (bare)", "tf.Session (A/A)"):
        with tf.Graph().as_default() as g:
            _, train_op, _ = graph()
            sess = v1.Session(graph=g)
            sess.run(v1.global_variables_initializer())
        stack.callback(sess.close)
        bares.append(Variant(name, "tf", 0, sess.run, train_op))
    hooked = []
    for count in HOOK_COUNTS:
        with tf.Graph().as_default():
            global_step, train_op, loss = graph()
            standard = [
                v1.train.LoggingTensorHook({"loss": loss}, every_n_iter=FETCH_EVERY),
                v1.train.NanTensorHook(loss),
                v1.train.StepCounterHook(every_n_steps=FETCH_EVERY),
            ]
            hooks = _fill(count, standard, lambda gs=global_step: FetchEveryHook({"x": gs}))
            sess = v1.train.MonitoredSession(hooks=hooks)
        stack.callback(sess.close)
        fillers = [hook for hook in hooks if isinstance(hook, FetchEveryHook)]
        hooked.append(Variant("tf.train.MonitoredSession", "tf", count, sess.run, train_op, fillers))
    return StandardRuntime("tf", bares[0], bares[1], hooked)


class IgniteLogger:
    """Ignite's stand-in for ``LoggingTensorHook``: logs the loss (INFO) when called, every 100."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("bench_overhead.ignite")

    def __call__(self, engine: Any) -> None:
        self.logger.info("loss = %s", engine.state.output["loss"])


class IgniteStepRate:
    """Ignite's stand-in for ``StepCounterHook``: logs iterations per second (INFO), every 100."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("bench_overhead.ignite")
        self.last: tuple[float, int] | None = None

    def __call__(self, engine: Any) -> None:
        now, iteration = time.time(), engine.state.iteration
        if self.last is not None and now > self.last[0]:
            self.logger.info("iterations/sec: %g", (iteration - self.last[1]) / (now - self.last[0]))
        self.last = (now, iteration)


def ignite_standard_runtime(engine_module: Any) -> StandardRuntime:
    """Ignite's ``Engine`` over ``_train``, with its own NaN handler and equivalent others."""
    from ignite.handlers import TerminateOnNan

    def process(engine: Any, batch: Any) -> Any:
        return _train()

    bares = [
        Variant(name, "ignite", 0, functools.partial(process, None, None), NO_FETCHES)
        for name in ("step function (bare)", "step function (A/A)")
    ]
    events = engine_module.Events
    hooked = []
    for count in HOOK_COUNTS:
        engine = engine_module.Engine(process)
        every = events.ITERATION_COMPLETED(every=FETCH_EVERY)
        fillers: list[IgniteHandler] = []
        if count:
            engine.add_event_handler(every, IgniteLogger())
            engine.add_event_handler(events.ITERATION_COMPLETED, TerminateOnNan())
            engine.add_event_handler(every, IgniteStepRate())
            fillers = [IgniteHandler() for _ in range(count - 3)]
            for handler in fillers:
                engine.add_event_handler(every, handler)
        variant = Variant("ignite.engine.Engine", "ignite", count, process, NO_FETCHES, fillers)
        variant.block = _ignite_block(engine, variant)
        hooked.append(variant)
    return StandardRuntime("ignite", bares[0], bares[1], hooked)


def _ignite_block(engine: Any, variant: Variant) -> Callable[[int], None]:
    data = itertools.repeat(None)

    def block(steps: int) -> None:
        state = engine.run(data, max_epochs=1, epoch_length=steps)
        if state.iteration != steps or state.output != {"loss": LOSS}:
            raise AssertionError(f"Ignite ran {state.iteration} of {steps} iterations")
        variant.expected_fetches += steps // FETCH_EVERY

    return block


@contextmanager
def standard_runtimes(tf: Any, ignite: Any) -> Iterator[list[StandardRuntime]]:
    """Every runtime of table 3 (TF's and Ignite's when given), closed on exit.

    TF's loggers are set to ERROR meanwhile: its StepCounterHook reads the global
    step in the same run that increments it, and on this trivial graph warns that
    the step "has not been increased" when the read wins the race.
    """
    with ExitStack() as stack:
        runtimes = [looprt_standard_runtime(stack)]
        if tf is not None:
            tf_logger = tf.get_logger()
            stack.callback(tf_logger.setLevel, tf_logger.level)
            tf_logger.setLevel(logging.ERROR)
            runtimes.append(tf_standard_runtime(tf, stack))
        if ignite is not None:
            runtimes.append(ignite_standard_runtime(ignite))
        yield runtimes


def standard_variants(runtimes: Sequence[StandardRuntime]) -> list[Variant]:
    return [v for r in runtimes for v in (r.bare, r.again, *r.hooked)]


def check_standard_hooks(runtimes: Sequence[StandardRuntime]) -> None:
    """Every filler hook got results back on exactly the runs it fetched."""
    for runtime in runtimes:
        for variant in runtime.hooked:
            for hook in variant.hook_objects:
                expected = variant.expected_fetches if variant.block is not None else hook.expected_fetches()
                if hook.fetched != expected or not expected:
                    raise AssertionError(
                        f"{variant.name} ({variant.hooks} hooks): a hook fetched {expected} times "
                        f"but got {hook.fetched} results"
                    )


def standard_rows(runtimes: Sequence[StandardRuntime]) -> list[dict[str, Any]]:
    """Table 3's rows: overhead = per-step - the runtime's own bare per-step; ratios per hook count."""
    overhead = {
        (r.runtime, v.hooks): v.median_ns - r.bare.median_ns for r in runtimes for v in r.hooked
    }
    ignite = next((r for r in runtimes if r.runtime == "ignite"), None)
    rows = []
    for runtime in runtimes:
        for variant in (runtime.bare, runtime.again, *runtime.hooked):
            role = "bare" if variant is runtime.bare else "aa" if variant is runtime.again else "hooks"
            mine = variant.median_ns - runtime.bare.median_ns
            row: dict[str, Any] = {
                "variant": variant.name,
                "runtime": runtime.runtime,
                "role": role,
                "hooks": variant.hooks,
                "per_step_us": variant.median_ns / 1000,
                "overhead_us": None if role == "bare" else mine / 1000,
                "min_us": variant.min_ns / 1000,
                "samples_us": [s / 1000 for s in variant.samples_ns],
                "looprt_ignite_ratio_from_step": None,
            }
            for peer, _ in PEERS:
                theirs = overhead.get((peer, variant.hooks), 0.0)
                row[f"looprt_{peer}_ratio"] = (
                    mine / theirs if runtime.runtime == "looprt" and role == "hooks" and theirs > 0 else None
                )
            if runtime.runtime == "looprt" and role == "hooks" and ignite is not None:
                # Stricter: looprt's overhead over the plain step function (its raw
                # ProgramSession's own cost included), the same bare as Ignite's.
                theirs = overhead[("ignite", variant.hooks)]
                if theirs > 0:
                    strict = variant.median_ns - ignite.bare.median_ns
                    row["looprt_ignite_ratio_from_step"] = strict / theirs
            rows.append(row)
    return rows


def print_standard_table(rows: Sequence[dict[str, Any]]) -> None:
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        hooks = "-" if row["role"] != "hooks" else str(row["hooks"])
        print(
            f"{row['variant']:<28} {hooks:>5} {row['per_step_us']:>12.3f} "
            f"{_fmt(row['overhead_us'], '.3f'):>12} {_fmt(row['looprt_tf_ratio'], '.3f'):>10} "
            f"{_fmt(row['looprt_ignite_ratio'], '.3f'):>14} {row['min_us']:>10.3f}"
        )
    strict = [
        f"{row['hooks']} hooks {row['looprt_ignite_ratio_from_step']:.3f}"
        for row in rows
        if row["looprt_ignite_ratio_from_step"] is not None
    ]
    if strict:
        print(
            "looprt/Ignite with looprt's overhead taken over the plain step function (ProgramSession's "
            "own cost included): " + ", ".join(strict)
        )


# --- allocation check ------------------------------------------------------------------------


class _BlocksAtStart(looprt.SessionRunHook):
    """First hook: the number of allocated memory blocks when the hooks start."""

    def __init__(self) -> None:
        self.start = 0

    def before_run(self, run_context: Any) -> None:
        self.start = sys.getallocatedblocks()


class _BlocksAtEnd(looprt.SessionRunHook):
    """Last hook: blocks born since ``_BlocksAtStart`` and alive now, per kind of run.

    A run is "quiet" when no hook fetched. Also records whether every quiet run
    showed the hooks one shared ``SessionRunValues``.
    """

    def __init__(self, start: _BlocksAtStart) -> None:
        self._start = start
        self.quiet_runs = self.quiet_max_blocks = self.quiet_total_blocks = 0
        self.fetch_runs = self.fetch_max_blocks = 0
        self._shared: Any = None
        self.quiet_values_objects = 0  # distinct SessionRunValues seen on quiet runs

    def after_run(self, run_context: Any, run_values: Any) -> None:
        born = sys.getallocatedblocks() - self._start.start
        if run_values.results is None and self._shared is not run_values:
            self._shared = run_values
            self.quiet_values_objects += 1
        if run_context.session.merged:
            self.fetch_runs += 1
            self.fetch_max_blocks = max(self.fetch_max_blocks, born)
        else:
            self.quiet_runs += 1
            self.quiet_total_blocks += born
            self.quiet_max_blocks = max(self.quiet_max_blocks, born)


class _RecordingSession:
    """A ``TrivialSession`` that counts the runs given the caller's own fetches object."""

    graph = None

    def __init__(self) -> None:
        self._answer = TrivialSession().run
        self.passed_through = 0
        self.merged = False

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        self.merged = fetches is not CALLER_FETCHES
        if not self.merged:
            self.passed_through += 1
        return self._answer(fetches)

    def close(self) -> None:
        pass


def _peak_bytes_per_run(run: Callable[[Any], Any], steps: int) -> dict[str, float]:
    """tracemalloc: the bytes a run allocates at its peak (median over quiet and fetching runs)."""
    quiet: list[int] = []
    fetching: list[int] = []
    tracemalloc.start()
    try:
        for step in range(steps):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            run(CALLER_FETCHES)
            peak = tracemalloc.get_traced_memory()[1] - before
            (fetching if step % FETCH_EVERY == 0 else quiet).append(peak)
    finally:
        tracemalloc.stop()
    return {
        "quiet_bytes": statistics.median(quiet) if quiet else 0.0,
        "fetching_bytes": statistics.median(fetching) if fetching else 0.0,
    }


def allocation_check(steps: int, tf: Any = None, hooks: int = 5) -> dict[str, Any]:
    """Does looprt build result structures on runs where no hook fetches? (see the docstring)"""
    start = _BlocksAtStart()
    end = _BlocksAtEnd(start)
    creator = TrivialCreator(_RecordingSession)
    sess = looprt.MonitoredSession(session_creator=creator, hooks=[start, *make_hooks(hooks), end])
    raw = creator.sessions[0]
    run = sess.run
    with collector_off():
        for _ in range(min(steps, 1000)):  # warm up: caches, interned ints
            run(CALLER_FETCHES)
        # Counters are not reset: an int past 256 is a heap object, and one that first
        # crossed 256 inside a run would show up as a block born in it.
        end.__init__(start)  # type: ignore[misc]
        passed_before = raw.passed_through
        blocks_before = sys.getallocatedblocks()
        for _ in itertools.repeat(None, steps):
            run(CALLER_FETCHES)
        growth = sys.getallocatedblocks() - blocks_before
    sess.close()
    report: dict[str, Any] = {
        "hooks": hooks,
        "runs": steps,
        "quiet_runs": end.quiet_runs,
        "fetch_runs": end.fetch_runs,
        "quiet_blocks_alive_max": end.quiet_max_blocks,
        "quiet_blocks_alive_total": end.quiet_total_blocks,
        "fetch_blocks_alive_max": end.fetch_max_blocks,
        "quiet_runs_passed_through": raw.passed_through - passed_before,
        "quiet_shared_values_objects": end.quiet_values_objects,
        "live_block_growth": growth,
    }
    # Bytes allocated per run (tracemalloc peak), the same 5 hooks in each runtime.
    traced_steps = max(FETCH_EVERY * 2, min(steps, 20 * FETCH_EVERY))
    floor = hook_calls_floor(TrivialSession(), make_hooks(hooks))
    peaks = {"floor": _peak_bytes_per_run(floor, traced_steps)}
    sess = looprt.MonitoredSession(session_creator=TrivialCreator(), hooks=make_hooks(hooks))
    peaks["looprt"] = _peak_bytes_per_run(sess.run, traced_steps)
    sess.close()
    if tf is not None:
        with tf.Graph().as_default():
            tf_sess = tf.compat.v1.train.MonitoredSession(
                session_creator=TrivialCreator(), hooks=make_hooks(hooks)
            )
            peaks["tf"] = _peak_bytes_per_run(tf_sess.run, traced_steps)
            tf_sess.close()
    report["peak_bytes_per_run"] = peaks
    # A result structure built per quiet run would be at least one block per run; a
    # one-off (a cache warming up) is not.
    report["quiet_blocks_per_run"] = end.quiet_total_blocks / max(end.quiet_runs, 1)
    report["met"] = (
        report["quiet_blocks_per_run"] < 0.01
        and raw.passed_through - passed_before == end.quiet_runs
        and end.quiet_values_objects <= 1
    )
    return report


def print_allocation(report: dict[str, Any]) -> None:
    print(
        f"quiet runs (no hook fetches): {report['quiet_runs']}; blocks born during the hooks and "
        f"alive at the last after_run: {report['quiet_blocks_per_run']:.4f} per run (max "
        f"{report['quiet_blocks_alive_max']}, total {report['quiet_blocks_alive_total']}); "
        "caller's fetches passed through untouched: "
        f"{report['quiet_runs_passed_through']}/{report['quiet_runs']}; distinct SessionRunValues "
        f"shown to hooks: {report['quiet_shared_values_objects']}"
    )
    print(
        f"fetching runs: {report['fetch_runs']}; blocks alive at the last after_run: max "
        f"{report['fetch_blocks_alive_max']} (the merged request, its results, one "
        f"SessionRunValues per fetching hook); live-block growth over all {report['runs']} runs: "
        f"{report['live_block_growth']}"
    )
    peaks = ", ".join(
        f"{name} {p['quiet_bytes']:.0f} B quiet / {p['fetching_bytes']:.0f} B fetching"
        for name, p in report["peak_bytes_per_run"].items()
    )
    print(f"bytes allocated per run (tracemalloc peak, median): {peaks}")
    print(
        "target: quiet runs allocate no result structures: "
        + ("MET" if report["met"] else "NOT MET")
    )


# --- table 2: a NumPy softmax-regression step ---------------------------------------------


def softmax_program(
    batch: int = 64, features: int = 784, classes: int = 10, seed: int = 0
) -> tuple[looprt.Program, looprt.Step, Callable[[], Any]]:
    """The program, its training step, and a bare call of the same function on its own state."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, features)).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]

    def train(x: np.ndarray, y: np.ndarray, lr: float, w: np.ndarray, b: np.ndarray) -> dict[str, float]:
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        loss = float(-(y * np.log(p + 1e-9)).sum() / len(x))
        grad = (p - y) / len(x)
        w -= lr * (x.T @ grad)
        b -= lr * grad.sum(axis=0)
        return {"loss": loss}

    prog = looprt.Program(backend="numpy", name="softmax")
    prog.state("w", np.zeros((features, classes), np.float32))
    prog.state("b", np.zeros(classes, np.float32))
    prog.input("x", default=x)
    prog.input("y", default=y)
    prog.input("lr", default=0.1)
    step = prog.step(outputs=("loss",))(train)
    prog.summary("loss", step.loss)

    # The bare call: the same function on state of its own, with no wrapper around it.
    bare = functools.partial(
        train, x, y, 0.1, np.zeros((features, classes), np.float32), np.zeros(classes, np.float32)
    )
    return prog, step, bare


@contextmanager
def program_variants(training_session: bool = True) -> Iterator[list[Variant]]:
    with ExitStack() as stack:
        bare = softmax_program()[2]
        variants = [Variant("step function (bare)", "bare", 0, bare, NO_FETCHES)]

        prog, step, _ = softmax_program()
        raw = looprt.ProgramSession(prog)
        stack.callback(raw.close)
        variants.append(Variant("looprt.ProgramSession", "raw", 0, raw.run, step.loss))

        prog, step, _ = softmax_program()
        hooks = make_hooks(5, {"x": prog.global_step})
        creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog))
        sess = looprt.MonitoredSession(session_creator=creator, hooks=hooks)
        stack.callback(sess.close)
        variants.append(Variant("looprt.MonitoredSession", "looprt", 5, sess.run, step.loss, hooks))

        if training_session:
            prog, step, _ = softmax_program()
            checkpoint_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mts-"))
            mts = looprt.MonitoredTrainingSession(
                checkpoint_dir=checkpoint_dir, scaffold=looprt.Scaffold(program=prog)
            )
            stack.callback(mts.close)
            variants.append(
                Variant("MonitoredTrainingSession", "training", TRAINING_HOOKS, mts.run, step.loss)
            )
        yield variants


def program_rows(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    bare = variants[0]
    return [
        {
            "variant": v.name,
            "runtime": v.runtime,
            "hooks": v.hooks,
            "per_step_us": v.median_ns / 1000,
            "overhead_us": None if v is bare else (v.median_ns - bare.median_ns) / 1000,
            "ratio_to_bare": v.median_ns / bare.median_ns,
            "min_us": v.min_ns / 1000,
        }
        for v in variants
    ]


def print_program_table(rows: Sequence[dict[str, Any]]) -> None:
    header = f"{'variant':<28} {'hooks':>5} {'per-step us':>12} {'overhead us':>12} {'x bare':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        hooks = "-" if row["runtime"] == "bare" else str(row["hooks"])
        print(
            f"{row['variant']:<28} {hooks:>5} {row['per_step_us']:>12.3f} "
            f"{_fmt(row['overhead_us'], '.3f'):>12} {row['ratio_to_bare']:>8.3f}"
        )


def check_program_hooks(variant: Variant) -> None:
    for hook in variant.hook_objects:
        if hook.fetched != hook.expected_fetches() or not isinstance(hook.last, dict):
            raise AssertionError(f"softmax hook got {hook.fetched} results for {hook.step} runs")


# --- profile -------------------------------------------------------------------------------


def profile_looprt(steps: int, hooks: int = 5, top: int = 15) -> str:
    """cProfile of ``looprt.MonitoredSession.run`` with ``hooks`` hooks, sorted by own time."""
    sess = looprt.MonitoredSession(session_creator=TrivialCreator(), hooks=make_hooks(hooks))
    run = sess.run
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in itertools.repeat(None, steps):
        run(CALLER_FETCHES)
    profiler.disable()
    sess.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.quick else 20_000
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be positive")
    return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--steps", type=int, help="runs per timed block (default 20000; quick 200)")
    parser.add_argument("--repeats", type=int, help="timed blocks per variant (default 7; quick 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--profile", action="store_true", help="also cProfile looprt with 5 hooks")
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow column")
    parser.add_argument("--no-ignite", action="store_true", help="skip the PyTorch Ignite column")
    parser.add_argument("--no-training", action="store_true", help="skip the softmax training table")


def set_blas_threads() -> None:
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")


def standard_table(args: argparse.Namespace, tf: Any, ignite: Any, echo: bool) -> dict[str, Any]:
    """Table 3, measured and (``echo``) printed with the targets' verdicts."""
    steps = max(2 * FETCH_EVERY, args.steps // 4)
    if echo:
        print(
            f"\nstandard hooks on each runtime's own session: median of {args.repeats} blocks of "
            f"{steps} runs each; overhead = per-step - that runtime's bare per-step\n"
        )
    with standard_runtimes(tf, ignite) as runtimes:
        measure(standard_variants(runtimes), steps, args.repeats, min(steps, 2000))
        check_standard_hooks(runtimes)
    rows = standard_rows(runtimes)
    verdicts = target_verdicts(rows)
    if echo:
        print_standard_table(rows)
        print_targets(verdicts)
    return {"steps": steps, "rows": rows, "targets": verdicts}


def collect(args: argparse.Namespace, echo: bool = True) -> dict[str, Any]:
    """Measure everything ``args`` asks for; print the tables when ``echo``; return the report."""
    set_blas_threads()
    import numpy as np  # after the BLAS settings

    say = print if echo else (lambda *a, **k: None)
    tf = None if args.no_tf else import_tensorflow()
    ignite = None if args.no_ignite else import_ignite()
    warmup = min(args.steps, 2000)
    say(
        f"looprt {looprt.__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"TensorFlow {tf.__version__ if tf is not None else '-'}, "
        f"Ignite {ignite.__version__ if ignite is not None else '-'}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    if tf is None:
        why = "--no-tf given" if args.no_tf else "TensorFlow is not installed"
        say(f"{why}: skipping the TensorFlow column")
    if ignite is None:
        why = "--no-ignite given" if args.no_ignite else "pytorch-ignite is not installed"
        say(f"{why}: skipping the Ignite column")
    say(
        f"median of {args.repeats} blocks of {args.steps} runs each; hooks fetch every "
        f"{FETCH_EVERY}th run; overhead = per-step - bare per-step\n"
    )

    with overhead_variants(tf, ignite) as variants:
        measure(variants, args.steps, args.repeats, warmup)
        for variant in variants:
            check_hooks(variant)
    rows = overhead_rows(variants)
    verdicts = target_verdicts(rows)
    if echo:
        print_overhead_table(rows)
        print_targets(verdicts, judged=False)
        print_above_floor(rows)

    standard = standard_table(args, tf, ignite, echo)
    allocation = allocation_check(max(args.steps, 10 * FETCH_EVERY), tf)
    if echo:
        print("\nallocation check, looprt.MonitoredSession with 5 hooks:")
        print_allocation(allocation)

    program_steps = max(1, args.steps // 10)
    prows = None
    if not args.no_training:
        say(
            f"\nNumPy softmax regression step (64x784 -> 10), median of {args.repeats} blocks "
            f"of {program_steps} runs each\n"
        )
        with program_variants() as pvariants:
            measure(pvariants, program_steps, args.repeats, min(program_steps, 200))
            check_program_hooks(pvariants[2])
        prows = program_rows(pvariants)
        if echo:
            print_program_table(prows)

    profile = None
    if args.profile:
        profile = profile_looprt(args.steps)
        say("\ncProfile, looprt.MonitoredSession with 5 hooks, sorted by own time:\n")
        say(profile)

    return {
        "config": {
            "steps": args.steps,
            "repeats": args.repeats,
            "quick": args.quick,
            "fetch_every": FETCH_EVERY,
            "hook_counts": list(HOOK_COUNTS),
        },
        "versions": {
            "looprt": looprt.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "tensorflow": None if tf is None else tf.__version__,
            "ignite": None if ignite is None else ignite.__version__,
        },
        "overhead": rows,
        "target": standard["targets"]["tf"],
        "targets": standard["targets"],
        "trivial_ratios": verdicts,
        "standard": standard,
        "allocation": allocation,
        "softmax": None if prows is None else {"steps": program_steps, "rows": prows},
        "profile": profile,
    }


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
        f.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = collect(args)
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
