"""Per-step overhead of ``MonitoredSession.run`` over a bare ``session.run``.

Usage::

    python benchmarks/bench_overhead.py [--quick] [--json PATH] [--profile] [--no-tf]

Table 1 drives one trivial session-like object (``run`` returns a constant;
``close()``; ``graph = None``) made by a creator object, side by side in one
process:

* bare: ``raw.run(fetches)``;
* hook calls only (floor): the bare run plus a direct call of every hook's
  ``before_run`` and ``after_run`` -- what any runtime must spend on the hooks;
* ``looprt.MonitoredSession`` with 0, 5 and 20 hooks;
* ``tf.compat.v1.train.MonitoredSession`` with the same hooks, inside
  ``with tf.Graph().as_default():`` (skipped when TensorFlow is missing).

Each hook fetches ``{"x": "a"}`` on every 100th step (``before_run`` returns
``SessionRunArgs`` when its own counter % 100 == 0, else None) and reads
``run_values.results`` in ``after_run``. The same hook class serves both
runtimes: TF duck-types hooks and ``SessionRunArgs``.

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

Table 2 is a NumPy softmax-regression training step (``looprt.Program``, one
step with output ``loss``, minibatch 64x784 -> 10 classes, synthetic data):
the step function called directly, the raw ``ProgramSession``, and
``looprt.MonitoredSession`` (``ChiefSessionCreator``) with 5 hooks that
fetch the global step every 100th run.

``--profile`` adds a cProfile listing of looprt with 5 hooks (sorted by own
time); ``--no-tf`` leaves TensorFlow out even when it is installed.

The script never fails on speed: it prints whether the target (looprt's
overhead <= 0.25 x TF's at 0 and 5 hooks) is met and exits 0.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import itertools
import json
import os
import platform
import pstats
import statistics
import sys
import time
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
TARGET_HOOKS = (0, 5)
FETCH_EVERY = 100
VALUE = 1.0
CALLER_FETCHES = "loss"
NO_FETCHES: Any = object()  # a variant whose ``run`` takes no argument
HEADER = (
    f"{'variant':<28} {'hooks':>5} {'per-step us':>12} {'overhead us':>12} "
    f"{'looprt/TF':>10} {'min us':>10}"
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

    def __init__(self) -> None:
        self.sessions: list[TrivialSession] = []

    def create_session(self) -> TrivialSession:
        session = TrivialSession()
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


# --- timing ----------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    runtime: str  # "bare", "looprt" or "tf"
    hooks: int
    run: Callable[[Any], Any]
    fetches: Any
    hook_objects: list[FetchEveryHook] = field(default_factory=list)
    samples_ns: list[float] = field(default_factory=list)  # per-step ns, one per repeat

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def min_ns(self) -> float:
        return min(self.samples_ns)


def time_block(run: Callable[[Any], Any], fetches: Any, steps: int) -> float:
    """Per-step nanoseconds of ``steps`` calls of ``run(fetches)``, the collector off.

    With ``fetches`` NO_FETCHES, ``run()`` is called instead.
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
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
    finally:
        if enabled:
            gc.enable()
    return elapsed / steps


def measure(variants: Sequence[Variant], steps: int, repeats: int, warmup: int) -> None:
    # Move what exists now (TensorFlow's modules included) out of the collector's
    # reach, so the collect before each block is quick.
    gc.collect()
    gc.freeze()
    for variant in variants:
        time_block(variant.run, variant.fetches, warmup)
    for repeat in range(repeats):
        order = variants if repeat % 2 == 0 else list(reversed(variants))
        for variant in order:
            variant.samples_ns.append(time_block(variant.run, variant.fetches, steps))


def check_hooks(variant: Variant) -> None:
    """Every hook got its own results back on exactly the runs it fetched."""
    for hook in variant.hook_objects:
        expected = hook.expected_fetches()
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


@contextmanager
def overhead_variants(tf: Any) -> Iterator[list[Variant]]:
    """Bare, looprt and (if ``tf``) TF variants over trivial sessions; closed on exit."""
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
        for variant in variants:  # a run must give the caller exactly the constant
            if variant.run(variant.fetches) != VALUE:
                raise AssertionError(f"{variant.name} returned {variant.run(variant.fetches)!r}")
        yield variants


