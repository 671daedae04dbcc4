"""Executors by name, and the reconciliation of run folders with their queues.

A backend is one module with one `Executor` subclass (base.py), one line in `EXECUTORS` (or a
`register` call, e.g. from a test) and one YAML in sweeps/cluster/ whose `executor:` names it.
Job ids carry their backend's name as a prefix (`local:host:pid`, `slurm:1234_5`), so polling
and cancelling go to the backend that made the job.

`reconcile` is the one place that decides what state a run is in: result.json first (the run has
ended), then status.json, corrected by what the run's queue says about its job (asked once per
poll for all jobs of a backend). A job that left the queue without a result becomes `failed` with
the queue's reason (or `cancelled`), and that is written back to status.json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scaling import store
from scaling.errors import UserError
from scaling.executors.base import Executor, JobInfo, QueueUnavailable, Run
from scaling.executors.local import LocalExecutor
from scaling.executors.slurm import SlurmExecutor
from scaling.spec import RunSpec

__all__ = [
    "EXECUTORS",
    "Executor",
    "JobInfo",
    "Run",
    "RunView",
    "cancel_jobs",
    "executor_for",
    "parse_cluster",
    "reconcile",
    "register",
    "sweep_run_dirs",
    "sweep_views",
]

EXECUTORS: dict[str, type[Executor]] = {cls.name: cls for cls in (LocalExecutor, SlurmExecutor)}

_LEGACY_SLURM_ID = re.compile(r"^\d+(_\d+)?$")  # ids written before job ids carried a prefix


def register(cls: type[Executor]) -> type[Executor]:
    """Adds a backend (usable as a class decorator)."""
    EXECUTORS[cls.name] = cls
    return cls


def executor_class(name: Any) -> type[Executor]:
    try:
        return EXECUTORS[name]
    except (KeyError, TypeError):
        raise UserError(
            f"unknown executor {name!r} in the cluster config: choose from {', '.join(EXECUTORS)}"
        ) from None


def parse_cluster(raw: dict[str, Any] | None) -> Any:
    """The `cluster` section of a sweep as its executor's config dataclass (one-line errors)."""
    raw = dict(raw or {})
    return executor_class(raw.get("executor", LocalExecutor.name)).parse_config(raw)


def executor_for(cluster: dict[str, Any] | None) -> Executor:
    raw = dict(cluster or {})
    return executor_class(raw.get("executor", LocalExecutor.name)).from_cluster(raw)


def backend_of(job_id: str) -> type[Executor] | None:
    name, sep, _ = job_id.partition(":")
    if sep and name in EXECUTORS:
        return EXECUTORS[name]
    return SlurmExecutor if _LEGACY_SLURM_ID.match(job_id) else None


def _by_backend(job_ids: list[str]) -> tuple[dict[type[Executor], list[str]], list[str]]:
    groups: dict[type[Executor], list[str]] = {}
    unknown = []
    for job_id in sorted(set(job_ids)):
        cls = backend_of(job_id)
        if cls is None:
            unknown.append(job_id)
        else:
            groups.setdefault(cls, []).append(job_id)
    return groups, unknown


def poll_jobs(job_ids: list[str]) -> tuple[dict[str, JobInfo], list[str]]:
    """What the queues say about these jobs: one call per backend. Returns (infos, warnings)."""
    groups, unknown = _by_backend(job_ids)
    infos = {j: JobInfo("unknown", reason="the job id names no known executor") for j in unknown}
    warnings = [f"job id {j!r} names no known executor ({', '.join(EXECUTORS)})" for j in unknown]
    for cls, ids in groups.items():
        try:
            infos.update(cls.poll(ids))
        except QueueUnavailable as e:
            warnings.append(f"{e}; showing the states stored in the run folders")
    return infos, warnings


def cancel_jobs(job_ids: list[str]) -> None:
    """Cancels jobs of every backend (one call per backend)."""
    groups, _ = _by_backend(job_ids)
    for cls, ids in groups.items():
        cls.cancel(ids)


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


def reconcile(run_dirs: list[Path], write: bool = True) -> tuple[list[RunView], list[str]]:
    """The current state of each run; with `write`, changes the queue reveals go to status.json."""
    specs = {d: store.load_run_spec(d) for d in run_dirs}  # an unreadable spec stops us before any write
    statuses = {d: store.read_status(d) for d in run_dirs}
    states = {d: store.run_state(d) for d in run_dirs}
    active_jobs = [s.job_id for d, s in statuses.items() if states[d] in store.ACTIVE and s.job_id]
    infos, warnings = poll_jobs(active_jobs)
    views = []
    for d in run_dirs:
        status, state = statuses[d], states[d]
        info = infos.get(status.job_id) if state in store.ACTIVE and status.job_id else None
        if info is not None:
            status, state = _apply(d, status, state, info, write)
        if state not in store.ENDED and state != "running":
            owner = store.run_owner(d)  # a live trainer whose job is gone (its runner was killed)
            if owner is not None:
                status, state = replace(status, reason=f"still trained by {owner}"), "running"
        views.append(RunView(d, specs[d], state, status, store.run_progress(d, specs[d])))
    return views, warnings


def _apply(run_dir: Path, status: store.RunStatus, state: str, info: JobInfo, write: bool):
    fields: dict[str, Any]
    if info.state == "ended":
        if store.read_result(run_dir) is not None:  # it ended between our two reads
            return store.read_status(run_dir), store.run_state(run_dir)
        fresh = store.read_status(run_dir)
        if fresh.state in ("failed", "cancelled"):  # the job wrote its own reason before leaving
            return fresh, fresh.state
        new_state = "cancelled" if info.cancelled else "failed"
        fields = {"reason": info.reason, "requeues": max(status.requeues, info.restarts)}
        if info.node:  # the node died under the job, which could not say so itself
            fields["failed_on"] = info.node
    elif info.state == "pending":
        new_state = "requeued" if info.restarts > 0 or state == "requeued" else "queued"
        fields = {"requeues": max(status.requeues, info.restarts)}
    elif info.state == "running":
        new_state, fields = "running", {"requeues": max(status.requeues, info.restarts)}
    else:  # active (a live local runner) or unknown: the folder knows best
        return status, state
    if new_state == state and all(
        getattr(status, k) == v for k, v in fields.items() if k not in ("reason", "failed_on")
    ):
        return status, state
    if write:
        # the state may have changed since we read it (`scaling cancel`): then this answer is stale
        written = store.write_status(
            run_dir, new_state, if_job=status.job_id, if_state=(status.state,), **fields
        )
        return written, written.state
    return replace(status, state=new_state, **fields), new_state


def sweep_run_dirs(sweep_dir: Path) -> list[Path]:
    runs = sweep_dir / "runs"
    if not runs.is_dir():
        raise UserError(f"no runs under {sweep_dir}: start the sweep with `scaling sweep {sweep_dir.name}`")
    return sorted(p for p in runs.iterdir() if (p / store.SPEC_FILE).exists())


def sweep_views(sweep_dir: Path, write: bool = True) -> tuple[list[RunView], list[str]]:
    """Every run folder of a sweep, reconciled with its queue, and the queues' warnings; `write`
    records what the queue reveals in status.json (a report, `scaling status`, writes nothing)."""
    store.check_layout(sweep_dir)
    return reconcile(sweep_run_dirs(sweep_dir), write=write)
