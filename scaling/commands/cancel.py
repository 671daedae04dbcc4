"""`scaling cancel SWEEP`: cancel the sweep's driver job (if any: `scaling sweep --detach`), then its
queued and running jobs, and mark their runs cancelled.

Trainers get SIGTERM and checkpoint, so `scaling sweep` later resumes them.
"""

from __future__ import annotations

import argparse

from scaling import paths
from scaling.workflows.driver import cancel_driver
from scaling.workflows.sweep import cancel_sweep


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="the sweep's name (its folder under results/)")


def run(args: argparse.Namespace) -> int:
    sweep_dir = paths.sweep_dir(args.sweep)
    driver = cancel_driver(sweep_dir)  # first: a live driver would resubmit the runs
    if driver:
        print(f"cancelled the driver job {driver}")
        if not (sweep_dir / "runs").is_dir():
            return 0  # it had not submitted any
    cancelled, job_ids, warnings = cancel_sweep(args.sweep)
    for w in warnings:
        print(f"warning: {w}")
    print(
        f"cancelled {cancelled} run(s) of {args.sweep} ({len(job_ids)} job(s)); `scaling sweep` resumes them"
    )
    return 0
