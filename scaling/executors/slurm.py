"""The SLURM executor, through submitit's AutoExecutor.

Each submission gets a fresh submitit folder (job ids restart at 1 on a fresh cluster and a reused
folder hands back stale results) and one job array per resource group (an array shares one set
of sbatch options). Every array task runs `TrainJob`, which starts `scaling train` as a child so
that submitit keeps its signal handlers: on USR2 (time limit or preemption) submitit calls
`TrainJob.checkpoint`, which passes the signal to the trainer, waits for its checkpoint and asks
submitit to requeue; the requeued task resumes from that checkpoint.

The queue is read with one `squeue` call per poll for all of a sweep's jobs (ended jobs stay
visible for MinJobAge), then one `sacct` call for the ids squeue no longer knows. Neither call
blocks: both have time limits, and a job neither knows is reported as vanished.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from scaling import atomic, nodes, packing, paths, store
from scaling.errors import UserError
from scaling.executors.base import (
    Executor,
    JobInfo,
    QueueUnavailable,
    Record,
    Run,
    StallClock,
    exit_reason,
    launch_trainer,
    record_stall,
    require_commands,
    run_command,
    stall_reason,
    thread_env,
)
from scaling.hardware import Hardware, require_peak
from scaling.placement import Placement, place, run_flops

COMMANDS = ["sbatch", "squeue", "scancel", "scontrol"]
GPU_REQUESTS = ("gpus_per_node", "gpus_per_task", "gres")
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD", "STOPPED"}
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"}
NODE_FAILURES = {"NODE_FAIL", "BOOT_FAIL"}  # ended states the queue blames on the node
MANIFEST = "runs.json"  # in each submission folder: the run keys each array task trains
COMMENT = "scaling:"  # + the submission folder's name: the job's comment, which squeue shows


@dataclass(frozen=True)
class Resources:
    """Resources for every run whose total parameter count is <= max_params."""

    max_params: float
    gpus_per_node: int = 1
    nodes: int = 1
    cpus_per_task: int = 8
    mem_gb: float = 64
    timeout_min: int = 1440  # the longest job to ask for; a run asks for what its compute needs
    tasks_per_node: int = 0  # 0: one per GPU (one without GPUs); on CPU nodes, DDP over this many processes


@dataclass(frozen=True)
class SlurmConfig:
    executor: str = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64
    max_num_timeout: int = 3  # requeues after a time limit or preemption before the run fails
    signal_delay_s: int = 120  # USR2 at least this long before the limit (more for large checkpoints)
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other `#SBATCH --key=value`
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    resources: list[Resources] = field(default_factory=lambda: [Resources(max_params=float("inf"))])
    gpu_request: str = "gpus_per_node"  # gpus_per_node | gpus_per_task | gres (--gres=gpu:N)
    gpu: str | None = (
        None  # the card (H100, A100, ...: scaling/hardware.py): sizes micro-batches and time limits
    )
    gpu_mem_gb: float = 0.0  # its memory; 0: the card's datasheet size is not assumed, give it
    mfu: float = 0.35  # assumed for GPU-hours and time limits until measured runs say better
    time_margin: float = 1.3  # a job's time limit is the estimate x this (+ start-up), at most timeout_min
    stall_timeout_min: float = (
        30.0  # a trainer without a heartbeat this long is checkpointed and requeued; 0: never
    )
    max_stalls: int = 2  # stalled requeues of one run; at the next stall it fails
    exclude_after: int = 2  # failed or stalled runs on a node before resubmissions avoid it; 0: never
    pack_per_gpu: int | None = None  # small runs per GPU (packing.py); None: 4, CPU nodes none; 0, 1: off
    pack_max_params: float = 1e8  # larger runs never share a GPU
    driver_partition: str | None = None  # `scaling sweep --detach`: the driver's CPU job (default: partition)
    driver_cpus: int = 1
    driver_mem_gb: float = 4.0
    driver_timeout_min: int = 1440  # the driver requeues itself at its time limit and watches on
    poll_s: float = 15.0
    wait_timeout_h: float = 168.0

    def __post_init__(self) -> None:
        if not self.resources:
            raise UserError("cluster.resources must be a non-empty list of {max_params, gpus_per_node, ...}")
        if self.gpu_request not in GPU_REQUESTS:
            raise UserError(
                f"cluster.gpu_request {self.gpu_request!r}: choose from {', '.join(GPU_REQUESTS)}"
            )
        if self.stall_timeout_min < 0 or self.max_stalls < 0 or self.exclude_after < 0:
            raise UserError("cluster.stall_timeout_min, max_stalls and exclude_after must be >= 0 (0: off)")
        if (self.pack_per_gpu is not None and self.pack_per_gpu < 0) or self.pack_max_params < 0:
            raise UserError(
                "cluster.pack_per_gpu and pack_max_params must be >= 0 (pack_per_gpu 0 or 1: no packing)"
            )
        if self.gpu is not None:
            require_peak(self.gpu)
            if self.gpu_mem_gb <= 0:
                raise UserError(f"cluster.gpu {self.gpu}: give its memory too, e.g. cluster.gpu_mem_gb=80")

    @property
    def hardware(self) -> Hardware | None:
        if self.gpu is None:
            return None
        return Hardware(self.gpu, self.gpu_mem_gb, require_peak(self.gpu), self.mfu)

    def resources_for(self, run: Run) -> Resources:
        for r in self.resources:
            if run.params_total <= r.max_params:
                return r
        largest = max(r.max_params for r in self.resources)
        raise UserError(
            f"run {run.run_key} has {run.params_total:.3g} parameters, more than every cluster.resources "
            f"entry allows (largest max_params {largest:.3g}): add an entry with a larger max_params"
        )


class SlurmExecutor(Executor):
    name = "slurm"
    Config = SlurmConfig
    detached = True  # queued jobs do not need the sweep process: they go on

    def check(self) -> None:
        require_commands(COMMANDS, "cluster=slurm")

    def resources(self, run: Run) -> dict[str, Any]:
        r = self.config.resources_for(run)
        return {
            "partition": self.config.partition or "(default)",
            "nodes": r.nodes,
            "gpus_per_node": r.gpus_per_node,
            "tasks_per_node": tasks_per_node(r),
            "cpus_per_task": r.cpus_per_task,
            "mem_gb": r.mem_gb,
        }

    def place(self, run: Run) -> Placement:
        r = self.config.resources_for(run)
        gpus = max(1, r.gpus_per_node) * r.nodes
        c = self.config
        placed = place(run.spec, gpus, c.hardware, r.timeout_min, c.max_num_timeout, c.time_margin)
        return packing.share(
            run.spec,
            placed,
            packing.Rule(c.pack_per_gpu, c.pack_max_params),
            processes=tasks_per_node(r) * r.nodes,
            gpus=r.gpus_per_node * r.nodes,
            cpus=r.cpus_per_task,
            card_gb=c.gpu_mem_gb if c.hardware else None,
        )

    def pack(self, runs: list[Run]) -> list[packing.Group]:
        by_entry: dict[Resources, list[Run]] = {}
        for run in runs:
            by_entry.setdefault(self.config.resources_for(run), []).append(run)
        c = self.config
        return [
            group
            for entry, members in by_entry.items()
            for group in packing.pack(
                [(r.run_key, run_flops(r.spec), self.place(r)) for r in members],
                entry.timeout_min,
                c.max_num_timeout,
                c.time_margin,
            )
        ]

    def submit(self, sweep_dir: Path, runs: list[Run], record: Record, exclude: Sequence[str] = ()) -> None:
        # one array per resources entry, time limit and warning time before the limit; each of
        # its tasks trains one run, or a group of small runs that share its GPU
        by_key = {run.run_key: run for run in runs}
        arrays: dict[tuple[Resources, int, int], list[packing.Group]] = {}
        for group in self.pack(runs):
            resources = self.config.resources_for(by_key[group.keys[0]])
            limit = group.time_limit_min or resources.timeout_min
            delay = max(self.config.signal_delay_s, group.signal_delay_s)
            arrays.setdefault((resources, limit, delay), []).append(group)
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        for i, ((resources, limit, delay), groups) in enumerate(arrays.items()):
            folder = sweep_dir / "submitit" / f"{stamp}-{i}"
            # written before sbatch, so that the queue can name the runs of a job nobody recorded
            folder.mkdir(parents=True, exist_ok=True)
            atomic.write_json(folder / MANIFEST, {"tasks": [list(g.keys) for g in groups]})
            executor = submitit.AutoExecutor(
                folder=folder, cluster="slurm", slurm_max_num_timeout=self.config.max_num_timeout
            )
            executor.update_parameters(
                **self.parameters(resources, sweep_dir.name, limit, delay, exclude),
                slurm_comment=COMMENT + folder.name,
            )
            c = self.config
            job = TrainJob(delay, 60 * c.stall_timeout_min, c.max_stalls)
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr itself
                    # a batch, not map_array: the tasks take different numbers of run folders
                    with executor.batch():
                        jobs = [
                            executor.submit(job, *(str(by_key[k].run_dir) for k in g.keys)) for g in groups
                        ]
            except UncompletedJobError as e:  # sbatch refused: its own words, on one line
                raise UserError(f"sbatch refused the job array: {_sbatch_error(str(e))}") from None
            record({key: self.job_id(j.job_id) for g, j in zip(groups, jobs) for key in g.keys})

    def parameters(
        self, r: Resources, name: str, timeout_min: int, signal_delay_s: int = 0, exclude: Sequence[str] = ()
    ) -> dict[str, Any]:
        c = self.config
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": timeout_min,
            "nodes": r.nodes,
            "tasks_per_node": tasks_per_node(r),
            "cpus_per_task": r.cpus_per_task,
            "mem_gb": r.mem_gb,
            "slurm_array_parallelism": c.array_parallelism,
            "slurm_signal_delay_s": max(c.signal_delay_s, signal_delay_s),
        }
        extra = dict(c.sbatch)
        if r.gpus_per_node:
            # how the cluster wants GPUs asked for; either way one task (process) per GPU
            if c.gpu_request == "gpus_per_node":
                params["gpus_per_node"] = r.gpus_per_node
            elif c.gpu_request == "gpus_per_task":
                extra["gpus-per-task"] = 1
            else:
                extra["gres"] = f"gpu:{r.gpus_per_node}"
        if exclude:
            extra["exclude"] = ",".join(exclude)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(c, key):
                params[f"slurm_{key}"] = getattr(c, key)
        if extra:
            params["slurm_additional_parameters"] = extra
        if c.setup:
            params["slurm_setup"] = list(c.setup)
        return params

    def test_only(self, r: Resources, timeout_min: int) -> str | None:
        """`sbatch --test-only` with the options of a job of this entry: None when sbatch would
        accept it, else its error."""
        params = self.parameters(r, "preflight", timeout_min)
        flags = [
            f"--nodes={params['nodes']}",
            f"--ntasks-per-node={params['tasks_per_node']}",
            f"--cpus-per-task={params['cpus_per_task']}",
            f"--mem={int(params['mem_gb'])}G",
            f"--time={timeout_min}",
        ]
        if "gpus_per_node" in params:
            flags.append(f"--gpus-per-node={params['gpus_per_node']}")
        for key in ("partition", "account", "qos", "constraint"):
            if f"slurm_{key}" in params:
                flags.append(f"--{key}={params[f'slurm_{key}']}")
        for key, value in params.get("slurm_additional_parameters", {}).items():
            flags.append(f"--{key}" if value is True else f"--{key}={value}")
        out = run_command(["sbatch", "--test-only", *flags, "--wrap=true"])
        return None if out.returncode == 0 else _sbatch_error(out.stderr or out.stdout)

    def adopt(self, sweep_dir: Path, runs: list[Run]) -> dict[str, str]:
        """The queue is the authority on what it runs: each live array task of this sweep's jobs
        (by job name) names its submission folder in its comment, whose manifest names its runs."""
        wanted = {r.run_key for r in runs}
        if not wanted:
            return {}
        try:
            out = run_command(["squeue", "-h", "-r", "--name", sweep_dir.name, "-o", "%F|%K|%k|%T"])
        except (FileNotFoundError, subprocess.TimeoutExpired) as e:
            out = subprocess.CompletedProcess([], 1, "", str(e))
        if out.returncode != 0:
            raise UserError(
                f"squeue cannot say which jobs already train runs of {sweep_dir.name} "
                f"({out.stderr.strip() or out.returncode}); run the sweep again once the controller answers"
            )
        adopted: dict[str, str] = {}
        for line in out.stdout.splitlines():
            array_id, task, comment, state = (line.split("|") + ["", "", "", ""])[:4]
            if not (comment.startswith(COMMENT) and task.isdigit() and state in PENDING | RUNNING):
                continue
            tasks = _manifest(sweep_dir / "submitit", comment.removeprefix(COMMENT))
            for key in tasks[int(task)] if int(task) < len(tasks) else []:
                if key in wanted:
                    adopted[key] = self.job_id(f"{array_id}_{task}")
        return adopted

    def exclusion(self, failures: Counter) -> nodes.Exclusion:
        return nodes.exclusion(failures, self.nodes() if failures else [], self.config.exclude_after)

    def nodes(self) -> list[str]:
        """The nodes of the partition (sinfo); empty when sinfo cannot say."""
        argv = ["sinfo", "-h", "-N", "-o", "%N"]
        if self.config.partition:
            argv += ["-p", self.config.partition]
        return sorted(set(_ask(argv)))

    @classmethod
    def poll(cls, job_ids: list[str]) -> dict[str, JobInfo]:
        native = {cls.native_id(j): j for j in job_ids}
        return {native[n]: info for n, info in _poll(list(native)).items()}

    @classmethod
    def cancel(cls, job_ids: list[str]) -> None:
        _cancel([cls.native_id(j) for j in job_ids])


def tasks_per_node(r: Resources) -> int:
    return r.tasks_per_node or max(1, r.gpus_per_node)  # one process per GPU


def _sbatch_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0]  # sbatch's first error names the culprit


# --- the queue --------------------------------------------------------------------------------


def _manifest(submissions: Path, name: str) -> list[list[str]]:
    """The run keys of each task of a submission folder's array; none for a folder of another
    sweep, of an older version, or damaged."""
    if not paths.SAFE_NAME.fullmatch(name) or ".." in name:
        return []
    try:
        tasks = (store.load_json(submissions / name / MANIFEST) or {}).get("tasks", [])
    except store.MalformedFile:
        return []
    return [t for t in tasks if isinstance(t, list)] if isinstance(tasks, list) else []


def _base(job_id: str) -> str:
    return job_id.split("_", 1)[0]


def _poll(native_ids: list[str]) -> dict[str, JobInfo]:
    """One squeue call for every job (pending, running and recently ended), then one sacct call
    for those squeue has forgotten; ids neither knows are `ended` (vanished)."""
    wanted = set(native_ids)
    if not wanted:
        return {}
    bases = sorted({_base(j) for j in wanted}, key=lambda b: int(b) if b.isdigit() else 0)
    try:
        out = run_command(
            [
                "squeue",
                "-h",
                "-r",
                "-t",
                "all",
                "-j",
                ",".join(bases),
                "-O",
                "ArrayJobID:|,ArrayTaskID:|,JobID:|,State:|,Reason:|,RestartCnt:|,NodeList:|",
            ]
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise QueueUnavailable(f"squeue failed: {e}") from None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise QueueUnavailable(f"squeue failed: {out.stderr.strip() or out.returncode}")
    infos: dict[str, JobInfo] = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 7:
            continue
        array_id, task, raw_id, state, reason, restarts, node = parts[:7]
        job_id = f"{array_id}_{task}" if task.isdigit() else raw_id  # submitit's id of an array task
        if job_id in wanted:
            infos[job_id] = _info(state, reason, int(restarts) if restarts.isdigit() else 0, node=node)
    missing = sorted(wanted - set(infos))
    if missing:
        infos.update(_sacct(missing))
    for job_id in wanted - set(infos):
        infos[job_id] = JobInfo("ended", reason="vanished from the queue (no squeue or sacct record)")
    return infos


def _info(state: str, reason: str, restarts: int, exit_code: str = "", node: str = "") -> JobInfo:
    """The queue's words as a JobInfo; an ended job the queue blames on its node (NODE_FAIL,
    BOOT_FAIL) names that node, which the job itself could not record."""
    state = state.split()[0] if state else "UNKNOWN"
    if state in PENDING:
        return JobInfo("pending", restarts=restarts)
    if state in RUNNING:
        return JobInfo("running", restarts=restarts)
    words = [state]
    if reason and reason not in ("None", "(null)"):
        words.append(reason)
    if exit_code and exit_code != "0:0":
        words.append(f"exit code {exit_code}")
    blamed = _blamed(node) if state in NODE_FAILURES and node and node not in ("None", "(null)") else None
    return JobInfo(
        "ended", restarts=restarts, reason=", ".join(words), cancelled=state == "CANCELLED", node=blamed
    )


UNHEALTHY = ("down", "drain", "fail", "not_responding")  # node states (sinfo %T) after a node failure


def _blamed(nodelist: str) -> str | None:
    """The node a job that ended NODE_FAIL or BOOT_FAIL died on: its only node; of several, the
    first that sinfo now reports down, drained, failing or not responding (the queue does not say
    which one died), else none: healthy nodes are not blamed."""
    hosts = (
        _ask(["scontrol", "show", "hostnames", nodelist])
        if "[" in nodelist or "," in nodelist
        else [nodelist]
    )
    if len(hosts) <= 1:
        return hosts[0] if hosts else None
    for line in _ask(["sinfo", "-h", "-N", "-n", ",".join(hosts), "-o", "%N|%T"]):
        name, _, state = line.partition("|")
        if state.endswith("*") or state.lower().startswith(UNHEALTHY):  # `*`: not responding
            return name
    return None


def _ask(argv: list[str]) -> list[str]:
    """The command's output lines; none when it fails (an answer we can do without)."""
    try:
        out = run_command(argv)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def _sacct(job_ids: list[str]) -> dict[str, JobInfo]:
    """Accounting for jobs the controller no longer holds; empty when accounting is off."""
    try:
        out = run_command(
            ["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode,Reason,NodeList"]
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    infos = {}
    for line in out.stdout.splitlines():  # the last record of a job id is its latest attempt
        parts = line.split("|")
        if len(parts) >= 5 and parts[0] in job_ids:
            infos[parts[0]] = _info(parts[1], parts[3], 0, parts[2], parts[4])
    return infos


def _cancel(native_ids: list[str]) -> None:
    if not native_ids:
        return
    try:
        out = run_command(["scancel", *sorted(set(native_ids))])
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise UserError(f"scancel failed: {e}") from None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise UserError(
            f"scancel failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
        )


# --- on the compute node -----------------------------------------------------------------------


def _wait(child: subprocess.Popen, timeout: float | None = None) -> int | None:
    """The child's exit code, polling: Popen.wait() holds a lock while it blocks, so a signal
    handler that waits for the same child from inside that wait would deadlock."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while (rc := child.poll()) is None:
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(0.2)
    return rc


def node_name() -> str:
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


@dataclass
class _Trainer:
    """One run of an array task and its `scaling train` child."""

    run_path: Path
    log_path: Path
    child: subprocess.Popen


class TrainJob(submitit.helpers.Checkpointable):
    """The submitit callable of one array task: `scaling train` in a child process for each of its
    run folders, which is one run, or several small runs sharing the task's GPU (scaling/packing.py;
    they split its CPUs). Each child writes its own run folder; a run that fails marks only itself.

    With several tasks (one per GPU: one run) every task runs one; the trainer takes its rank,
    world size and rendezvous from the SLURM variables the child inherits (trainer.distributed).

    Rank 0 watches each run's heartbeat file (trainer.loop.Heartbeat): when one has not changed
    for `stall_s` seconds (from the start too: a trainer that never beats), the job signals itself
    USR2, which checkpoints every run of the task and requeues as a preemption does; the node goes
    into that run's status.json failed_nodes and the stall into its stalls, and a run stalled more
    than `max_stalls` times fails instead. On a requeue, runs that ended (or failed in this job)
    are not started again."""

    def __init__(self, signal_delay_s: int = 120, stall_s: float = 0.0, max_stalls: int = 2):
        self.signal_delay_s = signal_delay_s
        self.stall_s = stall_s
        self.max_stalls = max_stalls
        self._trainers: list[_Trainer] = []
        self._terminated = False
        self._stalled: str | None = None  # why the watchdog stopped the task (the first stall)
        self._stalled_run: str | None = None  # and whose

    def __setstate__(self, state: dict) -> None:
        # submitit's pickle of a queued or requeued task: only the settings carry over (the last
        # attempt's processes are gone), also from a task pickled by an earlier version of this class
        self.__init__(state["signal_delay_s"], state["stall_s"], state["max_stalls"])  # type: ignore[misc]

    def __call__(self, *run_dirs: str) -> dict[str, str]:
        env = submitit.JobEnvironment()
        job_id = SlurmExecutor.job_id(env.job_id)
        rank0 = env.global_rank == 0
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)
        # SIGTERM (scancel, scontrol requeue, node shutdown): the trainers checkpoint; SLURM decides
        signal.signal(signal.SIGTERM, self._on_sigterm)
        threads = max(1, int(os.environ.get("SLURM_CPUS_PER_TASK", 1) or 1) // len(run_dirs))
        for run_dir in run_dirs:
            run_path = Path(run_dir)
            if self._terminated:  # SIGTERM while starting: the trainers started so far checkpoint
                break
            if not _unfinished(run_path, job_id):  # it ended before this requeue of its task
                continue
            # `scaling cancel` may come while this task starts; rank 0 decides under the run's lock
            if rank0:
                if not store.mark_running(run_path, job_id, requeues=restarts):
                    continue
            elif _cancelled(run_path, job_id):
                continue
            log_path = run_path / "logs" / ("train.log" if rank0 else f"train.rank{env.global_rank}.log")
            header = f"job {job_id} restart {restarts} on {node_name()}"
            child = launch_trainer(run_path, log_path, header, thread_env(threads), job_id)
            self._trainers.append(_Trainer(run_path, log_path, child))
            if rank0 and self.stall_s > 0:
                threading.Thread(target=self._watch, args=(run_path, child), daemon=True).start()
        running = list(self._trainers)
        try:
            while running:  # each run's end is written as it comes, not when the last one ends
                for t in [t for t in running if t.child.poll() is not None]:
                    running.remove(t)
                    self._ended(t, job_id, rank0, restarts)
                time.sleep(0.2)
        except UncompletedJobError as e:  # submitit's USR2 handler: too many timeouts, no requeue
            if rank0:
                for t in self._trainers:
                    if _unfinished(t.run_path, job_id):
                        store.write_status(
                            t.run_path, "failed", if_job=job_id, reason=str(e), requeues=restarts
                        )
            if any(_failed_in(t.run_path, job_id) for t in self._trainers):
                raise
        failed = [t.run_path for t in self._trainers if _failed_in(t.run_path, job_id)]
        if failed:  # the job's own state says so too; the task's other runs ended as they did
            raise RuntimeError("; ".join(f"{p.name}: {store.read_status(p).reason}" for p in failed))
        return {t.run_path.name: store.read_status(t.run_path).state for t in self._trainers}

    def _ended(self, t: _Trainer, job_id: str, rank0: bool, restarts: int) -> None:
        """Records a child's exit: a result is the trainer's; a failure is written into the run's
        status.json at once (the task's other runs go on)."""
        rc = t.child.returncode
        if store.read_result(t.run_path) is not None:
            return
        if self._terminated or rc == store.EXIT_PREEMPTED:
            return  # checkpointed after SIGTERM (requeue, cancel) or USR2 (rank > 0; rank 0 requeues)
        if rc == store.EXIT_OK and not rank0:  # rank 0 wrote result.json; a shared disk may show it late
            return
        reason = exit_reason(rc, t.log_path)
        if rank0:
            # bad input is not the node's fault; anything else (a crash, a kill, an I/O error) may be
            node = None if rc == store.EXIT_USER_ERROR else node_name()
            store.write_status(
                t.run_path, "failed", if_job=job_id, reason=reason, requeues=restarts, failed_on=node
            )
        else:
            raise RuntimeError(reason)

    def _on_sigterm(self, signum, frame) -> None:
        self._terminated = True
        for t in self._trainers:
            if t.child.poll() is None:
                t.child.send_signal(signal.SIGTERM)

    def _watch(self, run_path: Path, child: subprocess.Popen) -> None:
        """The watchdog thread of one run: USR2 to this process once its heartbeat stops changing."""
        clock = StallClock(run_path, self.stall_s)
        while child.poll() is None:
            time.sleep(clock.period_s)
            idle = clock.stalled_for()
            if idle is not None and child.poll() is None:
                if self._stalled is None:  # one USR2 checkpoints every run of the task
                    self._stalled = f"{stall_reason(idle)} on {node_name()}"
                    self._stalled_run = str(run_path)
                    os.kill(os.getpid(), signal.SIGUSR2)  # submitit's handler calls checkpoint()
                return

    def checkpoint(self, *run_dirs: str):
        """submitit's USR2 handler (rank 0): every trainer saves and exits, then the job requeues
        if any run of it is left to train."""
        live = [t.child for t in self._trainers if t.child.poll() is None]
        for child in live:
            child.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + max(5, self.signal_delay_s - 10)
        for child in live:
            if _wait(child, timeout=max(0.0, deadline - time.monotonic())) is None:
                child.kill()  # a stuck trainer cannot checkpoint: it resumes from its last one
                _wait(child, timeout=10)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)
        job_id = SlurmExecutor.job_id(submitit.JobEnvironment().job_id)
        left = False
        for run_dir in run_dirs:
            if not _unfinished(Path(run_dir), job_id):  # a requeued task skips it
                continue
            if run_dir != self._stalled_run:
                store.write_status(run_dir, "requeued", if_job=job_id, requeues=restarts + 1)
                left = True
            elif record_stall(
                Path(run_dir), job_id, str(self._stalled), self.max_stalls, restarts + 1, node_name()
            ):
                left = True
        if not left:
            return None  # submitit does not requeue
        # a fresh callable: the process handles do not pickle
        return submitit.helpers.DelayedSubmission(
            TrainJob(self.signal_delay_s, self.stall_s, self.max_stalls), *run_dirs
        )


