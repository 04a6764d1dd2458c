"""A training script for the summary kill tests: summaries every step, checkpoints every 5.

    python tests/reliability/summary_training.py DIR LAST_STEP

Prints ``step N`` after every step (N the global step after it). Its loss is
a function of the global step, so every run and resumed run writes the same
value at the same step.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import looprt


def main() -> int:
    directory, last_step = sys.argv[1], int(sys.argv[2])
    prog = looprt.Program(name="summaries")
    prog.state("w", np.zeros(2))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray, global_step: np.ndarray) -> dict[str, float]:
        time.sleep(0.004)
        w += 1.0
        return {"loss": float(global_step) + 1.0}

    prog.summary("loss", train.loss)
    with looprt.MonitoredTrainingSession(
        checkpoint_dir=directory,
        scaffold=looprt.Scaffold(program=prog),
        hooks=[looprt.StopAtStepHook(last_step=last_step)],
        save_checkpoint_steps=5,
        save_summaries_steps=1,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            sess.run(train)
            print(f"step {int(prog.global_step.value)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
