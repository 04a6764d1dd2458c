"""``looprt demo`` on JAX trains to the NumPy demo's accuracy and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jax")

from looprt.demo import run_demo
from looprt.summary import SummaryWriterCache

pytestmark = pytest.mark.jax


def test_the_jax_demo_matches_the_numpy_demo_and_resumes(tmp_path: Path) -> None:
    try:
        numpy_run = run_demo(str(tmp_path / "numpy"), steps=300, backend="numpy", progress=False)
        jax_run = run_demo(str(tmp_path / "jax"), steps=300, backend="jax", progress=False)
        assert abs(jax_run.test_accuracy - numpy_run.test_accuracy) <= 0.01
        assert jax_run.loss == pytest.approx(numpy_run.loss, rel=1e-3)  # the same batches, in float32
        resumed = run_demo(str(tmp_path / "jax"), steps=50, backend="jax", progress=False)
    finally:
        SummaryWriterCache.clear()
    assert (resumed.first_step, resumed.last_step) == (300, 350)
