"""``ProfilerHook``: profile the runs at chosen global steps with the backend's own profiler.

When it triggers mirrors ``tf.compat.v1.train.ProfilerHook``: never on the
first run; then on the run whose predicted global step (the step read in the
previous run plus one) is due by ``save_steps`` / ``save_secs`` (exactly one;
``clock`` is injectable). A triggered run is asked to trace
(``RunOptions(trace_level=FULL_TRACE)``), and afterwards the profile is saved
for the global step read after the run, with the log line
``"Saving <kind> for <step> into '<path>'."`` on the ``"looprt.hooks.profiler"`` logger.

What profiles is a ``RunProfiler``: a context manager entered at the end of
this hook's ``before_run`` and exited in its ``after_run`` (a hook cannot
wrap the run itself), so it covers the raw session's run and the hook calls
between the two. It is chosen in ``after_create_session`` from the raw
session's ``graph``, first match wins:

1. the ``profiler`` argument (a ``ProfilerFactory``);
2. ``graph.backend.profiler``, if the program's backend provides one;
3. the factory registered for the backend's name (``register_profiler``):
   ``"numpy"``: cProfile, ``profile_<step>.prof`` (open with
   ``python -m pstats`` or snakeviz); ``"torch"``: ``torch.profiler``, a
   Chrome trace ``timeline-<step>.json``; ``"tensorflow"`` (a TF graph): TF's
   timeline ``timeline-<step>.json`` from the run's step stats, plus the run
   metadata in ``output_dir``'s event file, as TF's hook writes them (the
   session must pass TF ``RunOptions``/``RunMetadata`` protos to the TF run);
4. cProfile for any other backend.

If a profiled run raises, its profile is discarded at the next
``before_run``, ``after_create_session`` or ``end``; if the session closes
on that error, a cProfile stays enabled in that thread until then.
"""

from __future__ import annotations

import cProfile
import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from looprt.hooks.session_run_hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from looprt.session.run_options import RunOptions
from looprt.timer import SecondOrStepTimer
from looprt.training_util import get_global_step

__all__ = [
    "CProfileProfiler",
    "ProfilerFactory",
    "ProfilerHook",
    "RunProfiler",
    "TensorFlowTimelineProfiler",
    "TorchProfiler",
    "profiler_for",
    "register_profiler",
]

logger = logging.getLogger(__name__)


class RunProfiler(Protocol):
    """Profiles what runs between ``__enter__`` and ``__exit__``; ``save`` writes it.

    ``kind`` names the result in the log line; ``filename`` is a format
    string taking the global step (``"timeline-{}.json"``).
    """

    kind: str
    filename: str

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    def save(self, path: str, step: int, run_metadata: Any) -> None:
        """Write the profile to ``path``; ``run_metadata`` is what the traced run filled."""


# Called as factory(show_dataflow=..., show_memory=...) once per profiled run.
ProfilerFactory = Callable[..., RunProfiler]


class CProfileProfiler:
    """cProfile of the current thread; saves a pstats file."""

    kind = "profile"
    filename = "profile_{}.prof"

    def __init__(self, show_dataflow: bool = True, show_memory: bool = False) -> None:
        self._profile = cProfile.Profile()

    def __enter__(self) -> CProfileProfiler:
        self._profile.enable()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._profile.disable()

    def save(self, path: str, step: int, run_metadata: Any) -> None:
        self._profile.dump_stats(path)


class TorchProfiler:
    """``torch.profiler`` (CPU, and CUDA when available); saves a Chrome trace.

    ``show_dataflow`` records input shapes, ``show_memory`` tensor memory.
    """

    kind = "timeline"
    filename = "timeline-{}.json"

    def __init__(self, show_dataflow: bool = True, show_memory: bool = False) -> None:
        import torch
        from torch import profiler

        activities = [profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(profiler.ProfilerActivity.CUDA)
        self._profile: Any = profiler.profile(
            activities=activities, record_shapes=show_dataflow, profile_memory=show_memory
        )

    def __enter__(self) -> TorchProfiler:
        self._profile.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._profile.__exit__(*exc_info)

    def save(self, path: str, step: int, run_metadata: Any) -> None:
        self._profile.export_chrome_trace(path)


class TensorFlowTimelineProfiler:
    """TF graph mode: the run traces itself (FULL_TRACE); saves TF's Chrome-trace timeline."""

    kind = "timeline"
    filename = "timeline-{}.json"

    def __init__(self, show_dataflow: bool = True, show_memory: bool = False) -> None:
        self._show_dataflow = show_dataflow
        self._show_memory = show_memory

    def __enter__(self) -> TensorFlowTimelineProfiler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def save(self, path: str, step: int, run_metadata: Any) -> None:
        step_stats = getattr(run_metadata, "step_stats", None)
        if step_stats is None or not hasattr(run_metadata, "SerializeToString"):
            logger.warning(
                "No TensorFlow trace for step %d: the session passed %s as run_metadata, not TF's "
                "RunMetadata proto; nothing written to '%s'.",
                step,
                type(run_metadata).__name__,
                path,
            )
            return
        from tensorflow.python.client import timeline
        from tensorflow.python.summary.writer.writer_cache import FileWriterCache

        trace = timeline.Timeline(step_stats)
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                trace.generate_chrome_trace_format(
                    show_dataflow=self._show_dataflow, show_memory=self._show_memory
                )
            )
        FileWriterCache.get(os.path.dirname(path)).add_run_metadata(run_metadata, f"step_{step}")


