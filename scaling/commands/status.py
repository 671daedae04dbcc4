"""`scaling status SWEEP [--runs] [--all]`: how many runs are in each state, and optionally one row
per run.

The queue is asked once for all of the sweep's jobs; a job that left it without a result is
recorded as failed (or cancelled) with the queue's reason. Only the runs of the sweep's latest plan
(plan.json) are counted, as collect and fit do; --all also counts folders of earlier plans.
"""

from __future__ import annotations

import argparse

from scaling import paths, store
from scaling.executors import sweep_views
from scaling.tables import FORMATS, render
from scaling.workflows.sweep import STATUS_COLUMNS, counts_line, run_rows


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="the sweep's name (its folder under results/)")
    p.add_argument("--runs", action="store_true", help="one row per run")
    p.add_argument("--format", choices=FORMATS, default="table", help="of the --runs table")
    p.add_argument("--all", action="store_true", help="also count run folders of earlier plans")


def run(args: argparse.Namespace) -> int:
    sweep_dir = paths.sweep_dir(args.sweep)
    views, warnings = sweep_views(sweep_dir, write=False)  # a report: writes nothing
    for w in warnings:
        print(f"warning: {w}")
    planned = store.read_plan_manifest(sweep_dir)
    counted = [v for v in views if args.all or planned is None or v.run_key in planned]
    if args.runs:
        print(render(run_rows(counted), STATUS_COLUMNS, args.format))
    print(counts_line(counted))
    if len(counted) < len(views):
        print(f"(not counted: {len(views) - len(counted)} run folder(s) of earlier plans; --all counts them)")
    return 0
