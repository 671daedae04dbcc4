"""Executors (local, SLURM) and the reconciliation of run folders with their queues.

`reconcile` is the one place that decides what state a run is in: result.json first (the run has
ended), then status.json, corrected by what the run's queue says about its job (asked once per
poll for all jobs of a kind). A job that left the queue without a result becomes `failed` with
the queue's reason (or `cancelled`), and that is written back to status.json.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from scaling import store
from scaling.errors import UserError
from scaling.executors import local, slurm
from scaling.executors.base import Executor, JobInfo, LocalConfig, Run, SlurmConfig, parse_cluster
from scaling.spec import RunSpec

__all__ = ["Executor", "Run", "RunView", "cancel_jobs", "make_executor", "parse_cluster", "reconcile"]


def make_executor(cluster: dict) -> Executor:
    config = parse_cluster(cluster)
    if isinstance(config, SlurmConfig):
        return slurm.SlurmExecutor(config)
    assert isinstance(config, LocalConfig)
    return local.LocalExecutor(config)


def is_local(job_id: str) -> bool:
    return job_id.startswith(local.PREFIX)


@dataclass(frozen=True)
class RunView:
    run_dir: Path
    spec: RunSpec
    state: str
    status: store.RunStatus
    progress: store.Progress

    @property
    def run_key(self) -> str:
        return self.run_dir.name


def poll_jobs(job_ids: list[str]) -> tuple[dict[str, JobInfo], list[str]]:
    """What the queues say about these jobs: one call per kind. Returns (infos, warnings)."""
    infos: dict[str, JobInfo] = {}
    warnings: list[str] = []
    local_ids = [j for j in job_ids if is_local(j)]
    slurm_ids = [j for j in job_ids if not is_local(j)]
    infos.update(local.poll(local_ids))
    if slurm_ids:
        try:
            infos.update(slurm.poll(slurm_ids))
        except slurm.QueueUnavailable as e:
            warnings.append(f"{e}; showing the states stored in the run folders")
    return infos, warnings


def reconcile(run_dirs: list[Path], write: bool = True) -> tuple[list[RunView], list[str]]:
    """The current state of each run; with `write`, changes the queue reveals go to status.json."""
    specs = {d: store.load_run_spec(d) for d in run_dirs}  # an unreadable spec stops us before any write
    statuses = {d: store.read_status(d) for d in run_dirs}
    states = {d: store.run_state(d) for d in run_dirs}
    active_jobs = [s.job_id for d, s in statuses.items() if states[d] in store.ACTIVE and s.job_id]
    infos, warnings = poll_jobs(sorted(set(active_jobs)))
    views = []
    for d in run_dirs:
        status, state = statuses[d], states[d]
        info = infos.get(status.job_id) if state in store.ACTIVE and status.job_id else None
        if info is not None:
            status, state = _apply(d, status, state, info, write)
        views.append(RunView(d, specs[d], state, status, store.run_progress(d, specs[d])))
    return views, warnings


def _apply(run_dir: Path, status: store.RunStatus, state: str, info: JobInfo, write: bool):
    if info.state == "ended":
        if store.read_result(run_dir) is not None:  # it ended between our two reads
            return store.read_status(run_dir), store.run_state(run_dir)
        fresh = store.read_status(run_dir)
        if fresh.state in ("failed", "cancelled"):  # the job wrote its own reason before leaving
            return fresh, fresh.state
        new_state = "cancelled" if info.cancelled else "failed"
        fields = {"reason": info.reason, "requeues": max(status.requeues, info.restarts)}
    elif info.state == "pending":
        new_state = "requeued" if info.restarts > 0 or state == "requeued" else "queued"
        fields = {"requeues": max(status.requeues, info.restarts)}
    elif info.state == "running":
        new_state, fields = "running", {"requeues": max(status.requeues, info.restarts)}
    else:  # active (a live local runner) or unknown: the folder knows best
        return status, state
    if new_state == state and all(getattr(status, k) == v for k, v in fields.items() if k != "reason"):
        return status, state
    if write:
        return store.write_status(run_dir, new_state, if_job=status.job_id, **fields), new_state
    return replace(status, state=new_state, **fields), new_state


def cancel_jobs(job_ids: list[str]) -> None:
    """Cancels jobs of every kind: one scancel for all SLURM ids, SIGTERM for local runners."""
    local.cancel([j for j in job_ids if is_local(j)])
    slurm.cancel([j for j in job_ids if not is_local(j)])


def sweep_run_dirs(sweep_dir: Path) -> list[Path]:
    runs = sweep_dir / "runs"
    if not runs.is_dir():
        raise UserError(f"no runs under {sweep_dir}: start the sweep with `scaling sweep {sweep_dir.name}`")
    return sorted(p for p in runs.iterdir() if (p / store.SPEC_FILE).exists())
