"""The program model: the eager stand-in for a TF graph, and the session that runs it.

``Program`` names inputs, state and steps (``looprt.program.handles``);
``ProgramSession`` (``looprt.program.session``) evaluates fetches of a
program; ``ProgramBackend`` (``looprt.program.backend``) is the default
backend code the NumPy, PyTorch and TensorFlow adapters build on.
"""

from looprt.program.backend import ProgramBackend
from looprt.program.handles import Handle, Input, Output, State, Step
from looprt.program.program import GLOBAL_STEP, Program, get_default_program, wrap

__all__ = [
    "GLOBAL_STEP",
    "Handle",
    "Input",
    "Output",
    "Program",
    "ProgramBackend",
    "State",
    "Step",
    "get_default_program",
    "wrap",
]
