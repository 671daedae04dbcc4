"""The executor interface, in submitit's style: one class per backend owns its config class,
submission, polling and cancelling, and says whether its jobs outlive the sweep process.

    executor = LocalExecutor.from_cluster({"max_parallel": 2})   # or executors.executor_for(cfg.cluster)
    executor.submit(sweep_dir, runs, record)         # record({run_key: "<backend>:<native id>"})
    infos = LocalExecutor.poll(job_ids)              # job id -> JobInfo, one call for all
    LocalExecutor.cancel(job_ids)

An executor never decides a run's state alone: `scaling.executors.reconcile` combines the queue's
answer with the run folder (docs/run-folder.md). Every backend starts the trainer the same way,
`launch_trainer`, and reads its exit code by the run-folder contract (scaling.store.EXIT_*).
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from scaling import nodes, packing, records, store
from scaling.errors import UserError
from scaling.placement import Placement, place
from scaling.spec import RunSpec

QUEUE_TIMEOUT_S = 60  # every call to a queue command is bounded


@dataclass(frozen=True)
class Run:
    """One run to execute: its folder (holding spec.yaml) and what sizing its resources needs."""

    run_dir: Path
    spec: RunSpec
    params_total: int

    @property
    def run_key(self) -> str:
        return self.spec.run_key


@dataclass(frozen=True)
class JobInfo:
    """What a queue says about one job. `state` is pending | running | active | ended | unknown
    (`active`: a live local runner, which does not say which of its runs is running)."""

    state: str
    restarts: int = 0
    reason: str | None = None  # for ended jobs: the queue's own words (state, exit code, reason)
    cancelled: bool = False
    node: str | None = None  # an ended job the queue blames on its node (NODE_FAIL): that node


Record = Callable[[dict[str, str]], None]


class QueueUnavailable(RuntimeError):
    """The queue could not be asked (command missing, timed out, controller down): states stay as
    the run folders have them."""


class Executor(ABC):
    """A backend. Subclasses set `name` (the job-id prefix and the `executor:` value of cluster
    configs), `Config` (the dataclass of its cluster config) and `detached`."""

    name: ClassVar[str]
    Config: ClassVar[type]
    detached: ClassVar[bool]  # jobs go on when the sweep process stops waiting (Ctrl-C)

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def parse_config(cls, raw: dict[str, Any]) -> Any:
        """The `cluster` section as this backend's Config, with one-line errors."""
        try:
            return records.from_dict(cls.Config, dict(raw), "cluster", text_numbers=True)
        except records.RecordError as e:
            raise UserError(str(e)) from None

    @classmethod
    def from_cluster(cls, raw: dict[str, Any]) -> Executor:
        return cls(cls.parse_config(raw))

    @classmethod
    def job_id(cls, native: str) -> str:
        """The project's job id: the backend's name, a colon, the queue's own id."""
        return f"{cls.name}:{native}"

    @classmethod
    def native_id(cls, job_id: str) -> str:
        return job_id.removeprefix(f"{cls.name}:")

    @property
    def poll_s(self) -> float:
        return float(self.config.poll_s)

    @property
    def wait_timeout_h(self) -> float:
        return float(self.config.wait_timeout_h)

    def check(self) -> None:  # noqa: B027 (optional hook: most backends can always run)
        """Raises UserError when this executor cannot work here (missing commands)."""

    @abstractmethod
    def resources(self, run: Run) -> dict[str, Any]:
        """What the run would get, for --dry-run (UserError when nothing fits it)."""

    def place(self, run: Run) -> Placement:
        """The run's GPUs, parallel settings, GPU-hours and time limit (scaling/placement.py); a
        backend without GPU sizing keeps the spec's settings."""
        return place(run.spec, 1, None, None, 0)

    def pack(self, runs: list[Run]) -> list[packing.Group]:
        """The runs as the groups that share a job (scaling/packing.py); a backend that does not
        pack gives every run its own."""
        return [packing.alone(r.run_key, self.place(r)) for r in runs]

    @abstractmethod
    def submit(self, sweep_dir: Path, runs: list[Run], record: Record, exclude: Sequence[str] = ()) -> None:
        """Starts the runs, handing `record` run_key -> job id for every batch the queue accepted
        as soon as it did (so a refusal of a later batch loses no accepted job), on no node of
        `exclude`. Writes nothing into the run folders itself."""

    def adopt(self, sweep_dir: Path, runs: list[Run]) -> dict[str, str]:
        """run_key -> job id of the live jobs the queue holds for these runs, which their folders
        may not record (a sweep killed between the queue's answer and its record). A backend whose
        jobs cannot outlive an unrecorded submission holds none."""
        return {}

    def exclusion(self, failures: Counter) -> nodes.Exclusion:
        """Which nodes new jobs avoid, given node -> failures of the sweep's runs (scaling/nodes.py);
        a backend without nodes avoids none."""
        return nodes.exclusion(failures, [], 0)

    @classmethod
    @abstractmethod
    def poll(cls, job_ids: list[str]) -> dict[str, JobInfo]:
        """What the queue says about these jobs of this backend (QueueUnavailable if it cannot)."""

    @classmethod
    @abstractmethod
    def cancel(cls, job_ids: list[str]) -> None:
        """Stops these jobs; their trainers checkpoint (SIGTERM), so a later sweep resumes them."""

    def settle(self, timeout: float) -> None:  # noqa: B027 (optional hook)
        """Once no run is active: waits (bounded) for workers this process started to exit."""


