"""Faults and bad inputs: each test is the repro of a defect found by attacking the tool.

Two sweeps at once, a runner killed with SIGKILL, names that would write outside the results
folder, damaged files of every kind, a bad line in a log, a full or read-only disk, interrupted
atomic writes, a partly refused SLURM submission and a resume under another CPU thread count.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import tiny_spec
from test_local_executor import long_run_overrides, runs_of, sweep_env, sweep_process, wait_for_step

from analysis.synthetic import run_specs, write_run_folder
from scaling import atomic, cli, executors, locks, store
from scaling.config import load_sweep
from scaling.executors import Executor, JobInfo, Run
from scaling.workflows.sweep import run_sweep
from trainer.loop import train


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    return sweep_env(tmp_path, monkeypatch, text_corpus)


def one_line_error(capsys, argv: list[str], code: int = 2) -> str:
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and err, err
    return err


# --- 1. two sweeps at once ----------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerConfig:
    executor: str = "ledger"
    poll_s: float = 0.1
    wait_timeout_h: float = 1.0


class LedgerExecutor(Executor):
    """Submits nothing: appends every submission to a ledger file (one line per run), slowly, so
    that two sweeps racing for the same runs overlap."""

    name = "ledger"
    Config = LedgerConfig
    detached = True
    ledger: ClassVar[Path]

    def resources(self, run: Run) -> dict:
        return {}

    def submit(self, sweep_dir, runs, record, exclude=()) -> None:
        time.sleep(0.2)  # the window in which a second sweep, unlocked, read the same states
        with open(self.ledger, "a") as f:
            for run in runs:
                f.write(f"{os.getpid()} {run.run_key}\n")
        record({run.run_key: self.job_id(f"{os.getpid()}-{run.run_key}") for run in runs})

    @classmethod
    def poll(cls, job_ids):
        return {j: JobInfo("pending") for j in job_ids}  # queued forever: a second sweep skips them

    @classmethod
    def cancel(cls, job_ids) -> None:
        return None


def _sweep_in_child(cfg, start: float) -> None:
    while time.time() < start:  # both children leave the gate together
        time.sleep(0.001)
    run_sweep(cfg, LedgerExecutor(LedgerConfig()), wait=False, say=lambda m: None)


def test_two_sweeps_started_together_submit_every_run_once(env, monkeypatch):
    """20 trials of two `run_sweep` processes started at the same instant on a fresh sweep."""
    monkeypatch.setitem(executors.EXECUTORS, "ledger", LedgerExecutor)
    context = multiprocessing.get_context("fork")  # the children inherit the registered executor
    for trial in range(20):
        cfg = load_sweep("t", [f"name=race{trial}", "arms=[ar]"])
        LedgerExecutor.ledger = env / f"ledger-{trial}.txt"
        start = time.time() + 0.5
        children = [context.Process(target=_sweep_in_child, args=(cfg, start)) for _ in range(2)]
        for c in children:
            c.start()
        for c in children:
            c.join(timeout=120)
            assert c.exitcode == 0, f"trial {trial}: a sweep failed"
        lines = LedgerExecutor.ledger.read_text().split("\n")[:-1]
        keys = [line.split()[1] for line in lines]
        assert len(keys) == len(set(keys)) == 2, f"trial {trial}: runs submitted {keys}"


def test_a_held_sweep_lock_makes_the_second_caller_wait_then_say_who(tmp_path):
    lock = tmp_path / ".sweep.lock"
    with locks.exclusive(lock, "sweep x", wait_s=1):
        t0 = time.monotonic()
        with pytest.raises(Exception, match=rf"sweep x is locked by process {os.getpid()}"):
            with locks.exclusive(lock, "sweep x", wait_s=0.6):
                pass
        assert time.monotonic() - t0 >= 0.5
    assert not lock.exists()
    # a lock left by a process that died (kill -9) is broken, not waited for
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 12345, "time": time.time()}))
    with locks.exclusive(lock, "sweep x", wait_s=0):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


# --- 2. the runner killed with SIGKILL ------------------------------------------------------------


@pytest.mark.slow
def test_killing_the_runner_stops_its_trainer_and_the_next_sweep_trains_each_step_once(env):
    results = env / "results"
    args = ["t", *long_run_overrides(600), "cluster.threads_per_run=1", "cluster.poll_s=0.2"]
    first = sweep_process(*args, "--no-wait")
    assert first.wait(timeout=120) == 0, first.stdout.read()
    (run_dir,) = runs_of(results)
    wait_for_step(run_dir, 40)
    runner = int(store.read_status(run_dir).job_id.rsplit(":", 1)[1])
    os.kill(runner, signal.SIGKILL)
    second = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "sweep", *args], capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout + second.stderr
    steps = [row["step"] for row in atomic.read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 600  # no step logged (trained) twice
    evals = [row["step"] for row in atomic.read_jsonl(run_dir / "evals.jsonl")]
    assert evals == sorted(set(evals))
    log = (run_dir / "logs" / "train.log").read_text()
    assert "stopped by SIGTERM" in log  # the orphan checkpointed and left when its runner died


def test_a_second_trainer_on_the_same_folder_waits_then_stops(tmp_path, byte_shards, monkeypatch, capsys):
    spec = tiny_spec(byte_shards, steps=4)
    run = tmp_path / "run"
    with store.hold_run(run):
        assert store.run_owner(run) == f"trainer pid {os.getpid()} on {os.uname().nodename}"
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "from scaling import store; print(store.run_owner(__import__('sys').argv[1]))",
                str(run),
            ],
            capture_output=True,
            text=True,
        )
        assert probe.stdout.strip().startswith("trainer pid")  # seen from another process too
        store_file = tmp_path / "spec.yaml"
        store_file.write_text(spec.to_yaml())
        other = subprocess.run(
            [sys.executable, "-m", "scaling.cli", "train", str(store_file), "--out", str(run)],
            capture_output=True,
            text=True,
            env=os.environ | {"SCALING_OWNER_WAIT_S": "1"},
            timeout=120,
        )
    assert other.returncode == 2, other.stdout + other.stderr
    assert "is held by trainer pid" in other.stderr and other.stderr.count("\n") == 1
    assert store.run_owner(run) is None
    assert train(spec, run, log=lambda m: None).status == "done"


# --- 3. names that would leave the results folder -------------------------------------------------


@pytest.mark.parametrize("name", ["../../escape", "/abs", "a\nb", "..", "a/b", "-rf"])
def test_unsafe_sweep_names_are_refused_and_nothing_is_written(env, capsys, name):
    err = one_line_error(capsys, ["sweep", "t", f"name={json.dumps(name)}", "--dry-run"])
    assert "not a safe name" in err or "bad override" in err
    assert not (env / "results").exists() and not (env.parent / "escape").exists()


def test_an_unsafe_model_name_in_a_ladder_is_refused(env, capsys):
    ladder = env / "evil.yaml"
    ladder.write_text("shapes:\n  - {name: '../../../../../x', d_model: 8, n_layers: 1, n_heads: 1}\n")
    err = one_line_error(capsys, ["plan", "t", f"ladder={ladder}", "sizes.0.models=[../../../../../x]"])
    assert "model name '../../../../../x' is not a safe name" in err


# --- 4. the torch that can load checkpoints safely ------------------------------------------------


def test_the_package_requires_a_torch_whose_weights_only_load_is_safe():
    from importlib.metadata import requires

    (torch_req,) = [r for r in requires("dllm-scaling") if r.startswith("torch")]
    assert torch_req.replace(" ", "") == "torch>=2.6"


# --- 5. damaged files -------------------------------------------------------------------------------

GARBAGE = {
    "binary": b"\x00\xff\xfe garbage \x80",
    "list": b"[1, 2, 3]",
    "number": b"7",
    "torn": b'{"state": "ru',
}


@pytest.fixture
def synthetic_sweep(env):
    """Three run folders of sweep `s` as the trainer leaves them (done), its store.json and plan.json."""
    sweep_dir = env / "results" / "s"
    store.init_layout(sweep_dir)
    specs = run_specs(arms=("ar",), budgets=(1e12,), widths=(16, 24, 32))
    for spec in specs:
        write_run_folder(sweep_dir / "runs", spec)
    store.write_plan_manifest(sweep_dir, [s.run_key for s in specs])
    return sweep_dir


@pytest.mark.parametrize("content", sorted(GARBAGE))
@pytest.mark.parametrize("file", ["result.json", "status.json", "spec.yaml"])
def test_a_damaged_run_file_is_a_state_not_a_traceback(synthetic_sweep, capsys, file, content):
    victim = sorted((synthetic_sweep / "runs").iterdir())[0]
    (victim / file).write_bytes(GARBAGE[content])
    code = cli.main(["status", "s", "--runs"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if file == "spec.yaml":
        assert code == 2 and err.count("\n") == 1 and victim.name in err  # names the file to fix
    else:
        assert code == 0
    assert cli.main(["collect", "s"]) == 0  # collect goes on past the bad folder
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "3 runs" in out
    if file != "status.json":
        assert f"{victim.name}: malformed" in err


@pytest.mark.parametrize("content", sorted(GARBAGE))
@pytest.mark.parametrize("file", ["store.json", "plan.json"])
def test_a_damaged_sweep_file_is_one_line_or_ignored(synthetic_sweep, capsys, file, content):
    (synthetic_sweep / file).write_bytes(GARBAGE[content])
    code = cli.main(["status", "s"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if file == "store.json":
        assert code == 2 and "store.json" in err and err.count("\n") == 1
    else:
        assert code == 0 and "3 runs: 3 done" in out  # a damaged plan.json counts every folder


def test_a_malformed_job_id_is_reported_not_a_traceback(synthetic_sweep, capsys):
    victim = sorted((synthetic_sweep / "runs").iterdir())[0]
    store.write_status(victim, "running", job_id="local:vm:abc")
    (victim / "result.json").unlink()
    assert cli.main(["status", "s", "--runs"]) == 0
    out = capsys.readouterr().out
    assert "running" in out and "local:vm:abc" in out


def test_status_writes_nothing(synthetic_sweep, capsys):
    victim = sorted((synthetic_sweep / "runs").iterdir())[0]
    (victim / "result.json").unlink()
    store.write_status(victim, "running", job_id="local:nohost:1")
    before = {p: p.stat().st_mtime_ns for p in synthetic_sweep.rglob("*")}
    assert cli.main(["status", "s", "--runs"]) == 0
    assert {p: p.stat().st_mtime_ns for p in synthetic_sweep.rglob("*")} == before


# --- 6. a bad line in a log -----------------------------------------------------------------------


def test_bad_log_lines_do_not_block_a_resume(tmp_path, byte_shards):
    spec = tiny_spec(byte_shards, steps=6, checkpoint_every=3)
    reference = train(spec, tmp_path / "ref", log=lambda m: None)
    run = tmp_path / "run"
    train(spec, run, log=lambda m: None)
    (run / "result.json").unlink()
    (run / "checkpoints" / "step-6.pt").unlink()
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'[1, 2]\n"text"\n{"step": "x"}\n\x00\xff\n{"step": 2, "train_lo')
    with open(run / "evals.jsonl", "ab") as f:
        f.write(b"null\n")
    result = train(spec, run, log=lambda m: None)
    assert result.val_loss == reference.val_loss
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # repaired: one row per step, nothing else


# --- 7. disk full, read-only --------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only: CI runs as root); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_the_run_resumes_when_space_is_freed(small_disk, tmp_path, byte_shards):
    spec = tiny_spec(byte_shards, steps=6, checkpoint_every=2, model=tiny_spec(byte_shards).model)
    reference = train(spec, tmp_path / "ref", log=lambda m: None)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec.to_yaml())
    filler = small_disk / "filler"
    run = small_disk / "run"
    first = _train_cli(spec_file, run, fill=filler)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "No space left on device: free space and run the same command again" in first.stderr
    assert first.stderr.strip().count("\n") == 0
    filler.unlink()
    second = _train_cli(spec_file, run)
    assert second.returncode == 0, second.stdout + second.stderr
    assert store.read_result(run).val_loss == reference.val_loss


def _train_cli(spec_file: Path, run: Path, fill: Path | None = None) -> subprocess.CompletedProcess:
    """`scaling train`; with `fill`, the disk is filled (but for 150 KB) once the first checkpoint is
    written, so that a later checkpoint meets a full disk."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "train", str(spec_file), "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"SCALING_THREADS": "1"},
    )
    if fill is not None:
        while not list((run / "checkpoints").glob("step-*.sha256")) and proc.poll() is None:
            time.sleep(0.01)
        free = os.statvfs(run).f_bavail * os.statvfs(run).f_frsize
        fill.write_bytes(b"\0" * max(0, free - 150_000))
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_read_only_results_folder_is_one_line(small_disk, env, capsys, monkeypatch):
    monkeypatch.setenv("SCALING_RESULTS", str(small_disk))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    err = one_line_error(capsys, ["sweep", "t", "arms=[ar]"], code=1)
    assert "Read-only file system: make the folder writable" in err


