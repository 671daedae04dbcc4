"""A sweep's driver as a SLURM job, so that nothing has to live on the login node.

    job_id = submit_driver(load_sweep("paper", ["cluster=slurm"]))   # `scaling sweep ... --detach`
    line = driver_line(paths.sweep_dir("paper"))                     # for `scaling status`

The driver is a small CPU job (cluster.driver_cpus, driver_mem_gb, driver_timeout_min, in
cluster.driver_partition or the cluster's partition) that runs what `make sweep` runs here:

    scaling sweep results/<sweep>/driver/sweep.yaml   # plan, prepare, submit, watch until no run is active
    scaling collect <sweep>; scaling fit <sweep>; scaling plot <sweep>

Its config is the one given at --detach, pinned to results/<sweep>/driver/sweep.yaml (editing the
sweep file later does not change a running driver). Every step is idempotent, so at its time limit
the driver requeues itself and starts over: the sweep finds its runs queued or running and only
watches them again. A second --detach while the driver is queued or running submits nothing.
The commands' output goes to results/<sweep>/driver/driver.log; `scaling cancel` stops the driver
before the runs (else it would resubmit them).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import yaml

from scaling import atomic, paths, store
from scaling.config import SweepConfig
from scaling.errors import UserError
from scaling.executors import QueueUnavailable, executor_for
from scaling.executors.slurm import Resources, SlurmExecutor, live_job, submit_command

FOLDER = "driver"
JOB_FILE = "job.json"
CONFIG_FILE = "sweep.yaml"
LOG_FILE = "driver.log"
REQUEUES = 1000  # time limits the driver outlives; each one only restarts the watch


def driver_commands(name: str, config: Path) -> list[list[str]]:
    cli = [sys.executable, "-m", "scaling.cli"]
    return [[*cli, "sweep", str(config)], *([*cli, stage, name] for stage in ("collect", "fit", "plot"))]


def submit_driver(cfg: SweepConfig, say: Callable[[str], None] = print) -> str:
    """Submits the sweep's driver job unless one is queued or running; returns its job id."""
    executor = executor_for(cfg.cluster)
    if not isinstance(executor, SlurmExecutor):
        raise UserError(
            f"--detach submits the sweep's driver as a SLURM job, and cluster {executor.name} has no queue: "
            "use a SLURM cluster config (cluster=slurm), or run `scaling sweep` here without --detach"
        )
    executor.check()
    sweep_dir = paths.sweep_dir(cfg.name)
    store.check_layout(sweep_dir)
    folder = sweep_dir / FOLDER
    running = live_job(folder / JOB_FILE)
    if running:
        say(
            f"the driver of {cfg.name} is already queued or running as job {running}: nothing submitted "
            f"(its log: {folder / LOG_FILE}; `scaling cancel {cfg.name}` stops it and the runs)"
        )
        return running
    store.init_layout(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / CONFIG_FILE
    atomic.write_text(config, yaml.safe_dump(asdict(cfg), sort_keys=False))
    c = executor.config
    resources = Resources(math.inf, gpus_per_node=0, cpus_per_task=c.driver_cpus, mem_gb=c.driver_mem_gb)
    logs = folder / "submitit" / time.strftime("%Y%m%d-%H%M%S")
    job_id = submit_command(
        replace(c, partition=c.driver_partition or c.partition),
        logs,
        f"driver-{cfg.name}",
        driver_commands(cfg.name, config),
        resources,
        c.driver_timeout_min,
        requeues=REQUEUES,
        log=folder / LOG_FILE,
        own_jobs=True,
    )
    atomic.write_json(
        folder / JOB_FILE, {"job_id": job_id, "submitted_at": round(time.time(), 3), "submitit": str(logs)}
    )
    say(
        f"submitted the driver of {cfg.name} as job {job_id}: it submits and watches the runs, then collects, "
        f"fits and plots; its log: {folder / LOG_FILE}; watch with `scaling status {cfg.name}`, "
        f"stop with `scaling cancel {cfg.name}`"
    )
    return job_id


def _recorded_job(sweep_dir: Path) -> str | None:
    try:
        return (store.load_json(sweep_dir / FOLDER / JOB_FILE) or {}).get("job_id")
    except store.MalformedFile:
        return None


def driver_line(sweep_dir: Path) -> str | None:
    """`driver: job slurm:N running ...` for a sweep that has (had) a driver job, else None."""
    job_id = _recorded_job(sweep_dir)
    if not job_id:
        return None
    try:
        info = SlurmExecutor.poll([job_id])[job_id]
    except QueueUnavailable as e:
        return f"driver: job {job_id} (the queue cannot say: {e})"
    state = info.state if info.state != "ended" else f"ended ({info.reason})"
    return f"driver: job {job_id} {state}; its log: {sweep_dir / FOLDER / LOG_FILE}"


def cancel_driver(sweep_dir: Path) -> str | None:
    """Cancels the sweep's driver job if it is queued or running; returns its id."""
    job_id = live_job(sweep_dir / FOLDER / JOB_FILE)
    if job_id:
        SlurmExecutor.cancel([job_id])
    return job_id
