"""Sessions: tests (per backend), lint, typecheck, bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

INSTALL = ("-c", "constraints.txt")


@nox.session
def tests(session: nox.Session) -> None:
    """The default suite, every backend (the README's test command)."""
    session.install(*INSTALL, "-e", ".[all,test,bench]")
    session.run("pytest", *session.posargs)


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The suite with only NumPy installed: framework tests skip, the core must pass."""
    session.install(*INSTALL, "-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/looprt, as on a fresh machine.

    torch is installed because it ships types (py.typed): without it the torch
    backend's ``type: ignore`` comments go unused and torch values become Any,
    both errors under --strict. TensorFlow and TensorBoard ship none and are
    Any either way (``ignore_missing_imports`` in pyproject.toml), so they are
    not installed; NumPy comes with looprt and is typed.
    """
    session.install(*INSTALL, "-e", ".[torch]", "mypy")
    session.run("mypy", "--strict", "src/looprt", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; prints one table per benchmark."""
    session.install(*INSTALL, "-e", ".[all,test,bench]")
    session.run("python", "benchmarks/bench_all.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, strictly: every page, link and API entry must resolve."""
    session.install(*INSTALL, "-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def package(session: nox.Session) -> None:
    """Build the wheel, install it in a clean venv, run `looprt demo` there."""
    session.install(*INSTALL, "-e", ".[test]")
    session.run("pytest", "-m", "slow", "tests/test_packaging.py", *session.posargs)


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The PyTorch tests, including the slow torchrun restart and example runs."""
    session.install(*INSTALL, "-e", ".[torch,test]")
    session.run("pytest", "-m", "torch", *session.posargs)
    session.run("pytest", "-m", "torch and slow", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """Long fault-injection runs: SIGKILL at every save boundary, thousands of corruptions."""
    session.install(*INSTALL, "-e", ".[all,test]")
    session.run("pytest", "-m", "slow", "tests/reliability", *session.posargs)


@nox.session(name="tests-tensorflow")
def tests_tensorflow(session: nox.Session) -> None:
    """The TensorFlow tests: the drop-in namespace, eager programs, the server cluster."""
    session.install(*INSTALL, "-e", ".[tensorflow,test]")
    session.run("pytest", "-m", "tensorflow", *session.posargs)
