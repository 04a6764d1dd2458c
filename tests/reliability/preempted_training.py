"""A training script for the preemption tests: trains until SIGTERM, with a ``PreemptionHook``.

    python tests/reliability/preempted_training.py DIR [--grace S] [--hang-at STEP] [--async-save]

Prints ``step N`` after every step, and ``hanging`` before a step that never
returns (``--hang-at``); at the end prints ``ended preempted=<bool> step=<N>``
and exits 0. Logs (INFO) go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

import numpy as np

import looprt
from looprt.hooks.preemption import PreemptionHook


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--hang-at", type=int, default=None)
    parser.add_argument("--async-save", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")

    prog = looprt.Program(name="preempted")
    prog.state("w", np.zeros(4))
    never = threading.Event()

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray, global_step: np.ndarray) -> dict[str, float]:
        if args.hang_at is not None and int(global_step) == args.hang_at:
            print("hanging", flush=True)
            never.wait()  # a step that never returns: only the grace deadline ends the process
        w += 1.0
        return {"loss": float(w.sum())}

    saver_hook = looprt.CheckpointSaverHook(
        args.dir, save_steps=1 if args.hang_at is not None else 1_000_000, async_save=args.async_save
    )
    preemption = PreemptionHook(grace_secs=args.grace)
    creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_dir=args.dir)
    step = 0
    with looprt.MonitoredSession(creator, hooks=[saver_hook, preemption]) as sess:
        while not sess.should_stop() and step < 10_000_000:
            sess.run(train)
            step = int(prog.global_step.value)
            print(f"step {step}", flush=True)
    print(f"ended preempted={preemption.preempted} step={int(prog.global_step.value)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
