"""A training run that checkpoints to S3 and kills itself (SIGKILL) at the Nth boundary of a remote save.

    python tests/reliability/storage_killer.py URL RESULT [--kill-at N] [--log LOG]

Run as a subprocess by ``test_storage_kills.py``, which serves S3 (moto's
server, over HTTP) in the test process; the endpoint comes the fsspec way,
from ``FSSPEC_S3_ENDPOINT_URL``. The program is ``killer.py``'s NumPy one
(its data is a function of the global step), so a resumed run computes
exactly what an uninterrupted one does.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import signal
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("result")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--log", default=os.devnull)
    parser.add_argument("--last-step", type=int, default=9)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("killer", Path(__file__).with_name("killer.py"))
    assert spec is not None and spec.loader is not None
    killer = importlib.util.module_from_spec(spec)
    sys.modules["killer"] = killer
    spec.loader.exec_module(killer)

    import looprt
    from looprt.checkpoint import Saver, set_fault_hook

    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    hits = 0

    def on_boundary(name: str, subject: str) -> None:
        nonlocal hits
        os.write(log_fd, f"{name}\t{subject}\n".encode())  # unbuffered: survives the kill
        if hits == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        hits += 1

    set_fault_hook(on_boundary)
    prog, step = killer.PROGRAMS["numpy-sharded"]()
    saver = Saver(prog, max_to_keep=2)
    scaffold = looprt.Scaffold(program=prog, saver=saver)
    hook = looprt.CheckpointSaverHook(args.url, save_steps=3, saver=saver)
    creator = looprt.ChiefSessionCreator(scaffold, checkpoint_dir=args.url)
    with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
        while not sess.should_stop() and sess.run(prog.global_step) < args.last_step:
            sess.run(step)
    with open(args.result, "wb") as f:
        pickle.dump(killer.canonical(prog.backend.state_dict(prog)), f)


if __name__ == "__main__":
    main()
