"""A hung trainer, frozen (SIGSTOP, as in a hung collective): its heartbeat stops. On the localhost
SLURM cluster the job's watchdog checkpoints and requeues it, the node goes into status.json, the
requeued job resumes to the end, and the next submission would exclude the node but for it being
the last one (the exclusion rule itself: test_nodes.py). Under the local executor the runner
kills it and starts it again from its last checkpoint, once per stall up to max_stalls."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_local_executor import long_run_overrides, sweep_env
from test_slurm import ONE_CPU, native, slurm, slurm_cluster, step_pids, submitted, wait_running, watch  # noqa: F401

from scaling import store
from scaling.cli import main

STALL = [
    "cluster=slurm-cpu",
    ONE_CPU,
    "cluster.stall_timeout_min=0.5",  # 30 s without a heartbeat
    "cluster.signal_delay_s=15",  # the frozen trainer gets 5 s to checkpoint, then it is killed
    "cluster.poll_s=1",
]


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    return sweep_env(tmp_path, monkeypatch, text_corpus)


def trainer_pid(job_id: str) -> int:
    """The `scaling train` process among the job's step processes."""
    for pid in step_pids(native(job_id)):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"train" in cmdline and b"scaling.cli" in cmdline:
            return pid
    raise AssertionError(f"no trainer among the processes of job {job_id}")


@pytest.mark.slurm
@pytest.mark.slow
def test_a_hung_trainer_is_requeued_and_its_node_recorded(slurm_cluster, env, capsys, submitted):  # noqa: F811
    argv = ["sweep", "t", *long_run_overrides(800), *STALL]
    assert main([*argv, "--no-wait"]) == 0
    capsys.readouterr()
    (run,) = sorted(p for p in (env / "results" / "t" / "runs").iterdir() if p.is_dir())
    job = store.read_status(run).job_id
    submitted.append(job)
    node = slurm("sinfo", "-h", "-N", "-o", "%N").split()[0]

    wait_running(run, 100)
    assert (run / store.HEARTBEAT_FILE).exists()  # the trainer beats
    os.kill(trainer_pid(job), signal.SIGSTOP)
    seen = watch([run], timeout=600)

    status, result = store.read_status(run), store.read_result(run)
    assert "requeued" in seen[run] and result is not None and result.status == "done", seen
    assert status.failed_nodes == [node] and status.stalls == 1 and status.requeues >= 1, status
    log = (run / "logs" / "train.log").read_text()
    assert f"restart 0 on {node}" in log and "restart 1" in log and "resumed" in log

    assert main(["status", "t"]) == 0
    assert f"nodes with failed or stalled runs: {node} (1)" in capsys.readouterr().out
    # one failure is enough with exclude_after=1, but the node is the cluster's only one
    assert main([*argv, "cluster.exclude_after=1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "excluded from new jobs" not in out
    assert f"not excluded, the last node(s) left: {node}" in out


def trainer_of(run_dir: Path) -> int:
    """The pid of the `scaling train` process of this run folder."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"scaling.cli" in argv and b"train" in argv and str(run_dir).encode() in argv:
            return int(proc.name)
    raise AssertionError(f"no trainer of {run_dir}")


@pytest.mark.slow
@pytest.mark.parametrize("max_stalls", [2, 0])
def test_a_hung_local_trainer_is_restarted_from_its_checkpoint(env, capsys, max_stalls):
    """A stall restarts the run, which resumes and finishes; with max_stalls 0 it fails instead.
    (2, not 1: a restart slower than 24 s to its first beat on a loaded machine is a stall too.)"""
    argv = ["sweep", "t", *long_run_overrides(800), "cluster.max_parallel=1", "cluster.poll_s=0.5"]
    argv += ["cluster.stall_timeout_min=0.4", f"cluster.max_stalls={max_stalls}"]  # 24 s without a beat
    assert main([*argv, "--no-wait"]) == 0
    (run,) = sorted(p for p in (env / "results" / "t" / "runs").iterdir() if p.is_dir())
    wait_running(run, 100)
    frozen = trainer_of(run)
    os.kill(frozen, signal.SIGSTOP)
    seen = watch([run], timeout=300)

    status, result = store.read_status(run), store.read_result(run)
    if max_stalls == 0:
        assert status.state == "failed" and result is None, (seen, status)
        assert (
            status.reason.startswith("stalled: no heartbeat for")
            and "more than cluster.max_stalls" in status.reason
        )
        assert status.stalls == 1
        return
    assert result is not None and result.status == "done", (seen, status)  # `requeued` lasts a moment
    assert status.stalls >= 1 and status.failed_nodes == [], status
    assert "resumed" in (run / "logs" / "train.log").read_text()
    runner_log = next((env / "results" / "t" / "local").glob("*.log")).read_text()
    assert f"{run.name}: stalled: no heartbeat for" in runner_log
