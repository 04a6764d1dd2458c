"""The ``looprt`` command as a user meets it: one-line errors, exit codes, Ctrl-C, a real terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

import looprt
from looprt.checkpoint import latest_checkpoint
from looprt.cli import main


def looprt_command(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "looprt", *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of stderr that is not a log record, checked to be the only one and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_version() -> None:
    result = looprt_command("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"looprt {looprt.__version__}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--steps", "-5"], "looprt demo: error: argument --steps: must be 0 or more, got -5"),
        (["demo", "--steps", "ten"], "looprt demo: error: argument --steps: must be a whole number"),
        (["demo", "--backend", "jaxx"], "looprt demo: error: argument --backend: invalid choice"),
        (["frobnicate"], "looprt: error: argument command: invalid choice"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = looprt_command(*args)
    assert result.returncode == 2
    assert one_error_line(result).startswith(message)


def test_a_dir_that_is_a_file_or_unwritable_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = looprt_command("demo", "--steps", "5", "--dir", str(tmp_path / "file"))
    assert result.returncode == 2
    assert one_error_line(result) == f"looprt: error: --dir {tmp_path / 'file'}: is a file, not a directory"
    for unwritable in (tmp_path / "file" / "sub", Path("/proc/looprt-cannot-be-here")):
        result = looprt_command("demo", "--steps", "5", "--dir", str(unwritable))
        assert result.returncode == 1
        assert one_error_line(result).startswith("looprt: error: ")


def test_checkpoints_tells_a_missing_path_a_file_and_an_empty_directory_apart(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    missing = looprt_command("checkpoints", str(tmp_path / "nope"))
    assert (missing.returncode, one_error_line(missing)) == (
        2, f"looprt: error: {tmp_path / 'nope'}: no such directory"
    )
    file = looprt_command("checkpoints", str(tmp_path / "file"))
    assert (file.returncode, one_error_line(file)) == (
        2, f"looprt: error: {tmp_path / 'file'}: is a file, not a checkpoint directory"
    )
    empty = looprt_command("checkpoints", str(tmp_path / "empty"))
    assert empty.returncode == 1
    assert empty.stdout.strip() == f"no checkpoints in {tmp_path / 'empty'} (an empty directory)"


@pytest.mark.torch
def test_another_backends_directory_is_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    assert main(["demo", "--steps", "20", "--dir", str(tmp_path)]) == 0
    before = sorted(os.listdir(tmp_path))
    result = looprt_command("demo", "--backend", "torch", "--steps", "20", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"looprt: error: FailedPreconditionError: the checkpoints in {tmp_path} belong to the 'numpy' "
        f"backend, not 'torch': resume them with --backend numpy, or train torch in another --dir"
    )
    assert sorted(os.listdir(tmp_path)) == before


def test_a_directory_of_damaged_checkpoints_is_one_line_naming_them(tmp_path: Path) -> None:
    assert main(["demo", "--steps", "10", "--dir", str(tmp_path)]) == 0
    for folder in tmp_path.glob("model.ckpt-*"):
        (folder / "state.npz").write_bytes(b"")
    result = looprt_command("demo", "--steps", "10", "--dir", str(tmp_path))
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("looprt: error: DataLossError: none of the ") and "model.ckpt-10: " in line
    # The skipped checkpoints are log lines, one each, without a source line.
    warned = [x for x in result.stderr.splitlines() if "CheckpointWarning: skipping checkpoint" in x]
    assert len(warned) == len(list(tmp_path.glob("model.ckpt-*")))
    assert all(re.match(r"\d{4}-\d\d-\d\d .* looprt\.cli WARNING CheckpointWarning: ", x) for x in warned)


def test_evaluate_with_wrong_input_is_one_line(tmp_path: Path) -> None:
    # Checkpoints of another program than the one evaluated: one line naming the way out.
    prog = looprt.Program()
    prog.state("w", np.zeros(2))
    looprt.Saver(prog).save(None, str(tmp_path / "run" / "model.ckpt"), global_step=0)
    result = looprt_command("evaluate", str(tmp_path / "run"), "--timeout", "1")
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith(f"looprt: error: {tmp_path / 'run'}: its checkpoints do not fit the numpy demo's")
    assert "unexpected ['w']" in line and line.endswith("pass --program MODULE:FUNCTION")
    # A directory with no checkpoint (mistyped?) is said at once, not waited on in silence.
    result = looprt_command("evaluate", str(tmp_path / "typo"), "--timeout", "0.5")
    assert result.returncode == 1
    assert f"no checkpoint in {tmp_path / 'typo'} yet (the directory does not exist)" in result.stderr
    # A --program module that does not exist is a usage error like the other --program errors.
    result = looprt_command("evaluate", str(tmp_path), "--program", "nosuch_module:fn")
    assert result.returncode == 2
    assert one_error_line(result) == "looprt: error: --program: ModuleNotFoundError: No module named 'nosuch_module'"


def test_python_m_looprt_tf_with_a_missing_script_or_module_says_so_as_python_does(tmp_path: Path) -> None:
    for args, status, message in (
        (["nofile.py"], 2, f"can't open file '{tmp_path / 'nofile.py'}': [Errno 2] No such file or directory"),
        (["-m", "nosuch.module"], 1, "No module named nosuch.module"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "looprt.tf", *args], capture_output=True, text=True, cwd=tmp_path,
            timeout=120, check=False,
        )
        assert (result.returncode, result.stderr) == (status, f"python -m looprt.tf: {message}\n")


def test_ctrl_c_saves_a_final_checkpoint_and_exits_130(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "looprt", "demo", "--steps", "10000000", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # the first LoggingTensorHook line: training is under way
        if "loss = " in line:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    match = re.search(r"interrupted: started at step 0, stopped at step (\d+) and saved a checkpoint there", err)
    assert match, err
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / f"model.ckpt-{match[1]}")
    assert int(match[1]) > 100
    left = 10000000 - int(match[1])
    assert f"to train the {left} steps left: looprt demo --backend numpy --dir {tmp_path} --steps {left}\n" in err


# -- a real terminal -----------------------------------------------------------------------------


def screen(output: str) -> list[str]:
    """What a terminal shows for ``output``: carriage returns, line feeds, cursor-up and erase-line."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|\r|\n|[^\x1b\r\n]", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
        elif token.startswith("\x1b["):
            if token.endswith("A"):
                row = max(0, row - int(token[2:-1] or 1))
            elif token.endswith("K"):
                del lines[row][col:]
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = token
            else:
                line.append(token)
            col += 1
    return ["".join(line).rstrip() for line in lines]


def run_in_a_terminal(argv: list[str], cwd: Path) -> str:
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the pseudo-terminal
        os.chdir(cwd)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))  # 50 rows, 120 columns
        os.execv(sys.executable, [sys.executable, *argv])
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    return b"".join(chunks).decode(errors="replace")


def test_the_progress_bar_and_log_lines_do_not_write_over_each_other_in_a_terminal(tmp_path: Path) -> None:
    shown = screen(run_in_a_terminal(["-m", "looprt", "demo", "--steps", "400", "--dir", "run"], tmp_path))
    records = [line for line in shown if " INFO " in line]
    assert len(records) >= 8  # LoggingTensorHook, global_step/sec, saves
    for line in records:  # each log record is a line of its own: no bar before it, none written over it
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} looprt[.\w]* INFO .*", line), line
        assert "%|" not in line and "step/s]" not in line, line
    bars = [line for line in shown if "%|" in line]
    assert bars and bars[-1].startswith("100%|")
