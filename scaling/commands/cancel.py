"""`scaling cancel SWEEP`: cancel the sweep's queued and running jobs and mark their runs cancelled.

Trainers get SIGTERM and checkpoint, so `scaling sweep` later resumes them.
"""

from __future__ import annotations

import argparse

from scaling import store
from scaling.commands.status import sweep_views
from scaling.executors import cancel_jobs


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="the sweep's name (its folder under results/)")


def run(args: argparse.Namespace) -> int:
    views = sweep_views(args.sweep)
    active = [v for v in views if v.state in store.ACTIVE and v.status.job_id]
    job_ids = sorted({v.status.job_id for v in active})
    cancel_jobs(job_ids)
    cancelled = 0
    for v in active:
        if store.read_result(v.run_dir) is None:  # a run may finish while we cancel
            store.write_status(v.run_dir, "cancelled", reason="cancelled by `scaling cancel`")
            cancelled += 1
    print(
        f"cancelled {cancelled} run(s) of {args.sweep} ({len(job_ids)} job(s)); `scaling sweep` resumes them"
    )
    return 0
