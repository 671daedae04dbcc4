"""GPU-hours, time limits and parallel settings per run, before anything is submitted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scaling import placement
from scaling.cli import main
from scaling.config import load_sweep
from scaling.hardware import Hardware
from scaling.plan import plan_sweep

H100 = Hardware("H100", 80.0, 989e12, mfu=0.35)


@pytest.fixture(scope="module")
def paper():
    return plan_sweep(load_sweep("paper"))


def test_gpu_hours_are_the_work_done_at_the_assumed_mfu(paper):
    spec = paper.runs[0]
    p = placement.place(spec, 1, H100, 1440, 3)
    assert p.gpu_hours == pytest.approx(placement.run_flops(spec) / (989e12 * 0.35) / 3600)
    faster = placement.place(spec, 1, replace(H100, mfu=0.7), 1440, 3)
    assert faster.gpu_hours == pytest.approx(p.gpu_hours / 2)
    # evaluation counts: a final evaluation of 100k windows adds their forward FLOPs
    small, big = (replace(spec, eval=replace(spec.eval, final_sequences=n)) for n in (0, 100_000))
    per_window = placement.fwd_flops_per_seq(spec.model, "attention", spec.arm)
    assert placement.run_flops(big) - placement.run_flops(small) == pytest.approx(
        per_window * (100_000 - spec.eval.sequences)
    )


def test_time_limit_follows_compute_and_requeues_are_flagged(paper):
    spec = max(paper.runs, key=placement.run_flops)
    one = placement.place(spec, 1, H100, 1440, 3)  # on one GPU it needs days
    assert one.time_limit_min == 1440 and one.requeues > 3 and "max_num_timeout" in one.problems[0]
    eight = placement.place(spec, 8, H100, 1440, 3)
    assert eight.time_limit_min <= 1440 and eight.gpus == 8
    small = min(paper.runs, key=placement.run_flops)
    quick = placement.place(small, 1, H100, 1440, 3)
    assert quick.time_limit_min < 1440 and quick.time_limit_min % placement.LIMIT_STEP_MIN == 0
    assert quick.requeues == 0 and not quick.problems


def test_apply_keeps_the_run_key(paper):
    spec = paper.runs[-1]
    p = placement.place(spec, 8, H100, 1440, 3)
    placed = placement.apply(spec, p)
    assert placed.run_key == spec.run_key and placed.micro_batch == p.micro
    assert placed.micro_batch * p.accum * 8 == spec.global_batch


def test_dry_run_of_the_paper_grid_prints_placements_and_totals(capsys):
    assert main(["sweep", "paper", "cluster=slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("run_key"))
    for column in placement.COLUMNS:
        assert column in header
    assert "GPU-hours:" in out and "per budget:" in out and "per arm:" in out and "disk:" in out
    assert "cannot be submitted" not in out  # every run fits an 80 GB card


def test_a_cpu_cluster_keeps_the_specs_micro_batch(capsys):
    assert main(["plan", "tiny", "cluster=slurm-cpu"]) == 0
    out = capsys.readouterr().out
    assert "gpu_h" not in out.splitlines()[0]


def test_a_large_run_is_warned_early_enough_to_write_its_checkpoint(paper):
    big = max(paper.runs, key=lambda s: s.model.d_model)
    small = min(paper.runs, key=lambda s: s.model.d_model)
    p_big, p_small = (placement.place(s, 8, H100, 1440, 3) for s in (big, small))
    assert p_big.signal_delay_s >= 60 + 2 * placement.checkpoint_bytes(big) / placement.WRITE_BYTES_PER_S
    assert p_small.signal_delay_s < p_big.signal_delay_s