# --- starting the trainer: shared by every backend ------------------------------------------------


def train_command(run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scaling.cli",
        "train",
        str(run_dir / store.SPEC_FILE),
        "--out",
        str(run_dir),
    ]


def launch_trainer(
    run_dir: Path, log_path: Path, header: str, env: dict[str, str], job_id: str | None = None
) -> subprocess.Popen:
    """`scaling train` for the run folder as a child process, its output appended to `log_path`
    after a `=== <time> <header>` line; `job_id` tells the trainer which job it trains in. The
    child is tied to this process (on Linux): if this process dies, even by SIGKILL, the trainer
    gets SIGTERM, checkpoints and exits."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tie = functools.partial(_die_with_parent, os.getpid()) if sys.platform.startswith("linux") else None
    with open(log_path, "ab") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n".encode())
        log.flush()
        return subprocess.Popen(
            train_command(run_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env | ({store.JOB_ID_ENV: job_id} if job_id else {}),
            preexec_fn=tie,
        )


# --- a trainer whose heartbeat stops: shared by every backend's watchdog -------------------------


STUCK = object()  # a stat that did not return: the file system hangs


def mtime(path: Path, timeout: float):
    """The file's mtime (ns), None when it does not exist, STUCK when stat hangs (a dead mount
    must not hang the watchdog too)."""
    found: list = []

    def stat() -> None:
        try:
            found.append(path.stat().st_mtime_ns)
        except OSError:
            found.append(None)

    t = threading.Thread(target=stat, daemon=True)
    t.start()
    t.join(timeout)
    return found[0] if found else STUCK


class StallClock:
    """How long a run's heartbeat file (touched by its trainer every few seconds, also while it
    compiles or evaluates) has not changed; from the clock's start until the first beat."""

    def __init__(self, run_dir: Path, limit_s: float):
        self.beat, self.limit_s = run_dir / store.HEARTBEAT_FILE, limit_s
        self.period_s = min(10.0, limit_s / 4)  # how often a watchdog should look
        self.seen, self.since = mtime(self.beat, limit_s), time.monotonic()

    def stalled_for(self) -> float | None:
        """Seconds without a beat once they reach the limit, else None."""
        now = mtime(self.beat, self.limit_s)
        if now != self.seen and now is not STUCK:
            self.seen, self.since = now, time.monotonic()
        idle = time.monotonic() - self.since
        return idle if idle >= self.limit_s else None


def stall_reason(idle_s: float) -> str:
    return f"stalled: no heartbeat for {idle_s / 60:.1f} min"


def record_stall(
    run_dir: Path,
    job_id: str,
    why: str,
    max_stalls: int,
    requeues: int | None = None,
    node: str | None = None,
) -> bool:
    """Counts a stall of the run in job `job_id`: `requeued` with the reason (and `requeues`), or
    `failed` once it stalled more than `max_stalls` times; `node` joins failed_nodes. True when the
    run is to train again."""
    stalls = store.read_status(run_dir).stalls + 1
    if stalls > max_stalls:
        why = f"{why} (stall {stalls}, more than cluster.max_stalls)"
        store.write_status(run_dir, "failed", if_job=job_id, reason=why, stalls=stalls, failed_on=node)
        return False
    fields: dict[str, Any] = {"reason": why, "stalls": stalls, "failed_on": node}
    if requeues is not None:
        fields["requeues"] = requeues
    store.write_status(run_dir, "requeued", if_job=job_id, **fields)
    return True


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the parent dies; exit now if it already has."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def thread_env(threads: int | str) -> dict[str, str]:
    """The environment of a trainer limited to `threads` CPU threads."""
    return os.environ | {"SCALING_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}


def exit_reason(rc: int, log_path: Path) -> str:
    """Why a trainer that wrote no result ended, for status.json."""
    return f"scaling train exited with code {rc}: {log_tail(log_path)}".rstrip(": ")


def log_tail(path: Path, lines: int = 1) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# --- helpers for backends with queue commands ----------------------------------------------------


def require_commands(names: list[str], what: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise UserError(
            f"{what} needs {', '.join(missing)} on PATH, which this machine lacks: "
            "run on a SLURM login node or use cluster=local"
        )


def run_command(argv: list[str], timeout: float = QUEUE_TIMEOUT_S) -> subprocess.CompletedProcess:
    """A queue command with a time limit; never raises for a non-zero exit (callers read rc)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
