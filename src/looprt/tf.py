"""``python -m looprt.tf script.py [args...]``: run an unmodified ``tf.compat.v1`` script on looprt.

The script runs as ``python script.py args...`` would run it (as
``__main__``, with ``sys.argv`` and ``sys.path[0]`` as Python sets them),
after ``looprt.backends.tensorflow.install()`` has routed
``tf.compat.v1.train``'s MonitoredSession family to the drop-in.
``python -m looprt.tf -m package.module args...`` runs a module instead.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys

__all__ = ["main"]

USAGE = "usage: python -m looprt.tf script.py [args...]  |  python -m looprt.tf -m module [args...]"


def main(argv: list[str] | None = None) -> int:
    """Install the drop-in, then run the script (or ``-m`` module) with its arguments."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help") or (args[0] == "-m" and len(args) < 2):
        print(USAGE, file=sys.stderr if not args or args[0] == "-m" else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2

    missing = _missing(args)
    if missing is not None:  # said as Python says it, before TensorFlow is imported
        message, status = missing
        print(f"python -m looprt.tf: {message}", file=sys.stderr)
        return status

    from looprt.backends.tensorflow import install

    install()
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]  # runpy puts the module's path in argv[0]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")
    return 0


def _missing(args: list[str]) -> tuple[str, int] | None:
    """Python's message and exit status when the script or module to run does not exist."""
    if args[0] == "-m":
        try:
            found = importlib.util.find_spec(args[1]) is not None
        except (ImportError, ValueError):  # a missing parent package, an empty name
            found = False
        return None if found else (f"No module named {args[1]}", 1)
    if os.path.exists(args[0]):  # a script, or a folder or zip with __main__.py
        return None
    return f"can't open file {os.path.abspath(args[0])!r}: [Errno 2] No such file or directory", 2


if __name__ == "__main__":
    raise SystemExit(main())
