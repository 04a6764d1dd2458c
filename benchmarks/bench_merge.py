"""Merge-engine cost against the number of leaves and of requesting hooks.

Usage::

    python benchmarks/bench_merge.py [--quick] [--json PATH] [--repeats N]

Table 1 (leaves): a fetch structure of N leaves (a dict of N names, N from 1
to 10,000), through ``looprt.structure.PlanCache``:

* compile: ``plan(structure)`` on an empty cache (a miss: flatten, find the
  unique leaves, generate the rebuild function);
* hit: ``plan(structure)`` on a warm cache (flatten to the cache key and one
  dict lookup): what every run pays;
* rebuild: ``plan.rebuild(values)``: the structure rebuilt around the values;
* per run: hit + rebuild, with its cost per leaf.

A least-squares line ``t = a + b * N`` over all N (with R^2) and the ratio of
consecutive sizes (10x the leaves -> ~10x the time) show the growth is
linear. The tables give medians of ``--repeats`` timings; the fits use each
point's fastest timing, which on a shared machine is the one least disturbed
by other processes.

Table 2 (requesting hooks): ``looprt.MonitoredSession`` with K hooks (1 to
100), each fetching a dict of 10 leaves on every run (5 of them shared with
the caller's 10, 5 its own), over a raw session that plans the merged request
with a ``PlanCache`` and answers every unique leaf with a constant (so the
figures are the merge engine's and the hook machinery's, not a backend's).
Per run and per hook, with a least-squares line in K; the raw session's plan
cache shows one miss (the first run) and a hit on every later run, because
the merged structure repeats.

Table 3 (cache): hits and misses for a structure planned on every run, and
for one with a new leaf on every run (each a miss: what a loop that fetches
new things each step would pay; the cache is bounded, so it does not grow).

The script never fails on speed; it exits 0 after printing the tables.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench_overhead import collector_off, write_json

import looprt
from looprt.structure import PlanCache

LEAF_COUNTS = (1, 10, 100, 1000, 10_000)
HOOK_COUNTS = (1, 2, 5, 10, 20, 50, 100)
LEAVES_PER_HOOK = 10
SHARED_PER_HOOK = 5
VALUE = 1.0
# Each timing runs long enough to read (about this many leaf-visits), at least once.
WORK_PER_TIMING = 200_000
LINEAR_R2 = 0.99  # the fit that counts as linear


# --- timing ------------------------------------------------------------------------------


def per_call_ns(call: Callable[[], Any], calls: int, repeats: int) -> tuple[float, float]:
    """(median, fastest) over ``repeats`` of the per-call nanoseconds of ``calls`` calls of ``call()``."""
    samples = []
    for _ in range(repeats):
        with collector_off():
            start = time.perf_counter_ns()
            for _ in itertools.repeat(None, calls):
                call()
            samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples), min(samples)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least squares ``y = intercept + slope * x`` and its R^2 (1.0 for a perfect line)."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else 0.0
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - residual / total if total else 1.0}


def growth_ratios(xs: Sequence[float], ys: Sequence[float]) -> list[float]:
    """(y[i+1] / y[i]) / (x[i+1] / x[i]): 1.0 where the cost grows exactly as x."""
    return [(ys[i + 1] / ys[i]) / (xs[i + 1] / xs[i]) for i in range(len(xs) - 1)]


# --- table 1: leaves -----------------------------------------------------------------------


def structure_of(leaves: int) -> dict[str, str]:
    return {f"k{i}": f"leaf{i}" for i in range(leaves)}


def leaf_rows(leaf_counts: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for count in leaf_counts:
        structure = structure_of(count)
        calls = max(1, WORK_PER_TIMING // count)
        compile_calls = max(1, calls // 20)  # codegen is slower per leaf; fewer of them

        def compile_once(structure: Any = structure) -> Any:
            return PlanCache().plan(structure)

        cache = PlanCache()
        plan = cache.plan(structure)
        values = [VALUE] * len(plan.leaves)
        if plan.rebuild(values) != dict.fromkeys(structure, VALUE):
            raise AssertionError(f"{count} leaves: the rebuilt structure differs")
        hits_before = cache.hits

        def hit(cache: PlanCache = cache, structure: Any = structure) -> Any:
            return cache.plan(structure)

        def rebuild(plan: Any = plan, values: list[float] = values) -> Any:
            return plan.rebuild(values)

        compile_ns, compile_min = per_call_ns(compile_once, compile_calls, repeats)
        hit_ns, hit_min = per_call_ns(hit, calls, repeats)
        rebuild_ns, rebuild_min = per_call_ns(rebuild, calls, repeats)
        row = {
            "leaves": count,
            "compile_us": compile_ns / 1000,
            "hit_us": hit_ns / 1000,
            "rebuild_us": rebuild_ns / 1000,
            "run_us": (hit_ns + rebuild_ns) / 1000,
            "compile_min_us": compile_min / 1000,
            "run_min_us": (hit_min + rebuild_min) / 1000,
        }
        row["run_ns_per_leaf"] = row["run_min_us"] * 1000 / count
        row["cache_hits"] = cache.hits - hits_before
        row["cache_misses"] = cache.misses
        rows.append(row)
    return rows


def print_leaf_table(rows: Sequence[dict[str, Any]], fits: dict[str, Any]) -> None:
    header = (
        f"{'leaves':>7} {'compile us':>12} {'hit us':>10} {'rebuild us':>11} "
        f"{'per run us':>11} {'fastest':>9} {'ns/leaf':>8} {'hits':>9} {'misses':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['leaves']:>7} {row['compile_us']:>12.2f} {row['hit_us']:>10.2f} "
            f"{row['rebuild_us']:>11.2f} {row['run_us']:>11.2f} {row['run_min_us']:>9.2f} "
            f"{row['run_ns_per_leaf']:>8.1f} "
            f"{row['cache_hits']:>9} {row['cache_misses']:>7}"
        )
    for name, fit in fits.items():
        ratios = ", ".join(f"{r:.2f}" for r in fit["growth"])
        print(
            f"{name}, fastest: t = {fit['intercept']:.3f} us + {fit['slope'] * 1000:.1f} ns x leaves, "
            f"R^2 = {fit['r2']:.4f}; growth per 10x leaves / 10: {ratios}"
        )


# --- table 2: requesting hooks -----------------------------------------------------------


class PlanningSession:
    """A raw session that plans each request with a ``PlanCache`` and answers every leaf."""

    graph = None

    def __init__(self) -> None:
        self.plans = PlanCache()

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        plan = self.plans.plan(fetches)
        return plan.rebuild([VALUE] * len(plan.leaves))

    def close(self) -> None:
        pass


class PlanningCreator:
    def __init__(self) -> None:
        self.sessions: list[PlanningSession] = []

    def create_session(self) -> PlanningSession:
        self.sessions.append(PlanningSession())
        return self.sessions[-1]


class FetchHook(looprt.SessionRunHook):
    """Fetches the same structure on every run and checks what comes back."""

    def __init__(self, fetches: dict[str, str]) -> None:
        self._args = looprt.SessionRunArgs(fetches)
        self._expected = dict.fromkeys(fetches, VALUE)
        self.results = 0

    def before_run(self, run_context: Any) -> Any:
        return self._args

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_values.results != self._expected:
            raise AssertionError(f"a hook got {run_values.results!r}")
        self.results += 1


def hook_fetches(index: int) -> dict[str, str]:
    """Hook ``index``'s request: SHARED_PER_HOOK of the caller's leaves and the rest its own."""
    shared = {f"s{j}": f"leaf{j}" for j in range(SHARED_PER_HOOK)}
    own = {f"o{j}": f"hook{index}/leaf{j}" for j in range(LEAVES_PER_HOOK - SHARED_PER_HOOK)}
    return shared | own


def hook_rows(hook_counts: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    caller = structure_of(LEAVES_PER_HOOK)
    rows = []
    for count in hook_counts:
        hooks = [FetchHook(hook_fetches(i)) for i in range(count)]
        creator = PlanningCreator()
        sess = looprt.MonitoredSession(session_creator=creator, hooks=hooks)
        raw = creator.sessions[0]
        calls = max(1, WORK_PER_TIMING // (LEAVES_PER_HOOK * (count + 1)))
        try:
            per_run, fastest = per_call_ns(lambda sess=sess: sess.run(caller), calls, repeats)
        finally:
            sess.close()
        runs = hooks[0].results
        unique = LEAVES_PER_HOOK + count * (LEAVES_PER_HOOK - SHARED_PER_HOOK)
        rows.append(
            {
                "hooks": count,
                "leaves_requested": LEAVES_PER_HOOK * (count + 1),
                "unique_leaves": unique,
                "run_us": per_run / 1000,
                "run_min_us": fastest / 1000,
                "us_per_hook": per_run / 1000 / count,
                "runs": runs,
                "cache_hits": raw.plans.hits,
                "cache_misses": raw.plans.misses,
            }
        )
    return rows


def print_hook_table(rows: Sequence[dict[str, Any]], fit: dict[str, Any]) -> None:
    header = (
        f"{'hooks':>6} {'leaves asked':>13} {'unique':>7} {'per run us':>11} {'fastest':>9} {'us/hook':>8} "
        f"{'runs':>7} {'hits':>7} {'misses':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['hooks']:>6} {row['leaves_requested']:>13} {row['unique_leaves']:>7} "
            f"{row['run_us']:>11.2f} {row['run_min_us']:>9.2f} {row['us_per_hook']:>8.2f} {row['runs']:>7} "
            f"{row['cache_hits']:>7} {row['cache_misses']:>7}"
        )
    ratios = ", ".join(f"{r:.2f}" for r in fit["growth"])
    print(
        f"per run, fastest: t = {fit['intercept']:.2f} us + {fit['slope']:.3f} us x hooks, "
        f"R^2 = {fit['r2']:.4f}; "
        f"growth relative to hooks: {ratios}"
    )


# --- table 3: the plan cache ---------------------------------------------------------------


def cache_rows(runs: int, repeats: int) -> list[dict[str, Any]]:
    """Plan ``runs`` x ``repeats`` fetches: the same structure each time, or a new leaf each time."""
    rows = []
    for name, make in (
        ("repeated structure", lambda i: {"loss": "loss", "step": "global_step"}),
        ("new leaf every run", lambda i: {"loss": "loss", "step": f"leaf{i}"}),
    ):
        cache = PlanCache()
        numbers = itertools.count()

        def plan_next(cache: PlanCache = cache, make: Any = make, numbers: Any = numbers) -> Any:
            return cache.plan(make(next(numbers)))

        cost, _ = per_call_ns(plan_next, runs, repeats)
        rows.append(
            {
                "case": name,
                "runs": runs * repeats,
                "hits": cache.hits,
                "misses": cache.misses,
                "cached_plans": len(cache),
                "plan_us": cost / 1000,
            }
        )
    return rows


def print_cache_table(rows: Sequence[dict[str, Any]]) -> None:
    header = f"{'case':<22} {'runs':>7} {'hits':>8} {'misses':>8} {'cached plans':>13} {'plan() us':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['case']:<22} {row['runs']:>7} {row['hits']:>8} {row['misses']:>8} "
            f"{row['cached_plans']:>13} {row['plan_us']:>10.2f}"
        )


# --- main ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat, for a smoke test")
    parser.add_argument("--repeats", type=int, help="timings per point, the median kept (default 5; quick 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    return args


def collect(args: argparse.Namespace, echo: bool = True) -> dict[str, Any]:
    """Measure the three tables; print them when ``echo``; return the report."""
    leaf_counts = LEAF_COUNTS[:3] if args.quick else LEAF_COUNTS
    hook_counts = HOOK_COUNTS[:3] if args.quick else HOOK_COUNTS
    if echo:
        print(
            f"looprt {looprt.__version__}, Python {platform.python_version()}; {platform.machine()}, "
            f"{os.cpu_count()} CPUs; median of {args.repeats} timings per point\n"
        )
    leaves = leaf_rows(leaf_counts, args.repeats)
    xs = [row["leaves"] for row in leaves]
    leaf_fits = {}
    # The fits use each point's fastest timing: on a shared machine the median carries
    # other processes' interference, which is not the engine's growth.
    for name, key in (("per run (hit + rebuild)", "run_min_us"), ("compile (miss)", "compile_min_us")):
        ys = [row[key] for row in leaves]
        leaf_fits[name] = {**linear_fit(xs, ys), "growth": growth_ratios(xs, ys)}
    if echo:
        print("Table 1: plan cost against the number of leaves (a dict of N names)\n")
        print_leaf_table(leaves, leaf_fits)

    hooks = hook_rows(hook_counts, args.repeats)
    ks = [row["hooks"] for row in hooks]
    ys = [row["run_min_us"] for row in hooks]
    hook_fit = {**linear_fit(ks, ys), "growth": growth_ratios(ks, ys)}
    if echo:
        print(
            f"\nTable 2: looprt.MonitoredSession run against the number of hooks, each fetching "
            f"{LEAVES_PER_HOOK} leaves ({SHARED_PER_HOOK} shared with the caller's {LEAVES_PER_HOOK})\n"
        )
        print_hook_table(hooks, hook_fit)

    cache = cache_rows(100 if args.quick else 10_000, args.repeats)
    if echo:
        print("\nTable 3: the plan cache: one structure planned every run, or a new one every run\n")
        print_cache_table(cache)

    linear = all(fit["r2"] >= LINEAR_R2 for fit in (*leaf_fits.values(), hook_fit))
    repeated = hooks[-1]
    cache_hit = repeated["cache_misses"] == 1 and repeated["cache_hits"] == repeated["runs"] - 1
    if echo:
        print(
            f"\nlinear growth (R^2 >= {LINEAR_R2} in leaves and in hooks): {'YES' if linear else 'NO'}; "
            f"a repeated merged structure hits the plan cache ({repeated['hooks']} hooks: "
            f"{repeated['cache_hits']} hits, {repeated['cache_misses']} miss): "
            f"{'YES' if cache_hit else 'NO'}"
        )
    return {
        "config": {"quick": args.quick, "repeats": args.repeats},
        "versions": {"looprt": looprt.__version__, "python": platform.python_version()},
        "leaves": leaves,
        "leaf_fits": leaf_fits,
        "hooks": hooks,
        "hook_fit": hook_fit,
        "cache": cache,
        "linear": linear,
        "cache_hit": cache_hit,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = collect(args)
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
