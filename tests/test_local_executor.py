"""The local executor end to end: `scaling sweep` trains every run with real `scaling train`
processes, submits nothing the second time, reruns only a deleted result, stops cleanly on Ctrl-C
and `scaling cancel`, and resumes to the same final loss as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling import store
from scaling.cli import main
from scaling.executors import Run, reconcile
from scaling.executors.local import LocalConfig, LocalExecutor, slots
from scaling.flops import ModelShape, train_flops_per_seq
from scaling.host import cpu_count
from scaling.paths import PROJECT_ROOT

LADDER = """\
ladder:
  - {name: d8-l1, d_model: 8, n_layers: 1, n_heads: 1}
  - {name: d16-l1, d_model: 16, n_layers: 1, n_heads: 1}
  - {name: d64-l2, d_model: 64, n_layers: 2, n_heads: 2}
"""


def write_sweep(folder: Path, corpus: Path, name: str = "t") -> Path:
    """A sweep config folder: the project's cluster group and a tiny byte-level sweep `name`
    (2 arms x 1 budget x 2 sizes, 15-38 steps; budgets/sizes are overridden for long runs)."""
    shutil.copytree(PROJECT_ROOT / "sweeps" / "cluster", folder / "cluster", dirs_exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"""defaults:
  - cluster: local
  - _self_
name: {name}
arms: [ar, mdlm-ce]
budgets: [1e8]
seeds: [0]
flops_convention: attention
{LADDER}sizes: [{{models: [d8-l1, d16-l1]}}]
expected_tokens_per_param: 200
data: {{corpus: "{corpus}", tokenizer: bytes, vocab_size: 257, seq_len: 32, val_fraction: 0.2, prepare_mem_gb: 1}}
train: {{global_batch: 4, lr: 1e-2, warmup_fraction: 0.1, min_warmup_steps: 2, checkpoint_every: 10}}
eval: {{evals_per_run: 2, sequences: 8, t_per_seq: 2}}
"""
    )
    return folder


def long_run_overrides(steps: int, arm: str = "mdlm-ce") -> list[str]:
    """One d64-l2 run of exactly `steps` steps (~16 ms each on one core): long enough for a signal
    to land in the middle of real training."""
    shape = ModelShape("d64-l2", 64, 2, 2, 258, 32)
    budget = steps * train_flops_per_seq(shape, "attention", arm) * 4 * (1 + 1e-6)
    return [
        f"arms=[{arm}]",
        f"budgets=[{budget:.6e}]",
        "sizes.0.models=[d64-l2]",
        "train.checkpoint_every=50",
    ]


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    return sweep_env(tmp_path, monkeypatch, text_corpus)


def sweep_env(tmp_path, monkeypatch, corpus) -> Path:
    """SCALING_SWEEPS/RESULTS/DATA in tmp_path; the environment that subprocesses inherit too."""
    write_sweep(tmp_path / "sweeps", corpus)
    monkeypatch.setenv("SCALING_SWEEPS", str(tmp_path / "sweeps"))
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SCALING_DATA", str(tmp_path / "data"))
    return tmp_path


def runs_of(results: Path, sweep: str = "t") -> list[Path]:
    return sorted(p for p in (results / sweep / "runs").iterdir() if p.is_dir())


def statuses(results: Path, sweep: str = "t") -> dict[str, dict]:
    return {p.name: json.loads((p / "status.json").read_text()) for p in runs_of(results, sweep)}


def results_of(results: Path, sweep: str = "t") -> dict[str, dict]:
    return {p.name: json.loads((p / "result.json").read_text()) for p in runs_of(results, sweep)}


def rerun_after_deleting_a_result(
    results: Path, argv: list[str], victim: Path, submit_line: str, capsys
) -> None:
    """Deleting one run's result.json makes the next sweep resubmit that run alone, to the same
    losses; every other run's status stays untouched."""
    first, losses = statuses(results), {k: r["val_loss"] for k, r in results_of(results).items()}
    (victim / "result.json").unlink()
    assert main(argv) == 0
    assert submit_line in capsys.readouterr().out
    after = statuses(results)
    assert after[victim.name]["job_id"] != first[victim.name]["job_id"]
    assert {k: v for k, v in after.items() if k != victim.name} == {
        k: v for k, v in first.items() if k != victim.name
    }
    assert {k: r["val_loss"] for k, r in results_of(results).items()} == losses


