"""The parallel settings do not change a run's losses: a 2-process DDP run (torchrun, gloo on the
CPU) with micro-batches of 2 matches single-process runs with micro-batches of 4 and of 8 (the
whole batch): the same batches, diffusion times and masks (keyed by sequence, trainer/noise.py),
gradients averaged over ranks. (Full sharding: tests/test_fsdp.py, which uses the helpers here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import tiny_spec

ENV = {**os.environ, "SCALING_THREADS": "1"}


def curve(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train(spec_file, out, processes: int = 1) -> subprocess.CompletedProcess:
    """`scaling train` of a spec file into `out`, in one process or in `processes` under torchrun."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return subprocess.run(
        [sys.executable, *(launcher if processes > 1 else []), "-m", "scaling.cli", "train", str(spec_file)]
        + ["--out", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("arm", ["duo", "eso"])
def test_two_process_ddp_matches_one_process_whatever_the_micro_batch(tmp_path, byte_shards, arm):
    spec = tiny_spec(
        byte_shards, arm, steps=8, global_batch=8, micro_batch=2, checkpoint_every=4, **{"eval.every": 4}
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec.to_yaml())
    for micro in (4, 8):  # one process: 2 micro-batches of 4, then the whole batch at once
        other = tmp_path / f"micro{micro}.yaml"
        other.write_text(replace(spec, micro_batch=micro).to_yaml())  # the same run key
        single = train(other, tmp_path / f"one{micro}")
        assert single.returncode == 0, single.stderr
    ddp = train(spec_file, tmp_path / "two", processes=2)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert ddp.stdout.count(": done, val_loss") == 1  # rank 0 reports, rank 1 is silent
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["world_size"] == 2
    for one_dir in ("one4", "one8"):
        one = json.loads((tmp_path / one_dir / "result.json").read_text())
        assert one["world_size"] == 1
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5, abs=0), one_dir
        for a, b in zip(curve(tmp_path / one_dir), curve(tmp_path / "two"), strict=True):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "step-4.pt",
        "step-4.sha256",
        "step-8.pt",
        "step-8.sha256",
    ]


def test_ranks_from_torchrun_or_srun_but_not_from_a_batch_script(monkeypatch):
    from trainer.distributed import DistEnv, detect

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")  # the allocation, seen by the batch script itself
    assert detect() == DistEnv(0, 1, 0)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")  # srun's tasks
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert detect() == DistEnv(3, 4, 1)
    monkeypatch.setenv("RANK", "1")  # torchrun wins
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert detect() == DistEnv(1, 2, 1)
