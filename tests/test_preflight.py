"""`scaling preflight` passes on a healthy cluster and names what is wrong on a broken one: a
missing manifest, a results folder that cannot be written (the localhost SLURM cluster: two tasks,
an all-reduce over gloo)."""

from __future__ import annotations

import subprocess

import pytest
from test_hardening import small_disk  # noqa: F401 (a fixture)
from test_local_executor import sweep_env
from test_slurm import slurm_cluster  # noqa: F401 (a fixture)

from scaling.cli import main

TWO_TASKS = (
    "cluster.resources=[{max_params: 1e12, gpus_per_node: 0, tasks_per_node: 2, cpus_per_task: 1,"
    " mem_gb: 1, timeout_min: 10}]"
)


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    return sweep_env(tmp_path, monkeypatch, text_corpus)


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_a_missing_manifest_fails_here(env, capsys):
    assert main(["preflight", "t"]) == 1
    out = lines(capsys)
    assert any(line.startswith("FAIL here") and "no prepared data" in line for line in out), out
    assert any(line.startswith("ok   here") and "results:" in line for line in out), out
    assert out[-1].endswith("1 failed")


@pytest.mark.slurm
def test_preflight_on_the_cluster_passes_then_fails_on_a_read_only_results_folder(
    slurm_cluster,  # noqa: F811
    env,
    capsys,
    small_disk,  # noqa: F811
    monkeypatch,
):
    assert main(["prepare", "t"]) == 0
    capsys.readouterr()
    assert main(["preflight", "t", "cluster=slurm-cpu", TWO_TASKS]) == 0
    out = lines(capsys)
    assert sum("collective: all-reduce over 2 rank(s) ok" in line for line in out) == 2, out
    assert any("sbatch --test-only: a 10-minute job would be accepted" in line for line in out), out
    assert out[-1] == "preflight: 11 of 11 checks passed"

    monkeypatch.setenv("SCALING_RESULTS", str(small_disk))
    (small_disk / "t").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["preflight", "t", "cluster=slurm-cpu", TWO_TASKS]) == 1
    out = lines(capsys)
    failed = [line for line in out if line.startswith("FAIL")]
    assert failed and all("results: OSError" in line and "Read-only" in line for line in failed), out


def test_each_class_is_tested_at_the_longest_limit_of_its_jobs(monkeypatch, tmp_path):
    """Packed groups ask for longer limits than their runs alone: sbatch --test-only is asked about
    the longest job of each resources class, not the first run's."""
    from scaling.config import load_sweep
    from scaling.executors import slurm as slurm_executor
    from scaling.workflows import preflight

    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path))
    monkeypatch.setattr(slurm_executor.SlurmExecutor, "check", lambda self: None)
    asked: list[int] = []
    monkeypatch.setattr(slurm_executor.SlurmExecutor, "test_only", lambda self, r, limit: asked.append(limit))

    def refuse(*args, **kwargs):
        raise preflight.UserError("not submitted in this test")

    monkeypatch.setattr(preflight, "submit_command", refuse)
    cfg = load_sweep("paper", ["cluster=slurm"])
    preflight.run_preflight(cfg, say=lambda m: None)
    executor = preflight.executor_for(cfg.cluster)
    plan = preflight.plan_sweep(cfg)
    runs = [preflight.Run(tmp_path / d.run_key, d.spec, d.params_total) for d in plan.details]
    first: dict = {}  # per resources class: its first run's own limit (what was asked before)
    for run in runs:
        first.setdefault(executor.config.resources_for(run), executor.place(run).time_limit_min)
    longest: dict = {}
    for group in executor.pack(runs):
        r = executor.config.resources_for(next(run for run in runs if run.run_key == group.keys[0]))
        longest[r] = max(longest.get(r, 0), group.time_limit_min)
    assert asked == [longest[r] for r in first]
    assert asked != list(first.values())  # the paper grid's first runs are not its longest jobs
