"""Exact resume: `scaling train` in a subprocess, killed (SIGKILL) or stopped (SIGTERM/SIGUSR2)
after a checkpoint, then resumed, ends bitwise equal to the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec

from scaling.flops import ModelShape
from scaling.store import EXIT_PREEMPTED
from trainer import checkpoint

pytestmark = pytest.mark.slow  # each test runs two or three `scaling train` processes: 10-25 s

STEPS = 150
ENV = {**os.environ, "SCALING_THREADS": "1"}


def _spec_file(folder: Path, shards: Path, arm: str, checkpoint_every: int) -> Path:
    """checkpoint_every is not part of the run key: the interrupted run checkpoints every step,
    the reference and the resumed run only at the end (which must not change any number)."""
    spec = tiny_spec(
        shards,
        arm,
        steps=STEPS,
        checkpoint_every=checkpoint_every,
        global_batch=8,
        **{"model": ModelShape("d32-l2", 32, 2, 2, 258, 32), "eval.every": 50},
    )
    path = folder / f"{arm}-{checkpoint_every}.yaml"
    path.write_text(spec.to_yaml())
    return path


def _train(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "train", str(spec), "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _interrupt_after(spec: Path, out: Path, ready: Path, signum: int) -> tuple[int, str]:
    """Starts a run and sends `signum` once the file `ready` exists."""
    proc = _train(spec, out)
    deadline = time.time() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signum)
    output = proc.communicate(timeout=120)[0]
    assert not (out / "result.json").exists(), (
        f"the run ended before the signal landed: make it longer\n{output}"
    )
    return proc.returncode, output


def _finish(spec: Path, out: Path) -> dict:
    proc = _train(spec, out)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    return json.loads((out / "result.json").read_text())


def _curve(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r["grad_norm"], r["lr"]) for r in rows]


def _evals(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    return [(r["step"], r["val_loss"], r["val_loss_stderr"]) for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, byte_shards):
    """Per arm (on first use): the spec files (checkpoint every step, only at the end) and the
    folder and result of the uninterrupted run."""
    folder = tmp_path_factory.mktemp("resume")
    runs = {}

    def get(arm: str) -> tuple[Path, Path, Path, dict]:
        if arm not in runs:
            every_step, at_end = (_spec_file(folder, byte_shards, arm, n) for n in (1, 0))
            ref_dir = folder / f"ref-{arm}"
            runs[arm] = (every_step, at_end, ref_dir, _finish(at_end, ref_dir))
        return runs[arm]

    return get


@pytest.mark.parametrize("arm", ["mdlm-elbo", "eso"])
def test_sigkill_then_resume_is_bitwise_equal(tmp_path, reference, arm):
    every_step, at_end, ref_dir, ref = reference(arm)
    code, _ = _interrupt_after(
        every_step, tmp_path, tmp_path / "checkpoints" / "step-37.sha256", signal.SIGKILL
    )
    assert code == -signal.SIGKILL
    result = _finish(at_end, tmp_path)
    assert result["val_loss"] == ref["val_loss"] and result["val_loss_stderr"] == ref["val_loss_stderr"]
    assert result["train_loss"] == ref["train_loss"]
    assert result["restarts"] == 1 and ref["restarts"] == 0
    assert _curve(tmp_path) == _curve(ref_dir) and _evals(tmp_path) == _evals(ref_dir)
    mine, theirs = (checkpoint.read(d / "checkpoints" / f"step-{STEPS}.pt") for d in (tmp_path, ref_dir))
    assert all(torch.equal(mine["model"][k], v) for k, v in theirs["model"].items())
    assert mine["data"] == theirs["data"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_stop_signal_checkpoints_exits_75_and_resumes_exactly(tmp_path, reference, signum):
    _, at_end, ref_dir, ref = reference("mdlm-elbo")
    code, output = _interrupt_after(at_end, tmp_path, tmp_path / "metrics.jsonl", signum)
    assert code == EXIT_PREEMPTED, output
    name = signal.Signals(signum).name
    stopped_at = int(output.split(f"stopped by {name} at step ")[1].split()[0])
    # the signal's checkpoint is the only one (the spec checkpoints at the end only)
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.pt")] == [f"step-{stopped_at}.pt"], output
    result = _finish(at_end, tmp_path)
    assert result["val_loss"] == ref["val_loss"] and result["restarts"] == 1, (stopped_at, output)
    assert _curve(tmp_path) == _curve(ref_dir), (stopped_at, output)