def wait_for_step(run_dir: Path, step: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.last_jsonl(run_dir / "metrics.jsonl")
        if row and row["step"] >= step:
            return row["step"]
        time.sleep(0.1)
    raise AssertionError(f"{run_dir.name} did not reach step {step} in {timeout}s")


def sweep_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
        # a test suite started in the background (`make test &`) ignores SIGINT, and so would the
        # sweep: Python turns SIGINT into KeyboardInterrupt only when it is not ignored at start
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def reference_result(tmp_path: Path, spec_path: Path) -> dict:
    """The same spec trained without interruption, one thread like the executors' runs."""
    out = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "scaling.cli", "train", str(spec_path), "--out", str(out)],
        check=True,
        capture_output=True,
        env=os.environ | {"SCALING_THREADS": "1"},
        timeout=300,
    )
    return json.loads((out / "result.json").read_text())


def test_slots_split_cores_and_gpus():
    cores = os.cpu_count()
    assert slots(LocalConfig(), gpus=[]).parallel == cpu_count()  # small CPU runs: one per core
    assert slots(LocalConfig(), gpus=[]).threads == 1
    assert slots(LocalConfig(threads_per_run=3), gpus=[]).threads == 3
    four = slots(LocalConfig(), gpus=["0", "1", "2", "3"])
    assert (four.parallel, four.gpus) == (4, ("0", "1", "2", "3"))  # one run per GPU
    assert slots(LocalConfig(max_parallel=8), gpus=["0", "1"]).parallel == 2
    assert slots(LocalConfig(max_parallel=2), gpus=[]).threads == max(1, cpu_count() // 2)
    assert slots(LocalConfig(max_parallel=2), gpus=[]).threads <= cores


def test_sweep_is_idempotent_and_reruns_only_a_deleted_result(env, capsys):
    results = env / "results"
    args = [
        "sweep",
        "t",
        "arms=[ar]",
        "cluster.max_parallel=2",
        "cluster.threads_per_run=1",
        "cluster.poll_s=0.2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 ended, 0 queued or running, 2 to submit (local)" in out and "2 runs: 2 done" in out
    first = statuses(results)
    assert {s["state"] for s in first.values()} == {"done"}
    assert len({s["job_id"] for s in first.values()}) == 1  # one runner for the submission

    assert main(args) == 0
    assert "2 ended, 0 queued or running, 0 to submit" in capsys.readouterr().out
    assert statuses(results) == first  # nothing was touched

    rerun_after_deleting_a_result(
        results, args, runs_of(results)[1], "1 ended, 0 queued or running, 1 to submit", capsys
    )

    assert main(["status", "t", "--runs"]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 2 done" in out and out.count(" done ") == 2

    assert main([*args, "sizes.0.models=[d8-l1]"]) == 0  # a narrower plan: the d16 folder is stale
    assert "0 to submit" in capsys.readouterr().out
    assert main(["status", "t"]) == 0
    out = capsys.readouterr().out
    assert "1 runs: 1 done" in out and "1 run folder(s) of earlier plans" in out
    assert main(["status", "t", "--all"]) == 0
    assert "2 runs: 2 done" in capsys.readouterr().out


def test_dry_run_prints_resources_and_writes_nothing(env, capsys):
    assert main(["sweep", "t", "cluster.threads_per_run=1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 to submit (local)" in out and "threads" in out and out.count("-1e8-") == 4
    assert not (env / "results").exists() and not (env / "data").exists()


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_next_sweep_resumes_to_the_same_loss(env):
    results = env / "results"
    args = ["t", *long_run_overrides(800), "cluster.threads_per_run=1", "cluster.poll_s=0.2"]  # flags go last
    sweep = sweep_process(*args)
    try:
        deadline = time.monotonic() + 120
        while not (results / "t" / "runs").exists() or not runs_of(results):
            assert time.monotonic() < deadline and sweep.poll() is None, sweep.stdout.read()
            time.sleep(0.1)
        (run_dir,) = runs_of(results)
        step = wait_for_step(run_dir, 50)
        sweep.send_signal(signal.SIGINT)
        out, _ = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130, out
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "cancelled" and "resumes" in status["reason"]
    assert not (run_dir / "result.json").exists()
    saved = sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))
    assert saved and step <= saved[-1] < 800  # checkpointed where the signal landed, not at the end
    assert runner_pids(status["job_id"]) == []

    resumed = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "sweep", *args], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 to submit (local), 1 of them resuming from a checkpoint" in resumed.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert result["restarts"] == 1
    assert result["val_loss"] == reference_result(env, run_dir / "spec.yaml")["val_loss"]


def runner_pids(job_id: str) -> list[int]:
    pid = int(job_id.rsplit(":", 1)[1])
    return (
        [pid]
        if Path(f"/proc/{pid}").exists()
        and b"scaling.executors.local" in Path(f"/proc/{pid}/cmdline").read_bytes()
        else []
    )


def test_no_wait_then_status_and_cancel(env, capsys):
    results = env / "results"
    args = ["sweep", "t", *long_run_overrides(3000), "cluster.threads_per_run=1", "--no-wait"]
    assert main(args) == 0
    assert "not waiting" in capsys.readouterr().out
    (run_dir,) = runs_of(results)
    wait_for_step(run_dir, 20)
    assert main(["status", "t", "--runs"]) == 0
    out = capsys.readouterr().out
    assert "1 runs: 1 running" in out
    assert main(args) == 0  # a second sweep while the run is running submits nothing
    assert "0 ended, 1 queued or running, 0 to submit" in capsys.readouterr().out

    job_id = json.loads((run_dir / "status.json").read_text())["job_id"]
    assert main(["cancel", "t"]) == 0
    assert "cancelled 1 run(s)" in capsys.readouterr().out
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["reason"]) == ("cancelled", "cancelled by `scaling cancel`")
    assert runner_pids(job_id) == []
    assert main(["status", "t"]) == 0
    assert "1 runs: 1 cancelled" in capsys.readouterr().out


def test_a_failing_run_is_reported_with_its_error(env, byte_shards, capsys):
    from conftest import tiny_spec

    sweep_dir = env / "results" / "t"
    store.init_layout(sweep_dir)
    bad = tiny_spec(
        byte_shards, steps=4, **{"data.corpus": str(env / "missing.txt"), "data.shards": str(env / "none")}
    )
    good = tiny_spec(byte_shards, steps=4)
    runs = [Run(sweep_dir / "runs" / s.run_key, s, 1000) for s in (bad, good)]
    for r in runs:
        store.ensure_run(r.run_dir, r.spec)
    executor = LocalExecutor(LocalConfig(threads_per_run=1))
    executor.submit(
        sweep_dir, runs, lambda ids: [store.mark_submitted(sweep_dir / "runs" / k, j) for k, j in ids.items()]
    )
    deadline = time.monotonic() + 120
    while True:
        views, _ = reconcile([r.run_dir for r in runs])
        if not any(v.state in store.ACTIVE for v in views) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    state = {v.spec.run_key: v for v in views}
    assert state[good.run_key].state == "done"
    failed = state[bad.run_key]
    assert failed.state == "failed"
    assert (
        failed.status.reason.startswith("scaling train exited with code 2: ")
        and "missing.txt" in failed.status.reason
    )


def test_multirun_sweeps_one_sweep_per_value(env, capsys):
    """`-m train.lr=1e-2,3e-3`: two sweeps, named after the value, each trained in its own folder."""
    argv = [
        "sweep",
        "t",
        "-m",
        "train.lr=1e-2,3e-3",
        "arms=[ar]",
        "sizes.0.models=[d8-l1]",
        "cluster.poll_s=0.2",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "=== sweep 1/2: t-lr=0.01" in out and "=== sweep 2/2: t-lr=0.003" in out
    for name, lr in (("t-lr=0.01", 1e-2), ("t-lr=0.003", 3e-3)):
        (run_dir,) = runs_of(env / "results", name)
        assert store.read_status(run_dir).state == "done"
        assert store.load_run_spec(run_dir).optim.lr == pytest.approx(lr)
