"""`scaling compare [SWEEP] --baseline B [--candidate A ...]`: the compute multiplier between any two
arms of a sweep, or between arms of different sweeps or tables (`SWEEP:ARM`, `FILE.parquet:ARM`,
e.g. one arm trained at two learning rates), as a curve with bootstrap bands; writes compare.json
and compare.{png,pdf}. The work is scaling/workflows/compare.py's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling import paths
from scaling.commands.fit import add_bootstrap_arguments
from scaling.errors import UserError
from scaling.flops import CONVENTIONS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", nargs="?", help="the default source of arms given without one")
    parser.add_argument("--runs", type=Path, help="a runs table as the default source instead of SWEEP")
    parser.add_argument(
        "--candidate",
        action="append",
        metavar="[SOURCE:]ARM",
        help="arm whose efficiency is measured (repeat for several; default: every other arm of the default source)",
    )
    parser.add_argument("--baseline", required=True, metavar="[SOURCE:]ARM", help="arm it is compared with")
    parser.add_argument(
        "--flops", choices=CONVENTIONS, help="FLOPs convention of the compute axis (default: the tables')"
    )
    add_bootstrap_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for compare.json and the figure (default: results/SWEEP/compare; none with --runs)",
    )


def run(args: argparse.Namespace) -> int:
    from analysis.table import load_runs
    from scaling.workflows.compare import CompareRequest, compare_sides, parse_side
    from scaling.workflows.fit import ProgressLine

    if args.sweep is not None and args.runs is not None:
        raise UserError("give either SWEEP or --runs FILE as the default source, not both")
    default = str(args.runs) if args.runs is not None else args.sweep
    baseline = parse_side(args.baseline, default)
    if args.candidate:
        candidates = [parse_side(c, default) for c in args.candidate]
    else:
        if default is None:
            raise UserError("without --candidate, give SWEEP or --runs: every other arm of it is compared")
        table = args.runs if args.runs is not None else paths.sweep_dir(default) / "runs.parquet"
        data, _ = load_runs(table, flops=args.flops)
        candidates = [
            parse_side(a, default) for a in data.arms if (default, a) != (baseline.source, baseline.arm)
        ]
        if not candidates:
            raise UserError(f"{default} has no arm besides {baseline.arm}: give --candidate SOURCE:ARM")
    out = args.out
    if out is None and args.sweep is not None:
        out = paths.sweep_dir(args.sweep) / "compare"
    request = CompareRequest(n_boot=args.bootstrap, seed=args.seed, flops=args.flops, out=out)
    result = compare_sides(
        [(c, baseline) for c in candidates], request, ProgressLine("bootstrap") if args.bootstrap else None
    )
    for w in result.warnings:
        print(f"scaling compare: warning: {w}", file=sys.stderr)
    print(result.text)
    return 0
