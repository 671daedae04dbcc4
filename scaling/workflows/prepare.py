"""Data preparation as a stage: in this process with N workers, or on a cluster as its own job.

    folder = prepare_for_sweep(load_sweep("paper"))     # the sweep's data, prepared once
    estimate = estimate_for(cfg.data)                    # files, bytes, tokens, time with N workers

With the local executor the preparation runs here (trainer.prepare, N worker processes). With the
SLURM executor it is one job (`scaling prepare --out FOLDER --workers N`, through
scaling.executors.slurm.submit_command) in the cluster's partition and account, with the cores of
the largest `cluster.resources` entry (or data.workers) and data.prepare_mem_gb /
data.prepare_timeout_min; this process waits for it, reporting the shards done. A job that is
still queued or running for the same folder (its id is kept beside the folder) is waited for,
not submitted again. Either way a rerun resumes: finished shards are kept.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scaling import atomic, paths
from scaling.config import DataConfig, SweepConfig
from scaling.errors import UserError
from scaling.executors import executor_for
from scaling.spec import data_folder
from trainer import data, prepare


def prepare_for_sweep(cfg: SweepConfig, say: Callable[[str], None] = print) -> Path:
    """The sweep's prepared folder, prepared first if it is not (see the module docstring)."""
    d = cfg.data
    folder = data_folder(d)
    if (folder / prepare.MANIFEST).exists():
        data.check_prepared(folder, d)
        return folder
    executor = executor_for(cfg.cluster)
    if executor.name == "slurm":
        return _on_slurm(d, executor.config, folder, say)
    cores = prepare.available_cores()
    if d.workers > cores:
        say(f"data: {d.workers} workers asked, this machine has {cores} cores: using {cores}")
    return data.prepare_data(d, log=say, workers=min(d.workers or cores, cores))


def prepare_argv(d: DataConfig, folder: Path, workers: int) -> list[str]:
    """The `scaling prepare` command line that prepares `d` into `folder`."""
    return [
        sys.executable,
        "-m",
        "scaling.cli",
        "prepare",
        *("--corpus", d.corpus, "--tokenizer", d.tokenizer, "--vocab-size", str(d.vocab_size)),
        *("--val-fraction", repr(float(d.val_fraction)), "--val-files", d.val_files),
        *("--text-field", d.text_field, "--out", str(folder.resolve()), "--workers", str(workers)),
    ]


def _on_slurm(d: DataConfig, config, folder: Path, say: Callable[[str], None]) -> Path:
    from scaling.executors.slurm import Resources, SlurmExecutor, live_job, submit_command

    cpus = d.workers or max(r.cpus_per_task for r in config.resources)
    record = folder.parent / f".{folder.name}.job.json"  # beside the folder: the folder is prepare's
    job_id = live_job(record)
    if job_id:
        say(f"data: preparation job {job_id} for {folder} is already queued or running: waiting for it")
    else:
        logs = paths.data_root() / ".jobs" / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        argv = prepare_argv(d, folder, cpus)
        resources = Resources(float("inf"), gpus_per_node=0, cpus_per_task=cpus, mem_gb=d.prepare_mem_gb)
        try:
            job_id = submit_command(
                config, logs, f"prepare-{folder.name}", [argv], resources, d.prepare_timeout_min
            )
        except UserError as e:
            raise UserError(
                f"{e} (the job asked for {cpus} cores and {d.prepare_mem_gb:g} GB: set data.workers and "
                "data.prepare_mem_gb to what a node of the partition has)"
            ) from None
        atomic.write_json(record, {"job_id": job_id, "logs": str(logs), "argv": argv})
        say(f"data: submitted the preparation of {folder} as job {job_id} ({cpus} cores; logs in {logs})")
    poll_s = float(config.poll_s)
    last = ""
    while True:
        info = SlurmExecutor.poll([job_id])[job_id]
        shards = folder / prepare.SHARDS
        done = len(list(shards.glob("*.json"))) if shards.is_dir() else 0
        line = f"data: job {job_id} {info.state}, {done} shards done"
        if line != last:
            say(line)
            last = line
        if info.state == "ended":
            break
        time.sleep(poll_s)
    if not (folder / prepare.MANIFEST).exists():
        logs = json.loads(record.read_text()).get("logs", "")
        raise UserError(
            f"preparation job {job_id} ended without a manifest ({info.reason}): {_last_error(Path(logs))}; "
            f"logs in {logs}; run again to resume"
        )
    record.unlink(missing_ok=True)
    data.check_prepared(folder, d)
    return folder


def _last_error(logs: Path) -> str:
    """The job's last `error:` line (what `scaling prepare` printed), else its stderr's last line."""
    lines: list[str] = []
    for f in sorted(logs.glob("*.err")) + sorted(logs.glob("*.out")):
        lines += [line.strip() for line in f.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error: " in line]
    return (errors or lines or ["no log"])[-1]


def estimate_for(
    d: DataConfig | prepare.Source, workers: int = 0, out: Path | None = None
) -> prepare.Estimate:
    source = d if isinstance(d, prepare.Source) else prepare.Source.of(d)
    return prepare.estimate(source, out or data_folder(d), workers)
