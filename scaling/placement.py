"""Where and how each run trains, decided before anything is submitted: its GPUs, its parallel
settings (scaling/memory.py), its GPU-hours, its job time limit and the requeues that limit needs.

    placement = place(spec, gpus=8, hardware=Hardware("H100", 80, 989e12, mfu=0.35), ...)
    spec = apply(spec, placement)   # the run key does not change: these settings are outside it

GPU-hours count the FLOPs of the work actually done (the attention convention, evaluation
included) at the card's dense bf16 peak times an assumed MFU (docs/cluster.md): an estimate, which
the measured MFU of the first runs (result.json) should replace. The time limit of a run's job is
min(the cluster's maximum, its estimated wall time x margin + a fixed overhead for start-up,
compilation and checkpoints); a run that needs more requeues at that limit than the cluster allows
is flagged before submission.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scaling import memory
from scaling.flops import fwd_flops_per_seq, params_total, train_flops_per_seq
from scaling.hardware import Hardware
from scaling.spec import RunSpec, budget_tag

OVERHEAD_MIN = 10  # start-up, torch.compile, evaluations' start, checkpoint writes per job
WRITE_BYTES_PER_S = 300e6  # assumed shared-filesystem write rate of one checkpoint (a cautious guess)
MIN_LIMIT_MIN = 30
LIMIT_STEP_MIN = 30


@dataclass(frozen=True)
class Placement:
    gpus: int  # the run's processes: one per GPU (one on a CPU machine)
    micro: int  # 0: the spec's own micro-batch (no GPU memory to size it by)
    accum: int
    checkpointing: bool
    sharding: str
    gb_per_gpu: float | None
    gpu_hours: float | None
    time_limit_min: int | None
    requeues: int  # the jobs after the first that the run needs at that time limit
    problems: tuple[str, ...] = ()
    signal_delay_s: int = 0  # how long before its time limit the job is told to checkpoint (0: the config's)
    share: int = 1  # runs like it one GPU (CPU nodes: a task) holds; sized for 1/share of it (packing.py)


def run_flops(spec: RunSpec) -> float:
    """FLOPs the run does, training and evaluation, in the attention convention (the real work)."""
    train = train_flops_per_seq(spec.model, "attention", spec.arm) * spec.global_batch * spec.steps
    evals = spec.steps // spec.eval.every if spec.eval.every > 0 else 0
    k = spec.eval.t_per_seq if spec.arm != "ar" else 1
    per_eval = fwd_flops_per_seq(spec.model, "attention", spec.arm) * k
    final = max(spec.eval.sequences, spec.eval.final_sequences)  # as the trainer sizes it
    return train + per_eval * (spec.eval.sequences * max(0, evals - 1) + final)


def place(
    spec: RunSpec,
    gpus: int,
    hardware: Hardware | None,
    timeout_min: int | None,
    max_requeues: int,
    time_margin: float = 1.3,
) -> Placement:
    """The run's placement on `gpus` GPUs of `hardware` (None: a CPU machine: the spec's own
    micro-batch, no GPU-hours); `timeout_min` is the longest job the cluster allows (None: no
    limit, a local machine)."""
    if hardware is None:
        return Placement(max(1, gpus), 0, 0, False, "ddp", None, None, timeout_min, 0)
    problems = []
    parallel = memory.choose(spec.model, spec.arm, spec.global_batch, gpus, hardware.memory_gb)
    if not parallel.fits:
        problems.append(
            f"needs {parallel.gb_per_gpu:.0f} GB per GPU even at micro-batch 1 with checkpointing and "
            f"sharding over {gpus} GPUs ({hardware.memory_gb:g} GB cards): give it more GPUs"
        )
    gpu_hours = run_flops(spec) / (hardware.peak_flops * hardware.mfu) / 3600
    limit, requeues = time_limit(gpu_hours / gpus, timeout_min, time_margin)
    if requeues > max_requeues:
        problems.append(
            f"needs {requeues} requeues of {limit}-minute jobs, more than max_num_timeout {max_requeues}: "
            "raise cluster.max_num_timeout (or the time limit) or give it more GPUs"
        )
    return Placement(
        gpus,
        parallel.micro,
        parallel.accum,
        parallel.checkpointing,
        parallel.sharding,
        parallel.gb_per_gpu,
        gpu_hours,
        limit,
        requeues,
        tuple(problems),
        signal_delay_s=math.ceil(60 + 2 * save_seconds(spec)),
    )


def time_limit(hours: float, timeout_min: int | None, time_margin: float) -> tuple[int, int]:
    """(the job's time limit in minutes, the requeues after the first job) for `hours` of wall
    time at the assumed MFU; `timeout_min`: the longest job the cluster allows (None: no limit)."""
    wall_min = hours * 60 * time_margin + OVERHEAD_MIN
    # in steps of LIMIT_STEP_MIN: runs of similar length share a job array
    limit = max(MIN_LIMIT_MIN, LIMIT_STEP_MIN * math.ceil(wall_min / LIMIT_STEP_MIN))
    if timeout_min is not None:
        limit = min(limit, timeout_min)
    return limit, max(0, math.ceil(wall_min / limit) - 1)


def apply(spec: RunSpec, placement: Placement) -> RunSpec:
    """The spec with its placement's parallel settings (its run key is unchanged)."""
    if placement.micro == 0:
        return spec
    return replace(
        spec,
        micro_batch=placement.micro,
        activation_checkpointing=placement.checkpointing,
        sharding=placement.sharding,
    )


def checkpoint_bytes(spec: RunSpec) -> float:
    """A checkpoint of the run: fp32 weights and AdamW's two moments (the final one: weights only)."""
    return 12 * params_total(spec.model)


def save_seconds(spec: RunSpec) -> float:
    """The time a checkpoint of the run may take to write (at WRITE_BYTES_PER_S), for the warning
    before a time limit and the process group's timeout (the other ranks wait while rank 0 saves)."""
    return checkpoint_bytes(spec) / WRITE_BYTES_PER_S


COLUMNS = ["gpus", "micro", "accum", "ckpt", "shard", "gb_gpu", "gpu_h", "limit_min", "requeues"]


def row(placement: Placement) -> dict:
    """The placement as the columns of `scaling plan` and `scaling sweep --dry-run`."""
    p = placement
    return {
        "gpus": p.gpus,
        "micro": p.micro or None,
        "accum": p.accum or None,
        "ckpt": "yes" if p.checkpointing else "no",
        "shard": p.sharding,
        "gb_gpu": None if p.gb_per_gpu is None else round(p.gb_per_gpu, 1),
        "gpu_h": None if p.gpu_hours is None else round(p.gpu_hours, 2),
        "limit_min": p.time_limit_min,
        "requeues": p.requeues,
    }


def totals(specs: list[RunSpec], placements: list[Placement], train_tokens: float = 0) -> list[str]:
    """GPU-hours per budget, per arm and for the grid, and the disk the runs need."""
    lines = []
    if all(p.gpu_hours is not None for p in placements) and placements:
        by_budget: dict[float, float] = {}
        by_arm: dict[str, float] = {}
        for s, p in zip(specs, placements):
            by_budget[s.budget_flops] = by_budget.get(s.budget_flops, 0.0) + (p.gpu_hours or 0.0)
            by_arm[s.arm] = by_arm.get(s.arm, 0.0) + (p.gpu_hours or 0.0)
        grid = sum(by_budget.values())
        lines.append(f"GPU-hours: {grid:,.0f} for the grid (estimates at the assumed MFU)")
        lines.append(
            "  per budget: " + ", ".join(f"{budget_tag(b)} {h:,.0f}" for b, h in sorted(by_budget.items()))
        )
        lines.append("  per arm: " + ", ".join(f"{a} {h:,.0f}" for a, h in by_arm.items()))
    # two checkpoints per run while it trains; a finished run keeps its final weights (4 bytes each)
    peak = sum(2 * checkpoint_bytes(s) for s in specs)
    kept = sum(4 * params_total(s.model) for s in specs)
    shards = 2 * train_tokens  # uint16 token ids
    disk = f"disk: {peak / 1e9:,.1f} GB of checkpoints if every run trained at once, {kept / 1e9:,.1f} GB kept when done"
    lines.append(disk + (f", {shards / 1e9:,.1f} GB of token shards" if shards else ""))
    flagged = [p for p in placements if p.problems]
    if flagged:
        lines.append(f"{len(flagged)} run(s) cannot be submitted as planned: {flagged[0].problems[0]}")
    return lines
