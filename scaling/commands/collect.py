"""`scaling collect SWEEP`: run folders -> results/<sweep>/runs.parquet and curves.parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling import paths, store
from scaling.collect import collect, write_collection


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep", help="sweep name: reads results/<sweep>/runs/*/ (results root: $SCALING_RESULTS)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the two parquet files (default results/<sweep>/)"
    )


def run(args: argparse.Namespace) -> int:
    plan_keys = store.read_plan_manifest(paths.sweep_dir(args.sweep))
    collection = collect(paths.runs_dir(args.sweep), args.sweep, plan_keys=plan_keys)
    stale = collection.runs.num_rows - sum(collection.runs.column("in_plan").to_pylist())
    if stale:
        print(
            f"scaling collect: note: {stale} run folder(s) are not in the sweep's current plan "
            "(an earlier config); they are kept with in_plan = false and left out of fits",
            file=sys.stderr,
        )
    for w in collection.warnings:
        print(f"scaling collect: warning: {w}", file=sys.stderr)
    out = args.out if args.out is not None else paths.sweep_dir(args.sweep)
    runs_path, curves_path = write_collection(collection, out)
    counts = ", ".join(f"{n} {s}" for s, n in collection.status_counts().items())
    print(f"{collection.runs.num_rows} runs ({counts}) -> {runs_path}")
    kinds = collection.curves.column("kind").to_pylist()
    print(f"{kinds.count('train')} training and {kinds.count('val')} validation points -> {curves_path}")
    return 0
