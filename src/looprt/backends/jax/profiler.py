"""``ProfilerHook`` on JAX: a ``jax.profiler`` trace of one run.

Each profiled run is traced into a folder ``jax-trace-<step>`` of the hook's
``output_dir``, laid out as TensorBoard's profile plugin and XProf read it
(``plugins/profile/<run>/<host>.xplane.pb``, plus a Perfetto trace
``perfetto_trace.json.gz`` that https://ui.perfetto.dev opens). JAX
dispatches asynchronously, so the trace waits for the device to finish
before it stops: the run's computations are in it, not only their dispatch.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

__all__ = ["JaxProfiler"]


class JaxProfiler:
    """One run under ``jax.profiler.trace``; ``save`` moves the trace folder into place."""

    kind = "jax.profiler trace"
    filename = "jax-trace-{}"

    def __init__(self, show_dataflow: bool = True, show_memory: bool = False) -> None:
        self._folder: str | None = None

    def __enter__(self) -> JaxProfiler:
        import jax

        self._folder = tempfile.mkdtemp(prefix="looprt-jax-trace-")
        jax.profiler.start_trace(self._folder, create_perfetto_trace=True)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        import jax

        try:
            for array in jax.live_arrays():  # type: ignore[no-untyped-call]  # the run's results: wait until they are computed
                array.block_until_ready()
        finally:
            jax.profiler.stop_trace()  # type: ignore[no-untyped-call]

    def save(self, path: str, step: int, run_metadata: Any) -> None:
        if self._folder is None:
            return
        shutil.rmtree(path, ignore_errors=True)
        shutil.move(self._folder, path)
        self._folder = None
