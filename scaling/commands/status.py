"""`scaling status SWEEP [--runs] [--all] [--watch]`: how many runs are in each state, and optionally
one row per run; `--watch` redraws the rows (state, step/steps, last loss, tokens/s, ETA) and the
sweep's ETA every few seconds until no run is queued or running.

The queue is asked once for all of the sweep's jobs (per redraw); a job that left it without a result
is shown as failed (or cancelled) with the queue's reason. Only the runs of the sweep's latest plan
(plan.json) are counted, as collect and fit do; --all also counts folders of earlier plans. Speeds
and ETAs come from the trainers' own logs (scaling/workflows/live.py).
"""

from __future__ import annotations

import argparse

from scaling import nodes, paths, store
from scaling.errors import UserError
from scaling.executors import sweep_views
from scaling.tables import FORMATS, duration, render
from scaling.workflows.driver import driver_line
from scaling.workflows.live import live_rows, sweep_eta, watch_status
from scaling.workflows.sweep import STATUS_COLUMNS, counts_line, run_rows


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="the sweep's name (its folder under results/)")
    p.add_argument("--runs", action="store_true", help="one row per run")
    p.add_argument("--format", choices=FORMATS, default="table", help="of the --runs table")
    p.add_argument("--all", action="store_true", help="also count run folders of earlier plans")
    p.add_argument(
        "--watch",
        action="store_true",
        help="redraw one row per run (state, step/steps, last loss, tokens/s, ETA) and the sweep's ETA "
        "until no run is queued or running (Ctrl-C stops watching, not the runs)",
    )
    p.add_argument("--interval", type=float, default=5.0, help="seconds between redraws of --watch (5)")


def _views(args: argparse.Namespace):
    """The counted runs, the queues' warnings, and notes (nodes with failed runs, folders left out) or None."""
    sweep_dir = paths.sweep_dir(args.sweep)
    driver = driver_line(sweep_dir)
    if driver and not (sweep_dir / "runs").is_dir():
        return [], [], f"{driver}\nno run folders yet: the driver is planning the sweep or preparing its data"
    views, warnings = sweep_views(sweep_dir, write=False)  # a report: writes nothing
    planned = store.read_plan_manifest(sweep_dir)
    counted = [v for v in views if args.all or planned is None or v.run_key in planned]
    left_out = len(views) - len(counted)
    note = (
        f"(not counted: {left_out} run folder(s) of earlier plans; --all counts them)" if left_out else None
    )
    bad_nodes = nodes.summary(nodes.recorded(sweep_dir, (v.status for v in counted)))
    notes = [driver, bad_nodes, note]
    return counted, [f"warning: {w}" for w in warnings], "\n".join(filter(None, notes)) or None


def run(args: argparse.Namespace) -> int:
    if args.watch:
        if args.format != "table" or not args.interval > 0:
            raise UserError("--watch draws a table every --interval seconds (> 0): leave out --format")

        def load() -> tuple[list[dict], str]:
            counted, warnings, note = _views(args)
            eta = sweep_eta(counted)
            eta_text = "?" if eta is None else f"{duration(eta)} at the running trainers' rates"
            lines = [counts_line(counted), f"sweep ETA {eta_text}", *warnings, *([note] if note else [])]
            return live_rows(counted, run_rows(counted)), "\n".join(lines)

        return watch_status(load, args.interval)
    counted, warnings, note = _views(args)
    for w in warnings:
        print(w)
    if args.runs:
        print(render(run_rows(counted), STATUS_COLUMNS, args.format))
    print(counts_line(counted))
    if note:
        print(note)
    return 0
