"""`scaling plan SWEEP [overrides]`: the run table of an IsoFLOP sweep, and optionally its specs."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from scaling import packing, placement
from scaling.atomic import write_text
from scaling.config import available_sweeps, load_sweeps
from scaling.executors import Run, executor_for
from scaling.plan import Plan, plan_sweep, summary_lines
from scaling.tables import FORMATS, render

COLUMNS = [
    "run_key",
    "arm",
    "model",
    "budget_flops",
    "params_non_embedding",
    "steps",
    "tokens",
    "tokens_per_param",
    "lr",
    "warmup_steps",
    "achieved_flops",
    "deviation_pct",
    "warnings",
]


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """SWEEP and Hydra overrides: shared by every command that plans."""
    p.add_argument(
        "sweep",
        help=f"a sweep in sweeps/ or $SCALING_SWEEPS ({', '.join(available_sweeps())}) or a YAML path",
    )
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. budgets=[6e18,1e19] arms=[mdlm-ce] cluster=slurm"
    )


def add_multirun_argument(p: argparse.ArgumentParser) -> None:
    """-m/--multirun: sweep overrides (train.lr=1e-3,3e-3) give one sweep per combination."""
    p.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="one sweep per combination of sweep overrides, e.g. -m train.lr=1e-3,3e-3 (named tiny-lr=0.001, ...)",
    )


def configure(p: argparse.ArgumentParser) -> None:
    add_sweep_arguments(p)
    add_multirun_argument(p)
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--out", type=Path, help="write the table to this file instead of stdout")
    p.add_argument(
        "--specs",
        type=Path,
        metavar="DIR",
        help="also write one spec per run: DIR/<run_key>.yaml (with -m: DIR/<sweep>/<run_key>.yaml)",
    )


def plan_rows(plan: Plan) -> list[dict]:
    return [
        {
            "run_key": d.run_key,
            "arm": d.spec.arm,
            "model": d.spec.model.name,
            "budget_flops": d.spec.budget_flops,
            "params_non_embedding": d.params_non_embedding,
            "steps": d.spec.steps,
            "tokens": d.tokens,
            "tokens_per_param": round(d.tokens_per_param, 2),
            "lr": d.spec.optim.lr,
            "warmup_steps": d.spec.optim.warmup_steps,
            "achieved_flops": d.achieved_flops,
            "deviation_pct": round(100 * d.deviation, 3),
            "warnings": list(d.warnings),
        }
        for d in plan.details
    ]


def print_summary(plan: Plan, stream=None) -> None:
    for line in summary_lines(plan):
        print(line, file=stream or sys.stderr)  # looked up now: sys.stderr may have been replaced


def placements(plan: Plan) -> tuple[list[placement.Placement], list[packing.Group]] | None:
    """Each run's placement on the sweep's cluster and the groups of runs that share a job (small
    runs share a GPU: scaling/packing.py), when it has GPUs to size runs by, else None."""
    executor = executor_for(plan.sweep.cluster)
    runs = [Run(Path(d.run_key), d.spec, d.params_total) for d in plan.details]
    placed = [executor.place(r) for r in runs]
    return (placed, executor.pack(runs)) if any(p.gpu_hours is not None for p in placed) else None


def run(args: argparse.Namespace) -> int:
    multirun = getattr(args, "multirun", False)
    plans = [plan_sweep(cfg) for cfg in load_sweeps(args.sweep, args.overrides, multirun=multirun)]
    placed = {plan.sweep.name: placements(plan) for plan in plans}
    columns = ["sweep", *COLUMNS] if multirun else list(COLUMNS)
    if any(placed.values()):
        columns += [*placement.COLUMNS, "pack"]
    rows = []
    for plan in plans:
        where = placed[plan.sweep.name]
        extra: dict[str, dict] = {}
        if where:
            by_key = {d.run_key: p for d, p in zip(plan.details, where[0])}
            in_jobs, pack = packing.in_jobs(where[1], by_key), packing.labels(where[1])
            extra = {k: {**placement.row(in_jobs[k]), "pack": pack[k]} for k in by_key}
            plan.details = [
                replace(d, spec=placement.apply(d.spec, p)) for d, p in zip(plan.details, where[0])
            ]
        for row in plan_rows(plan):
            rows.append({"sweep": plan.sweep.name, **row, **extra.get(row["run_key"], {})})
    text = render(rows, columns, args.format)
    n_runs = sum(len(plan.details) for plan in plans)
    if args.out:
        write_text(args.out, text + "\n")
        print(f"wrote {n_runs} rows to {args.out}", file=sys.stderr)
    else:
        print(text)
    if args.specs:
        for plan in plans:
            folder = args.specs / plan.sweep.name if multirun else args.specs
            for spec in plan.runs:
                write_text(folder / f"{spec.run_key}.yaml", spec.to_yaml())
            print(f"wrote {len(plan.runs)} specs to {folder}/", file=sys.stderr)
    for plan in plans:
        print_summary(plan)
        where = placed[plan.sweep.name]
        if where:
            by_key = {d.run_key: p for d, p in zip(plan.details, where[0])}
            for line in placement.totals(plan.runs, where[0], plan.sweep.data.train_tokens) + packing.totals(
                where[1], by_key
            ):
                print(line, file=sys.stderr)
    return 0
