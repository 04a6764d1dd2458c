"""Every benchmark in one process, summed up in one table (``nox -s bench`` runs this).

Usage::

    python benchmarks/bench_all.py [--quick] [--verbose] [--json PATH]
                                   [--no-tf] [--no-ignite] [--no-torch]

Runs, in order, ``bench_overhead`` (per-step overhead against TF's
``MonitoredSession`` and Ignite's ``Engine``, the allocation check, the NumPy
softmax step bare and under looprt), ``bench_merge`` (the merge engine against
leaves and requesting hooks, the plan cache), ``bench_memory`` (10,000 steps,
20 hooks, a checkpoint every 1,000) and, where PyTorch is installed,
``bench_torch`` (a PyTorch MLP step bare and under
``MonitoredTrainingSession``), each with its own defaults (``--quick``: each
one's smoke-test sizes), and prints one table: a row per figure, with what it
is compared with, the ratio, the target and whether it is met.
``--verbose`` also prints each benchmark's own tables; ``--json`` writes
every benchmark's full report. Never fails on speed: exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_memory
import bench_merge
import bench_overhead

import looprt

COLUMNS = (("benchmark", 9), ("case", 52), ("looprt", 16), ("reference", 11), ("ratio", 7), ("target", 9))


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} us"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ok(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def row(benchmark: str, case: str, looprt_value: str, reference: str = "-", ratio: str = "-",
        target: str = "-", met: bool | None = None) -> dict[str, str]:
    return {
        "benchmark": benchmark, "case": case, "looprt": looprt_value, "reference": reference,
        "ratio": ratio, "target": target, "met": _ok(met),
    }


def overhead_summary(report: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    # The targets are judged on the standard hooks over each runtime's own session; the
    # trivial-session rows (fetch-every-100 hooks) are shown for reference.
    tables = (
        ("standard hooks", report["standard"]["rows"], True),
        ("overhead/step", report["overhead"], False),
    )
    for label, table, targeted in tables:
        by_key = {(r["runtime"], r["hooks"]): r for r in table if r.get("role", "hooks") == "hooks"}
        for peer, name in (("tf", "tf.train.MonitoredSession"), ("ignite", "ignite.engine.Engine")):
            for hooks in bench_overhead.HOOK_COUNTS:
                mine, theirs = by_key.get(("looprt", hooks)), by_key.get((peer, hooks))
                if mine is None or theirs is None:
                    continue
                ratio = mine[f"looprt_{peer}_ratio"]
                judged = targeted and hooks in bench_overhead.TARGET_HOOKS
                rows.append(
                    row(
                        "overhead",
                        f"{label}, {hooks} hooks, vs {name}",
                        _us(mine["overhead_us"]),
                        _us(theirs["overhead_us"]),
                        _ratio(ratio),
                        f"<= {bench_overhead.TARGET_RATIO}" if judged else "-",
                        None if not judged or ratio is None else ratio <= bench_overhead.TARGET_RATIO,
                    )
                )
    alloc = report["allocation"]
    rows.append(
        row(
            "alloc",
            f"result blocks per quiet run ({alloc['hooks']} hooks)",
            f"{alloc['quiet_blocks_per_run']:.4f}",
            target="0",
            met=alloc["met"],
        )
    )
    peaks = alloc["peak_bytes_per_run"]
    if "tf" in peaks:
        mine, theirs = peaks["looprt"]["quiet_bytes"], peaks["tf"]["quiet_bytes"]
        rows.append(
            row(
                "alloc",
                f"bytes allocated per quiet run ({alloc['hooks']} hooks), vs TF",
                f"{mine:.0f} B",
                f"{theirs:.0f} B",
                _ratio(mine / theirs if theirs else None),
            )
        )
    softmax = report["softmax"]
    if softmax is not None:
        bare = softmax["rows"][0]
        for r in softmax["rows"][1:]:
            rows.append(
                row(
                    "softmax",
                    f"{r['variant']}, {r['hooks']} hooks, vs bare step",
                    _us(r["per_step_us"]),
                    _us(bare["per_step_us"]),
                    _ratio(r["ratio_to_bare"]),
                )
            )
    return rows


def merge_summary(report: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    leaves = report["leaves"]
    span = f"{leaves[0]['leaves']}..{leaves[-1]['leaves']} leaves"
    for name, fit in report["leaf_fits"].items():
        rows.append(
            row(
                "merge",
                f"{name.split(' (')[0]}: per leaf, {span} (ratio: R^2)",
                f"{fit['slope'] * 1000:.1f} ns",
                ratio=f"{fit['r2']:.4f}",
                target=f">={bench_merge.LINEAR_R2}",
                met=fit["r2"] >= bench_merge.LINEAR_R2,
            )
        )
    hooks = report["hooks"]
    fit = report["hook_fit"]
    rows.append(
        row(
            "merge",
            f"merged run: per hook, {hooks[0]['hooks']}..{hooks[-1]['hooks']} hooks (ratio: R^2)",
            f"{fit['slope']:.3f} us",
            ratio=f"{fit['r2']:.4f}",
            target=f">={bench_merge.LINEAR_R2}",
            met=fit["r2"] >= bench_merge.LINEAR_R2,
        )
    )
    last = hooks[-1]
    rows.append(
        row(
            "merge",
            f"plan cache: repeated merged structure, {last['hooks']} hooks",
            f"{last['cache_hits']} hit/{last['cache_misses']} miss",
            target="1 miss",
            met=report["cache_hit"],
        )
    )
    return rows


def memory_summary(report: dict[str, Any]) -> list[dict[str, str]]:
    first, last = report["samples"][0], report["samples"][-1]
    growth = report["growth"]
    rows = [
        row(
            "memory",
            f"peak RSS at step {last['step']}, vs at step {first['step']}",
            f"{last['peak_rss_mib']:.1f} MiB",
            f"{first['peak_rss_mib']:.1f} MiB",
            f"{last['peak_rss_mib'] / first['peak_rss_mib']:.3f}",
            f"+<{bench_memory.FLAT_RSS_MIB:g}MiB",
            growth["peak_rss_mib"] < bench_memory.FLAT_RSS_MIB,
        )
    ]
    if growth["traced_current_bytes"] is not None:
        rows.append(
            row(
                "memory",
                f"traced memory growth, step {first['step']} to {last['step']}",
                f"{growth['traced_current_bytes'] / 1024:+.1f} KiB",
                target=f"<{bench_memory.FLAT_TRACED_BYTES // 1024}KiB",
                met=growth["traced_current_bytes"] < bench_memory.FLAT_TRACED_BYTES,
            )
        )
    return rows


def torch_report(quick: bool, echo: bool) -> dict[str, Any] | None:
    """``bench_torch``'s report (its tables printed only when ``echo``); None without PyTorch."""
    try:
        import bench_torch
    except ImportError:
        return None
    out = io.StringIO()
    with contextlib.redirect_stdout(sys.stdout if echo else out):
        report: dict[str, Any] = bench_torch.main(["--quick"] if quick else [])
    return report


