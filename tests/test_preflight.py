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