_factories: dict[str, ProfilerFactory] = {
    "numpy": CProfileProfiler,
    "torch": TorchProfiler,
    "tensorflow": TensorFlowTimelineProfiler,
}


def register_profiler(backend_name: str, factory: ProfilerFactory) -> None:
    """Make ``ProfilerHook`` use ``factory`` for programs of the backend named ``backend_name``."""
    _factories[backend_name] = factory


def profiler_for(graph: Any) -> ProfilerFactory:
    """The profiler factory for a raw session's ``graph`` (see the module docstring)."""
    backend = getattr(graph, "backend", None)
    own = getattr(backend, "profiler", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    name = getattr(backend, "name", None)
    if name is None and type(graph).__module__.startswith("tensorflow"):
        name = "tensorflow"
    return _factories.get(name or "", CProfileProfiler)


class ProfilerHook(SessionRunHook):
    """Profiles one run every ``save_steps`` steps or ``save_secs`` seconds into ``output_dir``."""

    #: Where the hook logs: this module's logger; the TF drop-in's hooks log on TF's "tensorflow".
    logger: logging.Logger = logger

    def __init__(
        self,
        save_steps: int | None = None,
        save_secs: float | None = None,
        output_dir: str = "",
        show_dataflow: bool = True,
        show_memory: bool = False,
        *,
        clock: Callable[[], float] = time.time,
        profiler: ProfilerFactory | None = None,
    ) -> None:
        self._timer = SecondOrStepTimer(every_secs=save_secs, every_steps=save_steps, clock=clock)
        self._output_dir = output_dir
        self._show_dataflow = show_dataflow
        self._show_memory = show_memory
        self._profiler = profiler
        self._factory: ProfilerFactory = profiler or CProfileProfiler
        self._global_step: Any = None
        self._next_step: Any = None
        self._request = False
        self._active: RunProfiler | None = None

    def begin(self) -> None:
        self._next_step = None

    def after_create_session(self, session: Any, coord: Any) -> None:
        self._discard()
        try:
            self._global_step = get_global_step(session.graph)
        except RuntimeError as error:
            raise RuntimeError("Global step should be created to use ProfilerHook.") from error
        self._factory = self._profiler or profiler_for(session.graph)

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        self._discard()
        self._request = self._next_step is not None and self._timer.should_trigger_for_step(self._next_step)
        known = getattr(run_context, "global_step", None) is not None
        fetches = None if known else {"global_step": self._global_step}
        if not self._request:
            return None if fetches is None else SessionRunArgs(fetches)
        profiler = self._factory(show_dataflow=self._show_dataflow, show_memory=self._show_memory)
        profiler.__enter__()
        self._active = profiler
        return SessionRunArgs(fetches, options=RunOptions(trace_level=RunOptions.FULL_TRACE))

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        try:
            stale_global_step = run_context.global_step
        except AttributeError:  # TF's own run context has none
            stale_global_step = None
        if stale_global_step is None:
            stale_global_step = run_values.results["global_step"]
        if self._next_step is None:
            self._timer.update_last_triggered_step(stale_global_step)
        global_step = stale_global_step + 1
        if self._request:
            profiler = self._active
            self._active = None
            if profiler is not None:
                profiler.__exit__(None, None, None)
            global_step = run_context.session.run(self._global_step)
            self._timer.update_last_triggered_step(global_step)
            if profiler is not None:
                self._save(profiler, global_step, run_values.run_metadata)
        self._next_step = global_step + 1

    def end(self, session: Any) -> None:
        self._discard()

    def _save(self, profiler: RunProfiler, step: Any, run_metadata: Any) -> None:
        path = os.path.join(self._output_dir, profiler.filename.format(step))
        self.logger.info("Saving %s for %d into '%s'.", profiler.kind, step, path)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
        profiler.save(path, int(step), run_metadata)

    def _discard(self) -> None:
        """Stop a profile whose run raised (its ``after_run`` never came)."""
        profiler, self._active = self._active, None
        if profiler is not None:
            profiler.__exit__(None, None, None)