def torch_summary(report: dict[str, Any] | None) -> list[dict[str, str]]:
    if report is None:
        return []
    rows = []
    by_variant = {r.get("variant"): r for r in report.get("rows", [])}
    bare = by_variant.get("bare", {})
    target = report.get("target", {})
    for name, r in by_variant.items():
        if name == "bare" or "looprt_us" not in r:
            continue
        limit = target.get("ratio") if name == "MonitoredTrainingSession" else None
        low, high = r.get("overhead_interval_us", (math.nan, math.nan))
        rows.append(
            row(
                "torch",
                f"MLP step: {name}, measured overhead (90%: {low:.0f}..{high:.0f} us)",
                _us(r["overhead_us"]),
                _us(bare.get("per_step_us")),
                f"{r['overhead_ratio']:.4f}",
                "-" if limit is None else f"<{limit}",
                None if limit is None else r["overhead_ratio"] < limit,
            )
        )
        rows.append(
            row(
                "torch",
                f"MLP step: {name}, looprt's own time (hot)",
                _us(r["looprt_us"]),
                _us(bare.get("per_step_us")),
                f"{r['looprt_ratio']:.4f}",
                "-",
                None,
            )
        )
    peers = report.get("peers")
    if peers:
        by_peer = {r["variant"]: r for r in peers["rows"]}
        mine = by_peer["MonitoredTrainingSession loop"]
        for name, r in by_peer.items():
            if r["looprt_ratio"] is not None:
                rows.append(
                    row(
                        "torch",
                        f"MLP blocks: MTS overhead vs {name}",
                        _us(mine["overhead_us"]),
                        _us(r["overhead_us"]),
                        _ratio(r["looprt_ratio"]),
                    )
                )
    return rows


def print_table(rows: Sequence[dict[str, str]]) -> None:
    header = " ".join(f"{title:<{width}}" for title, width in COLUMNS) + " met"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(" ".join(f"{r[title]:<{width}}" for title, width in COLUMNS) + f" {r['met']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark's smoke-test sizes")
    parser.add_argument("--verbose", action="store_true", help="also print each benchmark's own tables")
    parser.add_argument("--json", metavar="PATH", help="also write every report to PATH as JSON")
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow comparison")
    parser.add_argument("--no-ignite", action="store_true", help="skip the PyTorch Ignite comparison")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch MLP benchmark")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = ["--quick"] if args.quick else []
    overhead_args = bench_overhead.parse_args(
        [*quick, *(["--no-tf"] if args.no_tf else []), *(["--no-ignite"] if args.no_ignite else [])]
    )
    reports: dict[str, Any] = {}
    reports["overhead"] = bench_overhead.collect(overhead_args, echo=args.verbose)
    if args.verbose:
        print()
    reports["merge"] = bench_merge.collect(bench_merge.parse_args(quick), echo=args.verbose)
    if args.verbose:
        print()
    reports["memory"] = bench_memory.collect(bench_memory.parse_args(quick), echo=args.verbose)
    if args.verbose:
        print()
    reports["torch"] = None if args.no_torch else torch_report(args.quick, echo=args.verbose)
    if args.verbose and reports["torch"] is not None:
        print()

    versions = reports["overhead"]["versions"]
    print(
        f"looprt {looprt.__version__}, Python {platform.python_version()}, NumPy {versions['numpy']}, "
        f"TensorFlow {versions['tensorflow'] or '-'}, Ignite {versions['ignite'] or '-'}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs{' (quick: smoke-test sizes)' if args.quick else ''}\n"
    )
    rows = overhead_summary(reports["overhead"]) + merge_summary(reports["merge"])
    rows += memory_summary(reports["memory"]) + torch_summary(reports["torch"])
    print_table(rows)
    missed = [r["case"] for r in rows if r["met"] == "NO"]
    print(f"\n{len(rows)} figures; targets missed: {', '.join(missed) if missed else 'none'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": rows, "reports": reports}, f, indent=2, default=str)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
