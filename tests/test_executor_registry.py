"""A new backend is one class, one registry line and one cluster YAML: an executor defined here
(each run a direct child process of the sweep, no runner) trains a sweep through `scaling sweep`,
and `scaling status` / `scaling cancel` reach it by the prefix of its job ids."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from test_local_executor import runs_of, statuses, sweep_env

from scaling import executors, store
from scaling.cli import main
from scaling.executors import Executor, JobInfo, Run
from scaling.executors.base import launch_trainer, thread_env


@dataclass(frozen=True)
class ChildConfig:
    executor: str = "child"
    poll_s: float = 0.2
    wait_timeout_h: float = 1.0


class ChildExecutor(Executor):
    """Every run a child process of the submitting process."""

    name = "child"
    Config = ChildConfig
    detached = False
    children: ClassVar[dict[str, subprocess.Popen]] = {}

    def resources(self, run: Run) -> dict:
        return {"process": "child of the sweep"}

    def submit(self, sweep_dir: Path, runs: list[Run], record, exclude=()) -> None:
        for run in runs:
            proc = launch_trainer(run.run_dir, run.run_dir / "logs" / "train.log", self.name, thread_env(1))
            self.children[self.job_id(str(proc.pid))] = proc
            record({run.run_key: self.job_id(str(proc.pid))})

    @classmethod
    def poll(cls, job_ids: list[str]) -> dict[str, JobInfo]:
        infos = {}
        for job_id in job_ids:
            rc = cls.children[job_id].poll()
            infos[job_id] = JobInfo("running") if rc is None else JobInfo("ended", reason=f"exit code {rc}")
        return infos

    @classmethod
    def cancel(cls, job_ids: list[str]) -> None:
        for job_id in job_ids:
            cls.children[job_id].terminate()
            cls.children[job_id].wait(timeout=60)


@pytest.fixture
def child_backend(tmp_path, monkeypatch, text_corpus):
    env = sweep_env(tmp_path, monkeypatch, text_corpus)
    monkeypatch.setitem(executors.EXECUTORS, ChildExecutor.name, ChildExecutor)  # the registry line
    (env / "sweeps" / "cluster" / "child.yaml").write_text("executor: child\npoll_s: 0.2\n")  # the YAML
    return env


def test_a_registered_backend_runs_a_sweep(child_backend, capsys):
    results = child_backend / "results"
    assert main(["sweep", "t", "cluster=child"]) == 0
    out = capsys.readouterr().out
    assert "4 to submit (child)" in out and "4 runs: 4 done" in out
    assert all(s["state"] == "done" and s["job_id"].startswith("child:") for s in statuses(results).values())
    assert main(["status", "t", "--runs"]) == 0
    assert "4 runs: 4 done" in capsys.readouterr().out
    assert main(["sweep", "t", "cluster=child"]) == 0  # idempotent: nothing to submit
    assert "4 ended, 0 queued or running, 0 to submit (child)" in capsys.readouterr().out


def test_cancel_reaches_the_backend_by_its_job_id_prefix(child_backend, capsys):
    from test_local_executor import long_run_overrides

    assert main(["sweep", "t", "cluster=child", "--no-wait", *long_run_overrides(4000)]) == 0
    (run_dir,) = runs_of(child_backend / "results")
    job_id = store.read_status(run_dir).job_id
    assert job_id.startswith("child:")
    assert main(["cancel", "t"]) == 0
    assert ChildExecutor.children[job_id].poll() is not None  # the backend's cancel stopped it
    assert store.read_status(run_dir).state == "cancelled"


def test_an_unknown_job_id_prefix_is_reported_not_sent_to_a_queue(tmp_path):
    infos, warnings = executors.poll_jobs(["kube:abc", "local:nohost:1"])
    assert infos["kube:abc"].state == "unknown"
    assert warnings == ["job id 'kube:abc' names no known executor (local, slurm)"]
    assert infos["local:nohost:1"].state == "unknown"  # another host's runner: ask there