def _failed_in(run_path: Path, job_id: str) -> bool:
    """The run failed in this job (its trainer, or too many stalls): a requeue does not retry it."""
    status = store.read_status(run_path)
    return status.state == "failed" and status.job_id == job_id and store.read_result(run_path) is None


def _unfinished(run_path: Path, job_id: str) -> bool:
    return store.read_result(run_path) is None and not _failed_in(run_path, job_id)


def _cancelled(run_path: Path, job_id: str) -> bool:
    status = store.read_status(run_path)
    return status.state == "cancelled" and status.job_id == job_id


# --- commands as a job (data preparation, preflight checks, a sweep's driver) ----------------------


def submit_command(
    config: SlurmConfig,
    folder: Path,
    name: str,
    commands: list[list[str]],
    resources: Resources,
    timeout_min: int,
    *,
    requeues: int = 0,
    log: Path | None = None,
    own_jobs: bool = False,
) -> str:
    """Submits `commands` (run one after the other, each only if the one before succeeded) as a
    job of `resources` (every task runs them), in the cluster config's partition, account and
    setup, in this directory; returns the job id (`slurm:N`). `folder` (fresh per submission) gets
    submitit's logs, `log` (if given) the commands' output. At its time limit the job requeues up
    to `requeues` times and runs the commands again from the first (so they must be idempotent).
    `own_jobs`: the commands submit jobs themselves, which must not inherit this job's SLURM
    variables."""
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=requeues)
    executor.update_parameters(**SlurmExecutor(config).parameters(resources, name, timeout_min))
    job = CommandJob(commands, os.getcwd(), None if log is None else str(log), own_jobs)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            submitted = executor.submit(job)
    except UncompletedJobError as e:
        raise UserError(f"sbatch refused the job {name}: {_sbatch_error(str(e))}") from None
    return SlurmExecutor.job_id(submitted.job_id)


