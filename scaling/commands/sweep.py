"""`scaling sweep SWEEP [overrides] [cluster=local|slurm] [-m] [--dry-run] [--no-wait] [--detach]`:
plan, prepare, submit and watch a sweep (scaling.workflows.sweep.run_sweep); with -m, one sweep per
combination of the sweep overrides (train.lr=1e-3,3e-3); with --detach, a SLURM job does all of it
and then collects, fits and plots (scaling.workflows.driver)."""

from __future__ import annotations

import argparse

from scaling.commands.plan import add_multirun_argument, add_sweep_arguments
from scaling.config import load_sweeps
from scaling.errors import UserError
from scaling.workflows.driver import submit_driver
from scaling.workflows.sweep import run_sweep


def configure(p: argparse.ArgumentParser) -> None:
    add_sweep_arguments(p)
    add_multirun_argument(p)
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be submitted, with resources; submit nothing"
    )
    p.add_argument(
        "--no-wait", action="store_true", help="submit and return; watch with `scaling status SWEEP`"
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="submit the sweep's driver as a SLURM CPU job that submits and watches the runs, then "
        "collects, fits and plots: nothing has to stay on the login node",
    )


def run(args: argparse.Namespace) -> int:
    """With -m, one sweep per combination, one after the other (all submitted at once with --no-wait);
    the exit code is the worst of theirs."""
    if args.detach and (args.dry_run or args.no_wait):
        raise UserError(
            "--detach submits a driver job that waits for the runs: leave out --dry-run and --no-wait"
        )
    configs = load_sweeps(args.sweep, args.overrides, multirun=args.multirun)
    if args.detach:
        for cfg in configs:
            submit_driver(cfg)
        return 0
    codes = []
    for i, cfg in enumerate(configs):
        if len(configs) > 1:
            print(f"=== sweep {i + 1}/{len(configs)}: {cfg.name}", flush=True)
        codes.append(run_sweep(cfg, wait=not args.no_wait, dry_run=args.dry_run).exit_code)
    return max(codes)
