"""`scaling status SWEEP [--runs] [--all]`: how many runs are in each state, and optionally one row
per run.

The queue is asked once for all of the sweep's jobs; a job that left it without a result is
recorded as failed (or cancelled) with the queue's reason. Only the runs of the sweep's latest plan
(plan.json) are counted, as collect and fit do; --all also counts folders of earlier plans.
"""

from __future__ import annotations

import argparse
from collections import Counter

from scaling import paths, store
from scaling.executors import RunView, reconcile, sweep_run_dirs
from scaling.spec import budget_tag
from scaling.tables import FORMATS, render

COLUMNS = ["arm", "model", "budget", "state", "job_id", "requeues", "step", "last_loss", "reason"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="the sweep's name (its folder under results/)")
    p.add_argument("--runs", action="store_true", help="one row per run")
    p.add_argument("--format", choices=FORMATS, default="table", help="of the --runs table")
    p.add_argument("--all", action="store_true", help="also count run folders of earlier plans")


def counts_line(views: list[RunView]) -> str:
    counts = Counter(v.state for v in views)
    order = [s for s in store.STATES if counts[s]]
    return f"{len(views)} runs: " + ", ".join(f"{counts[s]} {s}" for s in order)


def run_rows(views: list[RunView]) -> list[dict]:
    rows = []
    for v in sorted(
        views, key=lambda v: (v.spec.arm, v.spec.budget_flops, v.spec.model.d_model, v.spec.model.n_layers)
    ):
        rows.append(
            {
                "run_key": v.run_key,
                "arm": v.spec.arm,
                "model": v.spec.model.name,
                "budget": budget_tag(v.spec.budget_flops),
                "state": v.state,
                "job_id": v.status.job_id,
                "requeues": v.status.requeues,
                "step": f"{v.progress.step}/{v.progress.steps}",
                "last_loss": v.progress.last_loss,
                "reason": v.status.reason if v.state in ("failed", "cancelled", "diverged") else None,
            }
        )
    return rows


def sweep_views(sweep: str) -> list[RunView]:
    """Every run of a sweep's folder, reconciled with its queue (warnings printed)."""
    sweep_dir = paths.sweep_dir(sweep)
    store.check_layout(sweep_dir)
    views, warnings = reconcile(sweep_run_dirs(sweep_dir))
    for w in warnings:
        print(f"warning: {w}")
    return views


def run(args: argparse.Namespace) -> int:
    views = sweep_views(args.sweep)
    planned = store.read_plan_manifest(paths.sweep_dir(args.sweep))
    counted = [v for v in views if args.all or planned is None or v.run_key in planned]
    if args.runs:
        print(render(run_rows(counted), COLUMNS, args.format))
    print(counts_line(counted))
    if len(counted) < len(views):
        print(f"(not counted: {len(views) - len(counted)} run folder(s) of earlier plans; --all counts them)")
    return 0
