"""Kill real training processes at every boundary of the checkpoint protocol, and at random moments.

    python tests/reliability/killer.py --backend numpy --mode full --report kills.json

The campaign process forks each training run: a real ``MonitoredSession``
with a ``CheckpointSaverHook`` training a deterministic program (its data is a
function of the global step, so a resumed run computes exactly what an
uninterrupted one does). A run is killed with SIGKILL either by itself, at the
Nth boundary it passes (``looprt.checkpoint.set_fault_hook``), or by the
campaign at a random moment. Each run logs every boundary it passes to a file,
so the campaign knows which checkpoint was committed and which was being
written when it died.

After every kill the campaign checks, in this process:

* ``latest_checkpoint`` returns the last committed step or the one being
  saved, never another, and never skips a damaged checkpoint (a kill must
  never leave one in view);
* restoring it gives exactly (bit for bit) the state of that step, never a
  mix of two steps.

Every killed run is then resumed (repeatedly, for the random chains) until it
completes, and the result must equal an uninterrupted run: the same final step
and bit-identical state, the same checkpoints on disk, nothing left over.

Phases: ``every`` kills a fresh run at each boundary it passes; ``resumed``
does the same for the first save of a resumed run, from directories that
earlier kills left half-written (stale temporary folders, pending deletions,
a checkpoint moved aside); ``random`` runs chains of kills at random moments.
``--mode quick`` kills once per distinct boundary (a few seconds); ``full``
kills at every hit.

The campaign never starts a thread, so forking it is safe.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from looprt.backends.numpy import NumpyBackend

Canonical = dict[str, tuple[str, tuple[int, ...], bytes]]


# -- the training program ----------------------------------------------------------------


class ShardedNumpyBackend(NumpyBackend):
    """The NumPy backend with one payload file per piece of state, in a subfolder.

    Exercises what the plain backend does not: several payload files and a
    payload subfolder (the ``payload.dir_fsync.after`` boundary).
    """

    name = "numpy-sharded"

    def save_payload(self, state: Any, directory: str) -> list[str]:
        os.mkdir(os.path.join(directory, "shards"))
        names = []
        for key, value in state.items():
            rel = f"shards/{key}.npy"
            with open(os.path.join(directory, "shards", f"{key}.npy"), "wb") as f:
                np.save(f, np.asarray(value), allow_pickle=False)
            names.append(rel)
        return names

    def load_payload(self, directory: str) -> dict[str, Any]:
        folder = os.path.join(directory, "shards")
        values: dict[str, Any] = {}
        for entry in sorted(os.listdir(folder)):
            values[entry[: -len(".npy")]] = np.load(os.path.join(folder, entry), allow_pickle=False)
        return values


def _numpy_program(backend: Any) -> tuple[Any, Any]:
    import looprt

    prog = looprt.Program(backend=backend, name="killed")
    prog.state("w", np.zeros(16))
    prog.state("velocity", np.zeros(16))

    @prog.step(outputs=("loss",))
    def train(w: np.ndarray, velocity: np.ndarray, global_step: Any) -> dict[str, float]:
        x = np.random.default_rng(int(global_step)).standard_normal(16)
        grad = w - x
        velocity *= 0.9
        velocity += grad
        w -= 0.05 * velocity
        return {"loss": float(grad @ grad)}

    return prog, train


def _torch_program() -> tuple[Any, Any]:
    import torch

    import looprt

    torch.set_num_threads(1)  # no thread pools: this process forks
    # The backend checkpoints the process-wide generators too: make them the same in every run.
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def train(global_step: Any) -> dict[str, float]:
        gen = torch.Generator().manual_seed(int(global_step))
        x = torch.randn(4, 8, generator=gen)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    step = looprt.wrap(train, state={"model": model, "opt": opt}, outputs=("loss",), backend="torch")
    return step.program, step


PROGRAMS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "numpy": lambda: _numpy_program("numpy"),
    "numpy-sharded": lambda: _numpy_program(ShardedNumpyBackend()),
    "torch": _torch_program,
}


def canonical(values: Any) -> Canonical:
    """State as {key: (dtype, shape, bytes)}, flattened, for bit-for-bit comparison."""
    out: Canonical = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(f"{prefix}/{key}", value[key])
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{prefix}/{i}", item)
        else:
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            array = np.asarray(value)
            out[prefix] = (array.dtype.str, array.shape, array.tobytes())

    walk("", values)
    return out


@dataclass(frozen=True)
class Config:
    backend: str = "numpy"
    last_step: int = 12
    save_every: int = 3
    max_to_keep: int = 2
    sabotage: str | None = None  # break the protocol on purpose, to show the campaign notices


def _careless_move_aside(directory: str, path: str, kind: str, name: str) -> str:
    """Sabotage: delete a checkpoint about to be replaced instead of moving it aside."""
    shutil.rmtree(path)
    return path + ".gone"


SABOTAGE: dict[str, Callable[[], None]] = {
    "careless-replace": lambda: setattr(
        __import__("looprt.checkpoint.commit").checkpoint.commit, "move_aside", _careless_move_aside
    ),
}


def train(config: Config, directory: str, kill_at: int | None, log_path: str, result_path: str) -> None:
    """One training run (in a forked child): resume from ``directory``, train to the last step."""
    import looprt
    from looprt.checkpoint import Saver, set_fault_hook

    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    hits = 0

    def on_boundary(name: str, subject: str) -> None:
        nonlocal hits
        os.write(log_fd, f"{name}\t{subject}\n".encode())  # unbuffered: survives the kill
        if hits == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        hits += 1

    set_fault_hook(on_boundary)
    if config.sabotage is not None:
        SABOTAGE[config.sabotage]()
    prog, step = PROGRAMS[config.backend]()
    saver = Saver(prog, max_to_keep=config.max_to_keep)
    scaffold = looprt.Scaffold(program=prog, saver=saver)
    hook = looprt.CheckpointSaverHook(directory, save_steps=config.save_every, saver=saver)
    creator = looprt.ChiefSessionCreator(scaffold, checkpoint_dir=directory)
    with looprt.MonitoredSession(creator, hooks=[hook]) as sess:
        # Resuming at the last step must not run past it: check before each step.
        while not sess.should_stop() and sess.run(prog.global_step) < config.last_step:
            sess.run(step)
    backend = prog.backend
    with open(result_path, "wb") as f:
        pickle.dump(canonical(backend.state_dict(prog)), f)


def reference_states(config: Config) -> dict[int, Canonical]:
    """The state after each step of an uninterrupted run, without checkpoints (in this process)."""
    import looprt

    prog, step = PROGRAMS[config.backend]()
    sess = looprt.ProgramSession(prog)
    sess.run(prog.initializer)
    states = {0: canonical(prog.backend.state_dict(prog))}
    for n in range(1, config.last_step + 1):
        sess.run(step)
        states[n] = canonical(prog.backend.state_dict(prog))
    return states


def restored_state(config: Config, path: str) -> Canonical:
    """What ``Saver.restore`` of checkpoint ``path`` gives a fresh program."""
    from looprt.checkpoint import Saver

    prog, _ = PROGRAMS[config.backend]()
    Saver(prog).restore(None, path)
    return canonical(prog.backend.state_dict(prog))


# -- running and killing -------------------------------------------------------------------


@dataclass
class Run:
    """One forked training run and what it logged."""

    outcome: str  # "killed", "completed" or "failed"
    hits: list[tuple[str, str]]
    stderr: str
    result_path: str
    seconds: float


def fork_run(
    config: Config, directory: str, scratch: str, kill_at: int | None = None, kill_after: float | None = None
) -> Run:
    """Run ``train`` in a child; it kills itself at boundary hit ``kill_at``, or is killed after ``kill_after`` s."""
    fd, log_path = tempfile.mkstemp(dir=scratch, suffix=".log")
    os.close(fd)
    result_path = log_path[: -len(".log")] + ".result"
    err_path = log_path[: -len(".log")] + ".err"
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never return into the campaign
        code = 1
        try:
            err = os.open(err_path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(err, 2)
            train(config, directory, kill_at, log_path, result_path)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    if kill_after is not None:
        time.sleep(kill_after)  # a random moment, on purpose
        os.kill(pid, signal.SIGKILL)  # a finished child is a zombie until reaped: pid not reused
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        outcome = "killed"
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        outcome = "completed"
    else:
        outcome = "failed"
    with open(log_path) as f:
        hits = [tuple(line.rstrip("\n").split("\t", 1)) for line in f if "\t" in line]
    stderr = ""
    with contextlib.suppress(OSError), open(err_path) as f:
        stderr = f.read()[-3000:]
    return Run(outcome, hits, stderr, result_path, seconds)  # type: ignore[arg-type]


def step_of(name: str | None) -> int | None:
    return None if name is None else int(os.path.basename(name).rpartition("-")[2])


def allowed_after(hits: list[tuple[str, str]], committed: int | None) -> tuple[set[int | None], str]:
    """The steps a reader may find after a run that passed ``hits`` died, and where it died."""
    saving: int | None = None
    for name, subject in hits:
        if name == "save.begin":
            saving = step_of(subject)
        elif name == "index.replace.after":
            committed = step_of(subject)
        elif name == "save.end":
            saving = None
    last = hits[-1][0] if hits else "(before the first boundary)"
    return ({committed, saving} if saving is not None else {committed}), last


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# -- the campaign ---------------------------------------------------------------------------


@dataclass
class Campaign:
    config: Config
    scratch: str
    reference: dict[int, Canonical]
    uninterrupted: Canonical
    expected_listing: list[str]
    expected_kept: list[str]
    kills: int = 0
    completions: int = 0
    killed_at: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    counter: int = 0
    chains: int = 0  # runs killed, then resumed until one completed
    chains_completed: int = 0
    duration: float = 0.0  # seconds of an uninterrupted run
    hits: int = 0  # boundaries an uninterrupted run passes

    def fresh_dir(self, source: str | None = None) -> str:
        self.counter += 1
        path = os.path.join(self.scratch, f"run{self.counter}")
        if source is None:
            os.mkdir(path)
        else:
            shutil.copytree(source, path, symlinks=True)
        return path

    def fail(self, what: str, run: Run | None = None) -> None:
        detail = f"\n  child stderr: {run.stderr.strip()[-1500:]}" if run is not None and run.stderr else ""
        self.failures.append(what + detail)

    def check_kill(self, directory: str, run: Run, committed: int | None, label: str) -> int | None:
        """Check the directory a killed run left; return the step a resumed run starts from."""
        from looprt.checkpoint import latest_checkpoint

        self.kills += 1
        allowed, where = allowed_after(run.hits, committed)
        self.killed_at[where] += 1
        with recorded_warnings() as caught:
            latest = latest_checkpoint(directory)
        step = step_of(latest)
        skipped = [str(w.message) for w in caught if "skipping checkpoint" in str(w.message)]
        if skipped:
            self.fail(f"{label}: killed at {where}: a damaged checkpoint was in view: {skipped}", run)
        if step not in allowed:
            self.fail(f"{label}: killed at {where}: latest is step {step}, expected one of {allowed}", run)
        if latest is not None:
            try:
                state = restored_state(self.config, latest)
            except Exception as e:
                self.fail(f"{label}: killed at {where}: restoring {latest} failed: {e!r}", run)
            else:
                if step is None or state != self.reference[step]:
                    self.fail(f"{label}: killed at {where}: {latest} is not exactly the state of its step", run)
        return step

    def check_completed(self, directory: str, run: Run, label: str) -> None:
        from looprt.checkpoint import latest_checkpoint

        self.completions += 1
        with open(run.result_path, "rb") as f:
            final = pickle.load(f)
        if final != self.uninterrupted:
            self.fail(f"{label}: the resumed run ended in a different state than an uninterrupted one")
        with recorded_warnings() as caught:
            latest = latest_checkpoint(directory)
        if caught:
            self.fail(f"{label}: warnings after completion: {[str(w.message) for w in caught]}")
        if step_of(latest) != self.config.last_step:
            self.fail(f"{label}: completed, but the latest checkpoint is {latest}")
        elif restored_state(self.config, latest) != self.reference[self.config.last_step]:  # type: ignore[arg-type]
            self.fail(f"{label}: the final checkpoint differs from the uninterrupted state")
        listing = sorted(os.listdir(directory))
        if listing != self.expected_listing:
            self.fail(f"{label}: directory {listing} != uninterrupted {self.expected_listing}")
        if index_kept(directory) != self.expected_kept:
            self.fail(f"{label}: index lists {index_kept(directory)} != uninterrupted {self.expected_kept}")

    def resume_to_completion(
        self, directory: str, committed: int | None, label: str, rng: random.Random, kills: int = 0
    ) -> None:
        """Resume until a run completes, first trying to kill ``kills`` runs at random moments.

        Half the random kills come from this process at a random time (inside
        any call, the payload writer's included), half at a random boundary.
        """
        self.chains += 1
        for attempt in range(kills + 20):
            kill_at = kill_after = None
            if attempt < kills:
                left = 1 - (committed or 0) / self.config.last_step  # the share of the run still to do
                if rng.random() < 0.5:
                    kill_after = rng.uniform(0, self.duration * left)
                else:
                    kill_at = rng.randrange(max(1, int(self.hits * left)))
            run = fork_run(self.config, directory, self.scratch, kill_at=kill_at, kill_after=kill_after)
            if run.outcome == "failed":
                self.fail(f"{label}: a resumed run failed", run)
                return
            if run.outcome == "killed":
                committed = self.check_kill(directory, run, committed, f"{label} (resume {attempt})")
                continue
            self.check_completed(directory, run, label)
            self.chains_completed += 1
            return
        self.fail(f"{label}: never completed")


def index_kept(directory: str) -> list[str]:
    try:
        with open(os.path.join(directory, "checkpoint.json")) as f:
            return [c["path"] for c in json.load(f)["checkpoints"]]
    except (OSError, ValueError, KeyError) as e:
        return [f"unreadable index: {e}"]


def first_of_each(hits: list[tuple[str, str]], start: int = 0) -> list[int]:
    """Indices of the first hit of each distinct boundary from ``start`` on."""
    seen: dict[str, int] = {}
    for i in range(start, len(hits)):
        seen.setdefault(hits[i][0], i)
    return sorted(seen.values())


def run_campaign(config: Config, mode: str, seed: int, scratch: str, chains: int) -> dict[str, Any]:
    rng = random.Random(seed)
    started = time.perf_counter()
    census_dir = os.path.join(scratch, "uninterrupted")
    os.mkdir(census_dir)
    census = fork_run(config, census_dir, scratch)
    if census.outcome != "completed":
        raise RuntimeError(f"the uninterrupted run failed:\n{census.stderr}")
    with open(census.result_path, "rb") as f:
        uninterrupted = pickle.load(f)
    reference = reference_states(config)
    if uninterrupted != reference[config.last_step]:
        raise RuntimeError("the training program is not deterministic: cannot compare resumed runs")
    campaign = Campaign(
        config, scratch, reference, uninterrupted, sorted(os.listdir(census_dir)), index_kept(census_dir)
    )
    hits = census.hits
    campaign.duration, campaign.hits = census.seconds, len(hits)
    phases: dict[str, int] = {}

    # Phase "every": a fresh run killed at each boundary it passes.
    before = campaign.kills
    targets = range(len(hits)) if mode == "full" else first_of_each(hits, start=_nth_save(hits, 2))
    leftovers: dict[str, str] = {}  # boundary -> a directory a kill there left, to resume from
    for i in targets:
        directory = campaign.fresh_dir()
        run = fork_run(config, directory, scratch, kill_at=i)
        label = f"every: kill at hit {i} ({hits[i][0]} {hits[i][1]})"
        if run.outcome != "killed":
            campaign.fail(f"{label}: the run was not killed ({run.outcome})", run)
            continue
        committed = campaign.check_kill(directory, run, None, label)
        if _nth_save(hits, 2) <= i and hits[i][0] not in leftovers:
            leftovers[hits[i][0]] = campaign.fresh_dir(directory)
        campaign.resume_to_completion(directory, committed, label, rng)
    phases["every"] = campaign.kills - before

    # Phase "resumed": kill the first save of runs resumed from half-written directories.
    before = campaign.kills
    # quick: a checkpoint renamed in but not indexed (its re-save moves it aside), and a
    # temporary folder plus a pending deletion left behind.
    quick_starts = ("commit.rename.after", "retention.move_aside.after")
    starts = sorted(leftovers) if mode == "full" else [b for b in quick_starts if b in leftovers]
    for boundary in starts:
        source = leftovers[boundary]
        with recorded_warnings():
            from looprt.checkpoint import latest_checkpoint

            committed = step_of(latest_checkpoint(source))
        probe_dir = campaign.fresh_dir(source)
        probe = fork_run(config, probe_dir, scratch)
        if probe.outcome != "completed":
            campaign.fail(f"resumed from a kill at {boundary}: the run failed", probe)
            continue
        first_save = next(i for i, h in enumerate(probe.hits) if h[0] == "save.end") + 1
        targets = range(first_save) if mode == "full" else first_of_each(probe.hits[:first_save])
        for i in targets:
            directory = campaign.fresh_dir(source)
            run = fork_run(config, directory, scratch, kill_at=i)
            label = f"resumed after {boundary}: kill at hit {i} ({probe.hits[i][0]})"
            if run.outcome != "killed":
                campaign.fail(f"{label}: the run was not killed ({run.outcome})", run)
                continue
            step = campaign.check_kill(directory, run, committed, label)
            campaign.resume_to_completion(directory, step, label, rng)
    phases["resumed"] = campaign.kills - before

    # Phase "random": chains of runs killed at random moments, resumed until one completes.
    before = campaign.kills
    for chain in range(chains):
        directory = campaign.fresh_dir()
        campaign.resume_to_completion(directory, None, f"random chain {chain}", rng, kills=rng.randint(3, 8))
    phases["random"] = campaign.kills - before

    from looprt.checkpoint import BOUNDARIES

    covered = sorted(b for b in BOUNDARIES if campaign.killed_at[b])
    return {
        "backend": config.backend,
        "mode": mode,
        "seed": seed,
        "kills": campaign.kills,
        "completions": campaign.completions,
        "chains": campaign.chains,
        "chains_completed": campaign.chains_completed,
        "phases": phases,
        "boundaries_covered": covered,
        "boundaries_not_covered": sorted(set(BOUNDARIES) - set(covered)),
        "kills_per_boundary": dict(sorted(campaign.killed_at.items())),
        "hits_per_uninterrupted_run": len(hits),
        "failures": campaign.failures,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _nth_save(hits: list[tuple[str, str]], n: int) -> int:
    """Index of the ``save.begin`` of the n-th save (0-based) of a run."""
    begins = [i for i, h in enumerate(hits) if h[0] == "save.begin"]
    return begins[min(n, len(begins) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy", choices=sorted(PROGRAMS))
    parser.add_argument("--mode", default="quick", choices=["quick", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chains", type=int, default=None, help="random kill chains (quick: 2, full: 40)")
    parser.add_argument("--sabotage", choices=sorted(SABOTAGE), help="break the protocol on purpose")
    parser.add_argument("--report", help="write the JSON report here (default: stdout)")
    parser.add_argument("--scratch", help="work folder (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    chains = args.chains if args.chains is not None else (2 if args.mode == "quick" else 40)
    config = Config(backend=args.backend, sabotage=args.sabotage)
    with contextlib.ExitStack() as stack:
        scratch = args.scratch or stack.enter_context(tempfile.TemporaryDirectory(prefix="looprt-kill-"))
        report = run_campaign(config, args.mode, args.seed, scratch, chains)
    text = json.dumps(report, indent=1)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    else:
        print(text)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
