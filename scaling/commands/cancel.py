"""`scaling cancel SWEEP`: cancel the sweep's queued and running jobs and mark their runs cancelled.

Trainers get SIGTERM and checkpoint, so `scaling sweep` later resumes them.
"""

from __future__ import annotations

import argparse

from scaling.workflows.sweep import cancel_sweep


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="the sweep's name (its folder under results/)")


def run(args: argparse.Namespace) -> int:
    cancelled, job_ids, warnings = cancel_sweep(args.sweep)
    for w in warnings:
        print(f"warning: {w}")
    print(
        f"cancelled {cancelled} run(s) of {args.sweep} ({len(job_ids)} job(s)); `scaling sweep` resumes them"
    )
    return 0
