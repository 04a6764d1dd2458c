"""A third-party backend installed as a package is found through the ``looprt.backends`` entry point group.

The package is real: a module and a ``<name>.dist-info`` folder with
``METADATA`` and ``entry_points.txt``, on ``sys.path`` as site-packages would
hold it, found by ``importlib.metadata`` exactly as an installed wheel is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import looprt
from looprt.backends import available_backends, get_backend, register_backend, registry

DIST = "looprt_thirdparty"
MODULE = "looprt_thirdparty_backend"
NAME = "thirdparty"

BACKEND_SOURCE = '''
"""A third-party backend: the NumPy adapter under another name, counting its sessions."""
from looprt.backends.numpy import NumpyBackend


class ThirdPartyBackend(NumpyBackend):
    name = "thirdparty"
    sessions_created = 0

    def create_session(self, program, target="", config=None):
        type(self).sessions_created += 1
        return super().create_session(program, target, config)
'''


def install_distribution(site: Path) -> Path:
    """Lay out an installed distribution in ``site``, as pip would; return its dist-info."""
    (site / f"{MODULE}.py").write_text(textwrap.dedent(BACKEND_SOURCE), encoding="utf-8")
    info = site / f"{DIST}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.0\nRequires-Dist: looprt\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[looprt.backends]\n{NAME} = {MODULE}:ThirdPartyBackend\n", encoding="utf-8"
    )
    (info / "top_level.txt").write_text(f"{MODULE}\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")
    return info


def _forget_backend() -> None:
    registry._instances.pop(NAME, None)
    registry._factories.pop(NAME, None)
    sys.modules.pop(MODULE, None)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site-packages folder holding the third-party distribution, on sys.path for this test."""
    site = tmp_path / "site-packages"
    site.mkdir()
    install_distribution(site)
    _forget_backend()
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import and metadata caches
    yield site
    _forget_backend()
    importlib.invalidate_caches()


def test_importlib_metadata_sees_the_distribution(site: Path) -> None:
    assert importlib.metadata.version(DIST) == "1.0"
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="looprt.backends") if ep.name == NAME]
    assert entry.value == f"{MODULE}:ThirdPartyBackend"
    assert entry.dist is not None and entry.dist.name == DIST


def test_get_backend_finds_it_by_name(site: Path) -> None:
    assert NAME in available_backends()
    assert MODULE not in sys.modules  # listing does not import the package
    backend = get_backend(NAME)
    assert type(backend).__name__ == "ThirdPartyBackend" and type(backend).__module__ == MODULE
    assert get_backend(NAME) is backend  # made once, then shared


def test_a_program_runs_on_it_with_hooks_and_checkpoints(site: Path, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    prog = looprt.Program(backend=NAME)
    prog.state("w", np.zeros(2))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray) -> dict[str, float]:
        w += 1.0
        return {"loss": float(w.sum())}

    for last_step in (3, 5):  # the second session restores what the first saved
        creator = looprt.ChiefSessionCreator(looprt.Scaffold(program=prog), checkpoint_dir=run_dir)
        hooks = [looprt.StopAtStepHook(last_step=last_step), looprt.CheckpointSaverHook(run_dir, save_steps=1)]
        with looprt.MonitoredSession(creator, hooks) as sess:
            while not sess.should_stop():
                loss = sess.run(train.loss)

    assert loss == 10.0 and type(prog.backend).sessions_created == 2
    manifest = (tmp_path / "run" / "model.ckpt-5" / "manifest.json").read_text(encoding="utf-8")
    assert f'"backend": "{NAME}"' in manifest


def test_a_registered_factory_wins_over_the_entry_point(site: Path) -> None:
    class Mine(looprt.program.ProgramBackend):
        name = NAME

    register_backend(NAME, Mine)
    assert type(get_backend(NAME)) is Mine
    assert MODULE not in sys.modules


def test_without_the_package_the_name_is_unknown(tmp_path: Path) -> None:
    _forget_backend()
    assert NAME not in available_backends()
    with pytest.raises(ValueError, match="'looprt.backends' entry point group"):
        get_backend(NAME)


def test_a_fresh_interpreter_finds_it(tmp_path: Path) -> None:
    """The way users meet it: a new process with the package on its path, nothing registered."""
    site = tmp_path / "site-packages"
    site.mkdir()
    install_distribution(site)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import looprt

        assert "{MODULE}" not in sys.modules
        prog = looprt.Program(backend="{NAME}")
        total = prog.state("total", np.zeros(()))

        @prog.step()
        def add(total):
            total += 2

        sess = looprt.SingularMonitoredSession(scaffold=looprt.Scaffold(program=prog))
        sess.run(add)
        sess.close()
        print(type(prog.backend).__module__, float(total.value), "{NAME}" in looprt.backends.available_backends())
        """
    )
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(src)])}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [MODULE, "2.0", "True"]
