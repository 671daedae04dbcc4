"""The local executor: runs on this machine, `max_parallel` runs at once, one per GPU if any.

`submit` starts a detached runner process (`run_queue(QUEUE.json)` of this module) that
trains the queued runs with `scaling train`, so that the sweep process only watches run folders,
exactly as it does for SLURM: `--no-wait`, `scaling status` and `scaling cancel` work the same.
The runner's PID is the job id of its runs (`local:<host>:<pid>`). On SIGTERM or SIGINT the
runner passes SIGTERM to its trainers (which checkpoint and exit) and marks their runs
cancelled; the next `scaling sweep` resumes them from their checkpoints. Ctrl-C in a waiting
`scaling sweep` stops the runner (the executor is not detached).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scaling import atomic, store
from scaling.errors import UserError
from scaling.executors.base import (
    Executor,
    JobInfo,
    Record,
    Run,
    StallClock,
    exit_reason,
    launch_trainer,
    record_stall,
    run_command,
    stall_reason,
    thread_env,
)
from scaling.host import cpu_count

STOP_GRACE_S = 120  # a trainer gets this long to checkpoint after SIGTERM
RUNNER_MODULE = "scaling.executors.local"
# not `-m`: the package imports this module first, and runpy would run a second copy of it
RUNNER_CODE = f"import sys; from {RUNNER_MODULE} import run_queue; sys.exit(run_queue(sys.argv[1]))"

_children: dict[int, subprocess.Popen] = {}  # runners started by this process, reaped on poll


@dataclass(frozen=True)
class LocalConfig:
    executor: str = "local"
    max_parallel: int = 0  # 0: one run per GPU when GPUs are present, else one per CPU core
    threads_per_run: int = 0  # 0: the cores split evenly between parallel runs
    poll_s: float = 2.0
    wait_timeout_h: float = 168.0
    stall_timeout_min: float = 30.0  # a trainer whose heartbeat stops this long is restarted; 0: never
    max_stalls: int = 2  # restarts of one run after stalls; the next stall fails it

    def __post_init__(self) -> None:
        if self.stall_timeout_min < 0 or self.max_stalls < 0:
            raise UserError("cluster.stall_timeout_min and cluster.max_stalls must be >= 0 (0: off)")


def gpu_ids() -> list[str]:
    """GPUs visible here: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list (no torch import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = run_command(["nvidia-smi", "-L"], timeout=20).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, _ in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


@dataclass(frozen=True)
class Slots:
    parallel: int
    threads: int
    gpus: tuple[str, ...]


def slots(config: LocalConfig, gpus: list[str] | None = None) -> Slots:
    gpus = gpu_ids() if gpus is None else gpus
    parallel = config.max_parallel or len(gpus) or cpu_count()  # on CPU: one single-threaded run per core
    if gpus:
        parallel = min(parallel, len(gpus))  # one run per GPU
    threads = config.threads_per_run or max(1, cpu_count() // parallel)
    return Slots(parallel, threads, tuple(gpus))


class LocalExecutor(Executor):
    name = "local"
    Config = LocalConfig
    detached = False

    def __init__(self, config: LocalConfig):
        super().__init__(config)
        self._slots: Slots | None = None
        self._started: list[subprocess.Popen] = []

    @property
    def slots(self) -> Slots:
        if self._slots is None:
            self._slots = slots(self.config)
        return self._slots

    def resources(self, run: Run) -> dict:
        s = self.slots
        return {
            "parallel": s.parallel,
            "threads": s.threads,
            "gpu": "1 of " + str(len(s.gpus)) if s.gpus else 0,
        }

    def submit(self, sweep_dir: Path, runs: list[Run], record: Record, exclude: Sequence[str] = ()) -> None:
        if not runs:
            return
        s = self.slots
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        queue = sweep_dir / "local" / f"{stamp}.json"
        atomic.write_json(
            queue,
            {
                "runs": [str(r.run_dir) for r in runs],
                "parallel": s.parallel,
                "threads": s.threads,
                "gpus": list(s.gpus),
                "stall_timeout_min": self.config.stall_timeout_min,
                "max_stalls": self.config.max_stalls,
            },
        )
        with open(queue.with_suffix(".log"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", RUNNER_CODE, str(queue)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches the sweep only; it stops us
            )
        _children[proc.pid] = proc
        self._started.append(proc)
        job_id = runner_job_id(proc.pid)
        record({r.run_key: job_id for r in runs})

    def settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self._started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # it goes on alone; its status writes are guarded by its job id

    @classmethod
    def poll(cls, job_ids: list[str]) -> dict[str, JobInfo]:
        host = socket.gethostname()
        infos = {}
        for job_id in set(job_ids):
            parsed = _parse(job_id)
            if parsed is None:
                infos[job_id] = JobInfo("unknown", reason=f"malformed local job id {job_id!r}")
                continue
            job_host, pid = parsed
            if job_host != host:
                infos[job_id] = JobInfo("unknown", reason=f"started on {job_host}; check it there")
            elif _alive(pid):
                infos[job_id] = JobInfo("active")
            else:
                infos[job_id] = JobInfo("ended", reason=f"local runner {pid} exited without a result")
        return infos

    @classmethod
    def cancel(cls, job_ids: list[str]) -> None:
        """SIGTERM each runner of this host; waits (bounded) until they have stopped their trainers."""
        host = socket.gethostname()
        parsed = [p for p in map(_parse, set(job_ids)) if p is not None]
        pids = {pid for h, pid in parsed if h == host and _alive(pid)}
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)


def runner_job_id(pid: int) -> str:
    return LocalExecutor.job_id(f"{socket.gethostname()}:{pid}")


def _parse(job_id: str) -> tuple[str, int] | None:
    """(host, runner pid) of a local job id; None for a malformed one (a hand-edited status.json)."""
    host, _, pid = LocalExecutor.native_id(job_id).rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # a zombie or a reused PID is not our runner
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return RUNNER_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, IndexError):
        return not Path("/proc/self").exists()  # no /proc (macOS): trust kill(0)


# --- the runner ------------------------------------------------------------------------------


def _stalled(t: _Trainer) -> float | None:
    """Seconds the trainer's heartbeat has not changed, once they reach the limit (looked at every
    `period_s`, a stat being a file-system round trip)."""
    if t.clock is None or time.monotonic() < t.next_look:
        return None
    t.next_look = time.monotonic() + t.clock.period_s
    return t.clock.stalled_for()


def _halt(procs: list[subprocess.Popen], signum: int, grace_s: float) -> None:
    """`signum` to each trainer (they checkpoint and exit); SIGKILL to those still alive after
    `grace_s`."""
    for proc in procs:
        proc.send_signal(signum)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finish(run_dir: Path, job_id: str, rc: int, stopped: bool) -> None:
    """Records how a trainer process ended, unless result.json says it or the run was
    resubmitted meanwhile (the new job owns its status)."""
    result = store.read_result(run_dir)
    if result is not None:
        if store.read_status(run_dir).state != result.status:
            store.write_status(run_dir, result.status, if_job=job_id)
    elif stopped:
        reason = "stopped (SIGTERM); `scaling sweep` resumes it from its checkpoint"
        # `scaling cancel` may have said why already
        store.write_status(run_dir, "cancelled", if_job=job_id, if_state=store.ACTIVE, reason=reason)
    else:
        reason = exit_reason(rc, run_dir / "logs" / "train.log")
        store.write_status(run_dir, "failed", if_job=job_id, reason=reason)


@dataclass
class _Trainer:
    proc: subprocess.Popen
    gpu: str | None
    clock: StallClock | None  # None: no watchdog (stall_timeout_min 0)
    next_look: float = 0.0


def run_queue(queue_file: str | Path) -> int:
    queue = json.loads(Path(queue_file).read_text())
    pending = [Path(p) for p in queue["runs"]]
    parallel, threads, gpus = int(queue["parallel"]), int(queue["threads"]), list(queue["gpus"])
    stall_s, max_stalls = 60 * float(queue.get("stall_timeout_min", 0)), int(queue.get("max_stalls", 0))
    job_id = runner_job_id(os.getpid())
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running: dict[Path, _Trainer] = {}
    free_gpus = list(gpus)
    while (pending or running) and not stopping:
        while pending and len(running) < parallel and not stopping:
            run_dir = pending.pop(0)
            if store.read_result(run_dir) is not None:
                finish(run_dir, job_id, store.EXIT_OK, stopped=False)
                continue
            if not store.mark_running(run_dir, job_id):  # `scaling cancel` came first
                continue
            gpu = free_gpus.pop(0) if gpus else None
            env = thread_env(threads)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            proc = launch_trainer(run_dir, run_dir / "logs" / "train.log", job_id, env, job_id)
            running[run_dir] = _Trainer(proc, gpu, StallClock(run_dir, stall_s) if stall_s > 0 else None)
        time.sleep(0.2)
        for run_dir, t in list(running.items()):
            idle = _stalled(t) if t.proc.poll() is None else None
            if t.proc.poll() is None and idle is None:
                continue
            del running[run_dir]
            if t.gpu is not None:
                free_gpus.append(t.gpu)
            if idle is None:
                finish(run_dir, job_id, t.proc.returncode, stopped=False)
                continue
            # a hung trainer: a checkpoint if it still can, then it starts again from the last one
            why = stall_reason(idle)
            print(f"{run_dir.name}: {why}; stopping it (SIGUSR2, then SIGKILL)", flush=True)
            _halt([t.proc], signal.SIGUSR2, min(STOP_GRACE_S, stall_s))
            if store.read_result(run_dir) is not None:
                finish(run_dir, job_id, store.EXIT_OK, stopped=False)
            elif record_stall(run_dir, job_id, why, max_stalls):
                pending.append(run_dir)
    # stopped: let every trainer checkpoint, then record what did not finish
    _halt([t.proc for t in running.values()], signal.SIGTERM, STOP_GRACE_S)
    for run_dir, t in running.items():
        finish(run_dir, job_id, t.proc.returncode, stopped=True)
    for run_dir in pending:
        if store.read_result(run_dir) is None:
            store.write_status(run_dir, "cancelled", if_job=job_id, reason="stopped before it started")
    return 0
