"""Small runs share a GPU: runs too small to use a whole card train several per GPU in one job (one
SLURM array task), one trainer process each (docs/cluster.md, "Small runs share a GPU").

    placed = share(spec, placement, Rule(per_gpu=None, max_params=1e8), processes=1, gpus=1, cpus=8, card_gb=80)
    groups = pack([(run_key, run_flops(spec), placed), ...], timeout_min=1440, max_requeues=3, time_margin=1.3)

The rule: a run is packable when it trains as one process on one GPU, has at most
`Rule.max_params` parameters, and k >= 2 copies of it fit the card: at the micro-batch that
memory.choose picks for 1/k of the card (which is then the run's micro-batch), k times its memory
estimate (each process with its own CUDA context) fits 90% of the card, as one run alone must, with no
activation checkpointing and at least memory.MIN_MICRO sequences per micro-batch (packing must not
make a run recompute or starve its kernels). Its share is the largest such k up to `Rule.per_gpu`.
CPU nodes have no memory model: there the share is `per_gpu` (at most one per CPU of the task),
and only when the cluster config sets it.

Grouping: the packable runs of one resources entry, longest first (by FLOPs), fill groups in that
order, so that runs of similar length share a job. A group holds at most the smallest share of its
runs, and no more runs than `max_requeues` requeues of its job allow: its runs share one GPU's
throughput, so its job asks for the sum of their GPU-hours at the assumed MFU.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from scaling import memory
from scaling.flops import params_total
from scaling.placement import Placement, time_limit
from scaling.spec import RunSpec

DEFAULT_PER_GPU = 4


@dataclass(frozen=True)
class Rule:
    per_gpu: int | None  # cluster.pack_per_gpu; None: DEFAULT_PER_GPU on GPU nodes, none on CPU nodes
    max_params: float  # cluster.pack_max_params: larger runs never share


@dataclass(frozen=True)
class Group:
    """The runs of one job, with the job's time limit, requeues and warning before the limit."""

    keys: tuple[str, ...]
    time_limit_min: int | None
    requeues: int
    signal_delay_s: int


def share(
    spec: RunSpec,
    placement: Placement,
    rule: Rule,
    *,
    processes: int,
    gpus: int,
    cpus: int,
    card_gb: float | None,
) -> Placement:
    """The run's placement when it is packable (module doc): `share` k >= 2 and, on a GPU, the
    micro-batch of 1/k of the card; else `placement` as it is. `processes` and `gpus` are the
    run's (its resources entry's: nodes x tasks, nodes x GPUs per node; gpus 0: a CPU node),
    `cpus` one task's, `card_gb` the card's memory (None: unknown, nothing packs on GPUs)."""
    if processes != 1 or gpus > 1 or params_total(spec.model) > rule.max_params:
        return placement
    if gpus == 0:
        k = min(rule.per_gpu or 1, cpus)
        return replace(placement, share=k) if k >= 2 else placement
    if card_gb is None:
        return placement
    top = DEFAULT_PER_GPU if rule.per_gpu is None else rule.per_gpu
    for k in range(top, 1, -1):
        p = memory.choose(spec.model, spec.arm, spec.global_batch, 1, card_gb / k)
        if p.fits and p.sharding == "ddp" and not p.checkpointing and p.micro >= memory.MIN_MICRO:
            return replace(
                placement,
                micro=p.micro,
                accum=p.accum,
                checkpointing=False,
                gb_per_gpu=p.gb_per_gpu,
                share=k,
            )
    return placement


