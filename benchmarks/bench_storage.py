"""Checkpoints on local disk and on object storage: looprt against the same work done by hand.

A 64 MiB state (one float32 torch tensor) is saved and restored

* to a local folder: ``Saver.save`` / ``Saver.restore`` against ``torch.save``
  into a file that is then fsynced (looprt fsyncs too) / ``torch.load``;
* to a local S3 server (moto's, over HTTP, started here): ``Saver.save`` /
  ``restore`` at an ``s3://`` URL against ``torch.save`` to a temporary file
  and s3fs ``put_file`` / ``get_file`` and ``torch.load``.

The variants run interleaved, ``--repeats`` times each; medians are compared
(target: looprt at most 1.3x the hand-done time).

Async saves: a training loop (a torch matmul step) is timed with no save, and
right after ``Saver.save_async`` to S3 while the upload runs (steps for 80%
of the measured upload time, then ``wait_until_finished``); blocks
interleaved, median step times compared (target: within 5%). The
``save_async`` call itself (the host copy of the state) is reported apart.

Prints whether the targets are met and exits 0 either way. ``--quick``: a
4 MiB state and two repeats, for CI (figures are noise).
"""

# ruff: noqa: B023 - every closure over a loop variable is called at once, inside its iteration

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # moto accepts any; botocore wants some
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

SAVE_RESTORE_TARGET = 1.3
STEP_TARGET = 1.05


def _server() -> tuple[Any, str]:
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _program(mib: int) -> Any:
    import torch

    import looprt

    prog = looprt.Program(backend="torch", name="bench_storage")
    prog.state("w", torch.randn(mib * 2**20 // 4))
    return prog


def _save_restore(args: argparse.Namespace, endpoint: str, work: str) -> dict[str, dict[str, float]]:
    """Median seconds of each (target, who, operation)."""
    import boto3
    import s3fs
    import torch

    from looprt.checkpoint import Saver

    options = {"client_kwargs": {"endpoint_url": endpoint}}
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    prog = _program(args.mib)
    tensor = prog.backend.state_dict(prog)["w"]
    savers = {"local": Saver(prog, max_to_keep=2), "s3": Saver(prog, max_to_keep=2, storage_options=options)}
    roots = {"local": os.path.join(work, "looprt"), "s3": "s3://bench/looprt"}
    times: dict[str, list[float]] = {}

    def note(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)

    for step in range(args.repeats):
        for target in ("local", "s3"):
            saver, root = savers[target], roots[target]
            note(
                f"{target} looprt save",
                _timed(lambda: saver.save(None, f"{root}/model.ckpt", global_step=step)),
            )
            path = f"{root}/model.ckpt-{step}"
            note(f"{target} looprt restore", _timed(lambda: saver.restore(None, path)))
            hand = os.path.join(work, f"hand-{target}.pt")
            if target == "local":

                def save_local() -> None:
                    with open(hand, "wb") as f:
                        torch.save({"w": tensor}, f)
                        f.flush()
                        os.fsync(f.fileno())

                note("local hand save", _timed(save_local))
                note("local hand restore", _timed(lambda: torch.load(hand, mmap=False)))
            else:
                key = f"bench/hand/model-{step}.pt"

                def save_s3() -> None:
                    torch.save({"w": tensor}, hand)
                    fs.put_file(hand, key)

                def restore_s3() -> None:
                    fs.get_file(key, hand + ".down")
                    torch.load(hand + ".down")

                note("s3 hand save", _timed(save_s3))
                note("s3 hand restore", _timed(restore_s3))
    for saver in savers.values():
        saver.close()
    return {k: statistics.median(v) for k, v in times.items()}


def _async_steps(args: argparse.Namespace, endpoint: str, upload_secs: float) -> dict[str, float]:
    """Median step time with no save and while an async upload runs; the save_async call's time."""
    import torch

    from looprt.checkpoint import Saver

    options = {"client_kwargs": {"endpoint_url": endpoint}}
    prog = _program(args.mib)
    saver = Saver(prog, max_to_keep=2, storage_options=options)
    a = torch.randn(384, 384)
    b = torch.randn(384, 384)

    def step() -> float:
        start = time.perf_counter()
        torch.mm(a, b)
        return time.perf_counter() - start

    for _ in range(50):
        step()
    quiet: list[float] = []
    busy: list[float] = []
    calls: list[float] = []
    window = max(upload_secs * 0.8, 0.05)
    for block in range(args.repeats):
        stop = time.perf_counter() + window
        while time.perf_counter() < stop:
            quiet.append(step())
        start = time.perf_counter()
        saver.save_async(None, "s3://bench/async/model.ckpt", global_step=block)
        calls.append(time.perf_counter() - start)
        stop = time.perf_counter() + window
        while time.perf_counter() < stop:
            busy.append(step())
        saver.wait_until_finished()
    saver.close()
    return {
        "quiet step us": statistics.median(quiet) * 1e6,
        "step during upload us": statistics.median(busy) * 1e6,
        "save_async call s": statistics.median(calls),
        "steps measured": float(min(len(quiet), len(busy))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="state size in MiB (default 64)")
    parser.add_argument(
        "--repeats", type=int, default=7, help="interleaved repeats of each variant (default 7)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 MiB, 2 repeats")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.mib, args.repeats = 4, 2
    server, endpoint = _server()
    work = tempfile.mkdtemp(prefix="bench-storage-")
    try:
        medians = _save_restore(args, endpoint, work)
        steps = _async_steps(args, endpoint, medians["s3 looprt save"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()
    print(f"{args.mib} MiB state, {args.repeats} interleaved repeats, medians")
    print(f"{'target':8} {'operation':8} {'looprt s':>10} {'by hand s':>10} {'ratio':>7}")
    ratios: dict[str, float] = {}
    for target in ("local", "s3"):
        for op in ("save", "restore"):
            mine, hand = medians[f"{target} looprt {op}"], medians[f"{target} hand {op}"]
            ratios[f"{target} {op}"] = mine / hand
            print(f"{target:8} {op:8} {mine:10.4f} {hand:10.4f} {mine / hand:6.2f}x")
    step_ratio = steps["step during upload us"] / steps["quiet step us"]
    print(
        f"async save: step {steps['quiet step us']:.1f} us quiet, {steps['step during upload us']:.1f} us "
        f"during an upload ({step_ratio:.3f}x; {int(steps['steps measured'])} steps each); "
        f"save_async call {steps['save_async call s'] * 1e3:.1f} ms"
    )
    save_ok = all(r <= SAVE_RESTORE_TARGET for r in ratios.values())
    step_ok = step_ratio <= STEP_TARGET
    print(f"target looprt <= {SAVE_RESTORE_TARGET}x by hand: {'met' if save_ok else 'NOT met'}")
    print(f"target step time during an upload <= {STEP_TARGET}x: {'met' if step_ok else 'NOT met'}")
    if args.json:
        report = {
            "mib": args.mib,
            "repeats": args.repeats,
            "medians_s": medians,
            "ratios": ratios,
            "async": {**steps, "ratio": step_ratio},
            "targets_met": {"save_restore": save_ok, "async_step": step_ok},
        }
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
