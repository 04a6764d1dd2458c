"""What a user installs: one version, a wheel that works in a clean environment, a quiet library.

The wheel check (slow: it builds, makes a virtual environment and installs
NumPy and tqdm into it) is what ``nox -s package`` runs. Set
``LOOPRT_WHEELHOUSE`` to a folder of wheels to install the dependencies from
it with no index; otherwise they come from the package index (through pip's
cache).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "looprt"


def source_version() -> str:
    """``__version__`` as written in ``src/looprt/__init__.py``, read without importing."""
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise AssertionError("src/looprt/__init__.py sets no __version__")


# -- one version ---------------------------------------------------------------------------------


def test_the_version_is_written_in_one_place() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "looprt.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.dev\d+)?", source_version())


def test_the_changelog_has_the_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{source_version()}]" in changelog
    assert "## [Unreleased]" in changelog


# -- the library logs, never prints --------------------------------------------------------------


# Command-line entry points talk to the terminal: `looprt ...` and `python -m looprt.tf ...`.
_COMMANDS = {SRC / "cli.py", SRC / "__main__.py", SRC / "tf.py"}


def _library_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p not in _COMMANDS)


_LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


def _is_sys_stream(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr in ("stdout", "stderr")
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def test_the_library_never_prints() -> None:
    offenders = []
    for path in _library_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: print")
            # sys.stdout.write(...) / sys.stderr.write(...); flushing them is fine.
            if isinstance(func, ast.Attribute) and func.attr in ("write", "writelines") and _is_sys_stream(func.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(func)}")
    assert not offenders, f"log through the 'looprt' logger instead: {offenders}"


def test_every_logger_is_under_looprt() -> None:
    """Records go to "looprt" or its children, never to the root or another library's logger."""
    offenders = []
    for path in _library_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            where = f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}"
            if getattr(func, "attr", None) == "getLogger" and node.args:
                name = node.args[0]
                under_looprt = isinstance(name, ast.Constant) and (
                    name.value == "looprt" or str(name.value).startswith("looprt.")
                )
                if not under_looprt and not (isinstance(name, ast.Name) and name.id == "__name__"):
                    offenders.append(where)
            if not (isinstance(func, ast.Attribute) and func.attr in _LOG_METHODS):
                continue
            target = func.value
            # logging.info(...): the root logger.
            if isinstance(target, ast.Name) and target.id == "logging":
                offenders.append(where)
            # logging.getLogger().info(...): the root logger too.
            if isinstance(target, ast.Call) and getattr(target.func, "attr", None) == "getLogger" and not target.args:
                offenders.append(where)
    assert not offenders, offenders


QUIET_SCRIPT = """
import numpy as np
import looprt

prog = looprt.Program()
prog.state("calls", np.zeros(()))

@prog.step(outputs=("loss",), advance_global_step=False)
def diverge(calls):
    calls += 1
    return {"loss": float("nan") if calls >= 2 else 1.0}

hooks = [looprt.NanTensorHook(diverge.loss, fail_on_nan_loss=False),  # a WARNING
         looprt.StepCounterHook(every_n_steps=1)]                     # a stalled global step: a WARNING
with looprt.MonitoredSession(looprt.ChiefSessionCreator(looprt.Scaffold(program=prog)), hooks) as sess:
    while not sess.should_stop():
        sess.run(diverge)
"""


def test_the_library_is_quiet_until_logging_is_configured(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )
    assert result.stdout == "" and result.stderr == ""


def test_configured_logging_shows_the_warnings(tmp_path: Path) -> None:
    """The other half: the same warnings reach a user who configures logging."""
    script = "import logging\nlogging.basicConfig(level=logging.WARNING)\n" + QUIET_SCRIPT
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )
    assert "WARNING:looprt.hooks.nan_tensor:Model diverged with loss = NaN." in result.stderr
    assert "global step has not been increased" in result.stderr


# -- the wheel, in a clean environment ----------------------------------------------------------


def _copy_project(destination: Path) -> Path:
    """The files a build reads, without build output, caches or the developer's egg-info."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, destination / name)
    shutil.copytree(
        ROOT / "src", destination / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc")
    )
    return destination


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _venv_bin(env_dir: Path, name: str) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / name


@pytest.mark.slow
def test_the_wheel_installs_in_a_clean_environment_and_runs_the_demo(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, "."], cwd=project)
    (wheel,) = wheels.glob("looprt-*.whl")
    version = source_version()
    assert wheel.name.startswith(f"looprt-{version}-")

    names = zipfile.ZipFile(wheel).namelist()
    assert "looprt/py.typed" in names and "looprt/backends/numpy.py" in names
    assert not any(n.startswith(("tests/", "docs/", "examples/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(f"looprt-{version}.dist-info/entry_points.txt").decode()
    assert "looprt = looprt.cli:main" in entry_points

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = _venv_bin(env_dir, "python")
    install = [python, "-m", "pip", "install", "--quiet"]
    wheelhouse = os.environ.get("LOOPRT_WHEELHOUSE")
    if wheelhouse:
        _run([*install, "--no-index", "--find-links", wheels, "--find-links", wheelhouse, "looprt"], cwd=tmp_path)
    else:
        # The wheel by path, so no index can offer another "looprt"; its dependencies from the index.
        _run([*install, wheel], cwd=tmp_path)

    probe = (
        "import importlib.metadata, sys, looprt\n"
        "print(looprt.__version__, importlib.metadata.version('looprt'))\n"
        "print(looprt.__file__)\n"
        "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))\n"
    )
    lines = _run([python, "-c", probe], cwd=tmp_path).stdout.splitlines()
    assert lines[0] == f"{version} {version}"
    assert Path(lines[1]).resolve().is_relative_to(env_dir.resolve())  # the installed copy, not src/
    assert lines[2] == "[]"

    looprt_command = _venv_bin(env_dir, "looprt")
    demo = _run([looprt_command, "demo", "--steps", "20", "--dir", "demo"], cwd=tmp_path)
    assert "started at step 0, trained to step 20" in demo.stdout
    listing = _run([looprt_command, "checkpoints", "demo"], cwd=tmp_path)
    assert "model.ckpt-20" in listing.stdout and "yes" in listing.stdout