def live_job(record: Path) -> str | None:
    """The job id in a JSON record file (`{"job_id": ...}`) if that job is queued or running."""
    try:
        job_id = json.loads(record.read_text())["job_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return job_id if SlurmExecutor.poll([job_id])[job_id].state != "ended" else None


class CommandJob(submitit.helpers.Checkpointable):
    """The submitit callable of submit_command: each command in a child process; SIGTERM is
    passed on to it; at the time limit (USR2) the child is stopped and the job requeued."""

    def __init__(self, commands: list[list[str]], cwd: str, log: str | None, own_jobs: bool) -> None:
        self.commands, self.cwd, self.log, self.own_jobs = commands, cwd, log, own_jobs
        self._child: subprocess.Popen | None = None

    def __call__(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        env = dict(os.environ)
        if self.own_jobs:  # sbatch and srun would read this job's settings as their own
            env = {k: v for k, v in env.items() if not k.startswith(JOB_VARIABLES) or k == "SLURM_CONF"}
        for argv in self.commands:
            with open(self.log, "ab") if self.log else contextlib.nullcontext() as out:
                if out is not None:
                    out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
                    out.flush()
                self._child = subprocess.Popen(
                    argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
                )
                rc = _wait(self._child)
            if rc != 0:
                raise RuntimeError(f"{' '.join(argv[:4])} ... exited with code {rc}")
        return 0

    def _on_sigterm(self, signum, frame) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signal.SIGTERM)

    def checkpoint(self):
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            if _wait(child, timeout=60) is None:
                child.kill()
        return submitit.helpers.DelayedSubmission(
            CommandJob(self.commands, self.cwd, self.log, self.own_jobs)
        )


JOB_VARIABLES = ("SLURM_", "SBATCH_", "SRUN_", "SUBMITIT_")
