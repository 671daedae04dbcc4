"""`scaling sweep SWEEP [overrides] [cluster=local|slurm] [--dry-run] [--no-wait]`: plan, prepare,
submit and watch a sweep (scaling.workflows.sweep.run_sweep)."""

from __future__ import annotations

import argparse

from scaling.commands.plan import add_sweep_arguments
from scaling.config import load_sweep
from scaling.workflows.sweep import run_sweep


def configure(p: argparse.ArgumentParser) -> None:
    add_sweep_arguments(p)
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be submitted, with resources; submit nothing"
    )
    p.add_argument(
        "--no-wait", action="store_true", help="submit and return; watch with `scaling status SWEEP`"
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_sweep(args.sweep, args.overrides)
    return run_sweep(cfg, wait=not args.no_wait, dry_run=args.dry_run).exit_code
