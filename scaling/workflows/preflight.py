"""`scaling preflight SWEEP cluster=...`: check the cluster before a sweep's jobs go out.

Per resources entry the sweep's runs use (a resource class): `sbatch --test-only` with that entry's
options, then one short job of that entry whose every task runs trainer/preflight.py: imports,
GPUs, an all-reduce across all the job's ranks (NCCL or gloo), reading the prepared data's
manifest, writing and deleting a file in the results folder. One line per class and check; the
result is False when any check failed. On the local executor the same checks run here, in one
process.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scaling import paths
from scaling.config import SweepConfig
from scaling.errors import UserError
from scaling.executors import Executor, Run, executor_for
from scaling.executors.slurm import Resources, SlurmExecutor, submit_command
from scaling.plan import plan_sweep
from scaling.spec import data_folder
from trainer import preflight

JOB_MINUTES = 10
WAIT_S = 900  # a preflight job that has not ended by then (queued behind others) is reported as such


@dataclass(frozen=True)
class Finding:
    where: str  # the resource class ("1 GPU x 1 node") or "here"
    check: str
    ok: bool
    detail: str


def run_preflight(cfg: SweepConfig, say: Callable[[str], None] = print) -> list[Finding]:
    executor = executor_for(cfg.cluster)
    executor.check()
    plan = plan_sweep(cfg)
    results_dir = paths.sweep_dir(cfg.name)
    folder = data_folder(cfg.data)
    data_arg = str(folder) if (folder / "manifest.json").exists() else ""
    findings = []
    if not data_arg:
        findings.append(
            Finding("here", "data", False, f"no prepared data at {folder}: `scaling prepare {cfg.name}`")
        )
    if not isinstance(executor, SlurmExecutor):
        return findings + _here(results_dir, data_arg, say)
    runs = [Run(Path(d.run_key), d.spec, d.params_total) for d in plan.details]
    by_key = {run.run_key: run for run in runs}
    limits: dict[Resources, int] = {}  # per resources class: the longest limit its jobs ask for
    for group in executor.pack(runs):
        r = executor.config.resources_for(by_key[group.keys[0]])
        limits[r] = max(limits.get(r, 0), group.time_limit_min or r.timeout_min)
    jobs = {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i, (r, limit) in enumerate(limits.items()):
        where = f"class {i + 1} ({_describe(r)})"
        refused = executor.test_only(r, limit)
        findings.append(
            Finding(
                where,
                "sbatch --test-only",
                refused is None,
                refused or f"a {limit}-minute job would be accepted",
            )
        )
        # submitit's files and the reports go beside the data (a shared folder the check needs
        # anyway), not into the results folder, which is one of the things checked
        folder = paths.data_root() / ".preflight" / cfg.name / f"{stamp}-{i}"
        argv = [
            sys.executable,
            *("-m", "trainer.preflight", "--report", str(folder / "report"), "--results", str(results_dir)),
            *("--data", data_arg, "--gpus", str(r.gpus_per_node)),
        ]
        try:
            jobs[where] = (
                submit_command(executor.config, folder, f"preflight-{cfg.name}", [argv], r, JOB_MINUTES),
                folder,
            )
        except UserError as e:
            findings.append(Finding(where, "submit", False, str(e)))
            continue
        say(f"preflight: {where}: job {jobs[where][0]}")
    findings += _wait(executor, jobs, say)
    return findings


def _wait(executor: Executor, jobs: dict[str, tuple[str, Path]], say) -> list[Finding]:
    deadline = time.monotonic() + WAIT_S
    pending = dict(jobs)
    findings = []
    while pending:
        infos = type(executor).poll([job for job, _ in pending.values()])
        for where, (job, folder) in list(pending.items()):
            if infos[job].state == "ended":
                findings += _read(where, folder, job)
                del pending[where]
        if pending and time.monotonic() > deadline:
            for where, (job, _) in pending.items():
                findings.append(
                    Finding(where, "job", False, f"{job} did not end within {WAIT_S // 60} minutes (queued?)")
                )
            break
        time.sleep(2)
    return findings


def _read(where: str, folder: Path, job: str) -> list[Finding]:
    reports = sorted(folder.glob("report.rank*"))
    if not reports:
        return [Finding(where, "job", False, f"{job} wrote no report: see {folder} (submitit's logs)")]
    findings = []
    for report in reports:
        for line in report.read_text().splitlines():
            row = json.loads(line)
            findings.append(
                Finding(f"{where} rank {row['rank']} ({row['host']})", row["check"], row["ok"], row["detail"])
            )
    return findings


def _here(results_dir: Path, data_arg: str, say) -> list[Finding]:
    folder = paths.data_root() / ".preflight" / results_dir.name / time.strftime("%Y%m%d-%H%M%S")
    code = preflight.main(
        ["--report", str(folder / "report"), "--results", str(results_dir), "--data", data_arg]
    )
    findings = _read("here", folder, "the local check")
    if code and all(f.ok for f in findings):
        findings.append(Finding("here", "checks", False, f"exit code {code}"))
    return findings


def _describe(r: Resources) -> str:
    gpus = f"{r.gpus_per_node} GPU" + ("s" if r.gpus_per_node != 1 else "") if r.gpus_per_node else "CPU"
    return f"{gpus} x {r.nodes} node" + ("s" if r.nodes > 1 else "")
