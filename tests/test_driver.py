"""`scaling sweep --detach` on the localhost SLURM cluster: the calling process submits the sweep's
driver as a job and exits; the driver submits and watches the runs, survives being preempted
(USR2: it requeues and watches again without submitting anything twice), then collects, fits and
plots. `scaling status` reports the driver meanwhile; a second --detach submits nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from test_local_executor import sweep_env
from test_slurm import ONE_CPU, native, slurm, slurm_cluster, submitted  # noqa: F401

from scaling import store
from scaling.cli import main

DETACHED = [
    "sweep",
    "t",
    "cluster=slurm-cpu",
    ONE_CPU,
    "arms=[mdlm-ce]",
    "sizes.0.models=[d8-l1,d16-l1,d64-l2]",  # three sizes: a parabola to fit
    "cluster.poll_s=1",
    "--detach",
]


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    return sweep_env(tmp_path, monkeypatch, text_corpus)


def detach() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "scaling.cli", *DETACHED], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def driver_job(env) -> str:
    return json.loads((env / "results" / "t" / "driver" / "job.json").read_text())["job_id"]


def run_dirs(runs) -> list:
    return [p for p in runs.iterdir() if p.is_dir()]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(1)


def driver_state(job: str) -> str:
    return slurm("sacct", "-n", "-X", "-P", "-j", native(job), "-o", "State").strip().splitlines()[-1]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_detached_sweep_finishes_the_study_with_the_caller_gone(slurm_cluster, env, capsys, submitted):  # noqa: F811
    sweep_dir = env / "results" / "t"
    assert "submitted the driver of t as job" in detach()  # and the calling process is gone
    job = driver_job(env)
    submitted.append(job)
    assert "is already queued or running as job " + job in detach()  # nothing submitted twice
    assert driver_job(env) == job

    runs = sweep_dir / "runs"
    wait_until(
        lambda: runs.is_dir() and any(store.read_status(p).state == "running" for p in run_dirs(runs)),
        300,
        "a running run",
    )
    assert main(["status", "t"]) == 0
    assert f"driver: job {job} running" in capsys.readouterr().out
    first_jobs = {p.name: store.read_status(p).job_id for p in run_dirs(runs)}
    slurm("scancel", "--signal=USR2", native(job))  # preempted: it requeues itself
    wait_until(lambda: (sweep_dir / "report.md").exists(), 600, "the driver's report")
    wait_until(lambda: driver_state(job) == "COMPLETED", 120, "the driver's end")

    log = (sweep_dir / "driver" / "driver.log").read_text()
    assert log.count("scaling.cli sweep") == 2, log  # the requeued driver watched again
    assert {p.name: store.read_status(p).job_id for p in run_dirs(runs)} == first_jobs  # not resubmitted
    assert all(store.read_status(p).state == "done" for p in run_dirs(runs))
    assert (sweep_dir / "runs.parquet").exists() and (sweep_dir / "fits" / "fits.json").exists()
    assert (sweep_dir / "plots" / "isoflop.png").exists()
    assert main(["status", "t"]) == 0
    out = capsys.readouterr().out
    assert "3 runs: 3 done" in out and f"driver: job {job} ended (COMPLETED)" in out


def test_detach_needs_a_queue(env, capsys):
    assert main(["sweep", "t", "--detach"]) == 2
    assert "--detach submits the sweep's driver as a SLURM job" in capsys.readouterr().err
    assert main(["sweep", "t", "--detach", "--dry-run"]) == 2
    assert "leave out --dry-run and --no-wait" in capsys.readouterr().err
    assert not (env / "results" / "t").exists()