# --- 9. interrupted atomic writes -----------------------------------------------------------------


def test_temp_files_of_interrupted_writes_are_removed_by_the_next_write(tmp_path):
    old = tmp_path / ".step-100.pt.abc123.tmp"
    old.write_bytes(b"\0" * 1000)
    fresh = tmp_path / ".step-200.pt.def456.tmp"  # a live writer's: recently modified
    fresh.write_bytes(b"\0")
    past = time.time() - atomic.STALE_TEMP_S - 60
    os.utime(old, (past, past))
    atomic.write_text(tmp_path / "status.json", "{}")
    assert not old.exists() and fresh.exists() and (tmp_path / "status.json").read_text() == "{}"


# --- 11. the CPU thread count -----------------------------------------------------------------------


def test_a_resume_uses_the_thread_count_the_run_was_trained_with(tmp_path, byte_shards):
    spec = tiny_spec(byte_shards, steps=6, checkpoint_every=3)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec.to_yaml())

    def run(out: Path, threads: int) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "scaling.cli", "train", str(spec_file), "--out", str(out)],
            capture_output=True,
            text=True,
            env=os.environ | {"SCALING_THREADS": str(threads)},
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run(tmp_path / "ref", 2)
    run(tmp_path / "run", 2)
    (tmp_path / "run" / "result.json").unlink()
    (tmp_path / "run" / "checkpoints" / "step-6.pt").unlink()
    out = run(tmp_path / "run", 1)
    assert "resuming with 2 CPU threads, as the run was trained (not 1)" in out
    assert store.read_result(tmp_path / "run").val_loss == store.read_result(tmp_path / "ref").val_loss