def overhead_rows(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    bare = next(v for v in variants if v.runtime == "bare")
    tf_overhead = {v.hooks: v.median_ns - bare.median_ns for v in variants if v.runtime == "tf"}
    # The hooks' own calls: zero without hooks, else the floor variant's overhead.
    floor = {v.hooks: v.median_ns - bare.median_ns for v in variants if v.runtime == "floor"}
    floor[0] = 0.0
    rows = []
    for variant in variants:
        overhead = None if variant is bare else (variant.median_ns - bare.median_ns) / 1000
        ratio = ratio_above_floor = above_floor = None
        if variant.runtime in ("looprt", "tf") and variant.hooks in floor:
            above_floor = (variant.median_ns - bare.median_ns - floor[variant.hooks]) / 1000
        if variant.runtime == "looprt" and tf_overhead.get(variant.hooks, 0) > 0:
            ratio = (variant.median_ns - bare.median_ns) / tf_overhead[variant.hooks]
            tf_above = tf_overhead[variant.hooks] - floor.get(variant.hooks, 0.0)
            if variant.hooks in floor and tf_above > 0:
                ratio_above_floor = (variant.median_ns - bare.median_ns - floor[variant.hooks]) / tf_above
        rows.append(
            {
                "variant": variant.name,
                "runtime": variant.runtime,
                "hooks": variant.hooks,
                "per_step_us": variant.median_ns / 1000,
                "overhead_us": overhead,
                "looprt_tf_ratio": ratio,
                "above_floor_us": above_floor,
                "looprt_tf_ratio_above_floor": ratio_above_floor,
                "min_us": variant.min_ns / 1000,
                "samples_us": [s / 1000 for s in variant.samples_ns],
            }
        )
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
            f"{row['min_us']:>10.3f}"
        )


def target_verdict(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ratios = {
        row["hooks"]: row["looprt_tf_ratio"]
        for row in rows
        if row["runtime"] == "looprt" and row["hooks"] in TARGET_HOOKS
    }
    if any(ratio is None for ratio in ratios.values()):
        return {"ratio_limit": TARGET_RATIO, "hooks": list(TARGET_HOOKS), "ratios": ratios, "met": None}
    met = all(ratio <= TARGET_RATIO for ratio in ratios.values())
    return {"ratio_limit": TARGET_RATIO, "hooks": list(TARGET_HOOKS), "ratios": ratios, "met": met}


def print_target(verdict: dict[str, Any]) -> None:
    hooks = " and ".join(map(str, TARGET_HOOKS))
    line = f"target: looprt overhead <= {TARGET_RATIO} x TF's at {hooks} hooks: "
    if verdict["met"] is None:
        print(line + "not checked (no TensorFlow figures)")
        return
    detail = ", ".join(f"{h} hooks {r:.3f}" for h, r in verdict["ratios"].items())
    print(line + ("MET" if verdict["met"] else "NOT MET") + f" ({detail})")


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

    # The bare call: the same function on state of its own, with no wrapper around it.
    bare = functools.partial(
        train, x, y, 0.1, np.zeros((features, classes), np.float32), np.zeros(classes, np.float32)
    )
    return prog, step, bare


@contextmanager
def program_variants() -> Iterator[list[Variant]]:
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
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--steps", type=int, help="runs per timed block (default 20000; quick 200)")
    parser.add_argument("--repeats", type=int, help="timed blocks per variant (default 7; quick 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--profile", action="store_true", help="also cProfile looprt with 5 hooks")
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow column")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.quick else 20_000
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    import numpy as np  # after the BLAS settings

    tf = None if args.no_tf else import_tensorflow()
    warmup = min(args.steps, 2000)
    print(
        f"looprt {looprt.__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"TensorFlow {tf.__version__ if tf is not None else '-'}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    if tf is None:
        why = "--no-tf given" if args.no_tf else "TensorFlow is not installed"
        print(f"{why}: skipping the TensorFlow column")
    print(
        f"median of {args.repeats} blocks of {args.steps} runs each; hooks fetch every "
        f"{FETCH_EVERY}th run; overhead = per-step - bare per-step\n"
    )

    with overhead_variants(tf) as variants:
        measure(variants, args.steps, args.repeats, warmup)
        for variant in variants:
            check_hooks(variant)
    rows = overhead_rows(variants)
    print_overhead_table(rows)
    verdict = target_verdict(rows)
    print_target(verdict)
    print_above_floor(rows)

    program_steps = max(1, args.steps // 10)
    print(
        f"\nNumPy softmax regression step (64x784 -> 10), median of {args.repeats} blocks "
        f"of {program_steps} runs each\n"
    )
    with program_variants() as pvariants:
        measure(pvariants, program_steps, args.repeats, min(program_steps, 200))
        check_program_hooks(pvariants[-1])
    prows = program_rows(pvariants)
    print_program_table(prows)

    profile = None
    if args.profile:
        profile = profile_looprt(args.steps)
        print("\ncProfile, looprt.MonitoredSession with 5 hooks, sorted by own time:\n")
        print(profile)

    if args.json:
        report = {
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
            },
            "overhead": rows,
            "target": verdict,
            "softmax": {"steps": program_steps, "rows": prows},
            "profile": profile,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=str)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
