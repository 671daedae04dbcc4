"""`scaling plan SWEEP [overrides]`: the run table of an IsoFLOP sweep, and optionally its specs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling.atomic import write_text
from scaling.config import available_sweeps, load_sweep
from scaling.plan import Plan, plan_sweep
from scaling.spec import budget_tag
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
    p.add_argument("sweep", help=f"a sweep in sweeps/ ({', '.join(available_sweeps())}) or a YAML path")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. budgets=[6e18,1e19] arms=[mdlm-ce] cluster=slurm"
    )


def configure(p: argparse.ArgumentParser) -> None:
    add_sweep_arguments(p)
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--out", type=Path, help="write the table to this file instead of stdout")
    p.add_argument(
        "--specs", type=Path, metavar="DIR", help="also write one spec per run: DIR/<run_key>.yaml"
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


def print_summary(plan: Plan, stream=sys.stderr) -> None:
    cfg = plan.sweep
    total = sum(d.achieved_flops for d in plan.details)
    print(
        f"sweep {cfg.name}: {len(plan.details)} runs, arms {', '.join(cfg.arms)}, budgets "
        f"{', '.join(budget_tag(b) for b in cfg.budgets)}, {total:.3g} FLOPs in all ({cfg.flops_convention} convention)",
        file=stream,
    )
    for w in plan.all_warnings:
        print(f"warning: {w}", file=stream)


def run(args: argparse.Namespace) -> int:
    plan = plan_sweep(load_sweep(args.sweep, args.overrides))
    text = render(plan_rows(plan), COLUMNS, args.format)
    if args.out:
        write_text(args.out, text + "\n")
        print(f"wrote {len(plan.details)} rows to {args.out}", file=sys.stderr)
    else:
        print(text)
    if args.specs:
        for spec in plan.runs:
            write_text(args.specs / f"{spec.run_key}.yaml", spec.to_yaml())
        print(f"wrote {len(plan.runs)} specs to {args.specs}/", file=sys.stderr)
    print_summary(plan)
    return 0
