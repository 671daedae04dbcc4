"""What every executor offers the sweep, status and cancel commands, and the cluster config schema.

An executor submits runs and answers, in one call per poll for all of a sweep's jobs, what its
queue knows about them. It never decides a run's state alone: `scaling.executors.reconcile`
combines the queue's answer with the run folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from scaling.errors import UserError
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
    """What a queue says about one job. `state` is pending | running | ended | unknown."""

    state: str
    restarts: int = 0
    reason: str | None = None  # for ended jobs: the queue's own words (state, exit code, reason)
    cancelled: bool = False


class Executor(ABC):
    name: str

    @abstractmethod
    def check(self) -> None:
        """Raises UserError when this executor cannot work here (missing commands)."""

    @abstractmethod
    def resources(self, run: Run) -> dict[str, Any]:
        """What the run would get, for --dry-run."""

    @abstractmethod
    def submit(self, sweep_dir: Path, runs: list[Run]) -> dict[str, str]:
        """Starts the runs; returns run_key -> job id. Writes nothing into the run folders."""

    @abstractmethod
    def interrupt(self, job_ids: list[str]) -> None:
        """What Ctrl-C in a waiting `scaling sweep` does to the jobs."""

    @abstractmethod
    def settle(self, timeout: float) -> None:
        """Once no run is active: waits (bounded) for workers this process started to exit."""


# --- the cluster config (sweeps/cluster/<name>.yaml) ----------------------------------------


@dataclass(frozen=True)
class LocalConfig:
    executor: str = "local"
    max_parallel: int = 0  # 0: one run per GPU when GPUs are present, else one per CPU core
    threads_per_run: int = 0  # 0: the cores split evenly between parallel runs
    poll_s: float = 2.0
    wait_timeout_h: float = 168.0


@dataclass(frozen=True)
class Resources:
    """Resources for every run whose total parameter count is <= max_params."""

    max_params: float
    gpus_per_node: int = 1
    nodes: int = 1
    cpus_per_task: int = 8
    mem_gb: float = 64
    timeout_min: int = 1440


@dataclass(frozen=True)
class SlurmConfig:
    executor: str = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64
    max_num_timeout: int = 3  # requeues after a time limit or preemption before the run fails
    signal_delay_s: int = 120  # USR2 this long before the limit: time to write a checkpoint
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other `#SBATCH --key=value`
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    resources: list[Resources] = field(default_factory=lambda: [Resources(max_params=float("inf"))])
    poll_s: float = 15.0
    wait_timeout_h: float = 168.0

    def resources_for(self, run: Run) -> Resources:
        for r in self.resources:
            if run.params_total <= r.max_params:
                return r
        largest = max(r.max_params for r in self.resources)
        raise UserError(
            f"run {run.run_key} has {run.params_total:.3g} parameters, more than every cluster.resources "
            f"entry allows (largest max_params {largest:.3g}): add an entry with a larger max_params"
        )


CLUSTER_CONFIGS = {"local": LocalConfig, "slurm": SlurmConfig}


def parse_cluster(raw: dict[str, Any]) -> LocalConfig | SlurmConfig:
    """The `cluster` section of a sweep, with one-line errors for unknown executors and keys."""
    raw = dict(raw or {})
    executor = raw.get("executor", "local")
    cls = CLUSTER_CONFIGS.get(executor)
    if cls is None:
        raise UserError(
            f"unknown executor {executor!r} in cluster config: choose from {', '.join(CLUSTER_CONFIGS)}"
        )
    _reject_unknown(raw, cls, "cluster")
    if cls is SlurmConfig and "resources" in raw:
        entries = raw["resources"]
        if not isinstance(entries, list) or not entries:
            raise UserError("cluster.resources must be a non-empty list of {max_params, gpus_per_node, ...}")
        resources = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "max_params" not in entry:
                raise UserError(f"cluster.resources[{i}] must be a mapping with max_params, got {entry!r}")
            _reject_unknown(entry, Resources, f"cluster.resources[{i}]")
            resources.append(
                Resources(**{k: _typed(Resources, k, v, f"cluster.resources[{i}]") for k, v in entry.items()})
            )
        raw["resources"] = resources
    kwargs = {k: v if k == "resources" else _typed(cls, k, v, "cluster") for k, v in raw.items()}
    config = cls(**kwargs)
    if isinstance(config, SlurmConfig):
        if not isinstance(config.sbatch, dict):
            raise UserError(f"cluster.sbatch must be a mapping of sbatch options, got {config.sbatch!r}")
        if not isinstance(config.setup, list):
            raise UserError(f"cluster.setup must be a list of shell lines, got {config.setup!r}")
    return config


def _reject_unknown(raw: dict, cls, where: str) -> None:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise UserError(
            f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})"
        )


def _typed(cls, name: str, value: Any, where: str) -> Any:
    """Numbers as the dataclass declares them (YAML reads 1e9 as a string, 64 as an int)."""
    hint = get_type_hints(cls)[name]
    if value is None or hint not in (int, float):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}.{name}: expected a number, got {value!r}") from None
    if hint is int:
        if number != int(number):
            raise UserError(f"{where}.{name}: expected a whole number, got {value!r}")
        return int(number)
    return number


# --- helpers shared by executors ----------------------------------------------------------


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


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