def pack(
    runs: list[tuple[str, float, Placement]],
    timeout_min: int | None,
    max_requeues: int,
    time_margin: float,
) -> list[Group]:
    """(run key, FLOPs, placement) of the runs of one resources entry, as the groups of their
    jobs (module doc): every run that is not packable alone, then the packed groups, longest first."""
    groups = [alone(key, p) for key, _, p in runs if p.share < 2]
    members: list[tuple[str, Placement]] = []
    for key, _, p in sorted((r for r in runs if r[2].share >= 2), key=lambda r: -r[1]):
        trial = [*members, (key, p)]
        if members and not _fits(trial, timeout_min, max_requeues, time_margin):
            groups.append(_group(members, timeout_min, time_margin))
            trial = [(key, p)]
        members = trial
    if members:
        groups.append(_group(members, timeout_min, time_margin))
    return groups


def alone(key: str, p: Placement) -> Group:
    return Group((key,), p.time_limit_min, p.requeues, p.signal_delay_s)


def _hours(members: list[tuple[str, Placement]]) -> float | None:
    hours = [p.gpu_hours for _, p in members]
    return None if None in hours else sum(h or 0.0 for h in hours)


def _fits(members: list[tuple[str, Placement]], timeout_min, max_requeues: int, time_margin: float) -> bool:
    if len(members) > min(p.share for _, p in members):
        return False
    hours = _hours(members)
    return hours is None or time_limit(hours, timeout_min, time_margin)[1] <= max_requeues


def _group(members: list[tuple[str, Placement]], timeout_min, time_margin: float) -> Group:
    if len(members) == 1:
        return alone(*members[0])
    hours = _hours(members)
    delay = max(p.signal_delay_s for _, p in members)
    keys = tuple(key for key, _ in members)
    if hours is None:  # no estimate (CPU nodes): the runs' own limit, the entry's longest job
        return Group(keys, max(p.time_limit_min or 0 for _, p in members) or None, 0, delay)
    limit, requeues = time_limit(hours, timeout_min, time_margin)
    return Group(keys, limit, requeues, delay)


# --- what `scaling plan` and `scaling sweep --dry-run` show ----------------------------------------


def in_jobs(groups: list[Group], placements: dict[str, Placement]) -> dict[str, Placement]:
    """Each run's placement with its job's time limit, requeues and warning (a packed run's: its group's)."""
    return {
        key: replace(placements[key], time_limit_min=g.time_limit_min, requeues=g.requeues)
        for g in groups
        for key in g.keys
    }


def labels(groups: list[Group]) -> dict[str, str | None]:
    """run key -> the `pack` column: `g<n>x<size>` for the n-th group of runs that share a GPU."""
    out: dict[str, str | None] = {}
    n = 0
    for g in groups:
        if len(g.keys) > 1:
            n += 1
        for key in g.keys:
            out[key] = f"g{n}x{len(g.keys)}" if len(g.keys) > 1 else None
    return out


def totals(groups: list[Group], placements: dict[str, Placement]) -> list[str]:
    """How many runs share how many GPUs, and what that saves, as far as it can be said before
    the runs have measured their MFU."""
    packed = [g for g in groups if len(g.keys) > 1]
    if not packed:
        return []
    runs = sum(len(g.keys) for g in packed)
    sizes = Counter(len(g.keys) for g in packed)
    shape = ", ".join(f"{n} of {size}" for size, n in sorted(sizes.items(), reverse=True))
    hours = _hours([(k, placements[k]) for g in packed for k in g.keys])
    where = ("GPU" if hours is not None else "task") + ("s" if len(packed) > 1 else "")
    lines = [
        f"packing: {runs} runs share {len(packed)} {where} ({shape} runs) instead of {runs} "
        "(pack: g<group>x<runs>; cluster.pack_per_gpu=1 turns it off)"
    ]
    if hours is not None:
        # a group's time limit assumes its runs together reach the assumed MFU on their GPU
        lines.append(
            f"  their {hours:,.0f} GPU-hours at the assumed MFU are the same packed or not; packing saves what "
            f"a run alone leaves idle: if one alone reached 1/2 (1/4) of the assumed MFU, {hours:,.0f} "
            f"({3 * hours:,.0f}) GPU-hours"
        )
    return lines
