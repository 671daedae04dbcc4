"""`scaling predict SWEEP --budget C [--budget ...]` (or `--runs FILE`): per arm, N*, D*, L* at
budgets nobody trained, from Approach 2 and Approach 3 side by side with bootstrap intervals, the
shapes for N* with steps and tokens at the sweep's batch, and GPU-hours when a card is known; a
table, or JSON with --format json / --out FILE. The work is scaling/workflows/predict.py's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis.bootstrap import DEFAULT_N_BOOT
from scaling import atomic
from scaling.commands.fit import parse_arms
from scaling.errors import UserError
from scaling.flops import CONVENTIONS


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """SWEEP or --runs FILE, and the fit's options: shared by predict, backtest and compare."""
    parser.add_argument(
        "sweep", nargs="?", help="sweep name: reads results/<sweep>/runs.parquet and its config"
    )
    parser.add_argument("--runs", type=Path, help="any runs table (scaling fit --runs) instead of SWEEP")
    parser.add_argument(
        "--flops", choices=CONVENTIONS, help="FLOPs convention of the compute axis (default: the sweep's)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_N_BOOT,
        metavar="N",
        help=f"bootstrap resamples for the intervals (default {DEFAULT_N_BOOT})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--arms", help="comma-separated arms (default: every arm in the table)")


def budget(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of FLOPs, e.g. 1e21") from None


def configure(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument(
        "--budget",
        type=budget,
        action="append",
        required=True,
        metavar="C",
        help="a compute budget in FLOPs (repeat for several), in the fit's compute convention",
    )
    parser.add_argument("--gpu", help="card for GPU-hours, e.g. H100 (default: the cluster config's gpu)")
    parser.add_argument(
        "--mfu", type=float, help="assumed model FLOPs utilization (default: the cluster's, else 0.35)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--out", type=Path, help="also write the predictions as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from scaling.workflows.fit import FitRequest, ProgressLine, sweep_source
    from scaling.workflows.predict import PredictRequest, predict_budgets

    runs, cfg, notes = sweep_source(args.sweep, args.runs, "predict")
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: give a count >= 0")
    request = PredictRequest(
        FitRequest(
            runs=runs, flops=args.flops, n_boot=args.bootstrap, seed=args.seed, arms=parse_arms(args.arms)
        ),
        budgets=tuple(args.budget),
        gpu=args.gpu,
        mfu=args.mfu,
    )
    result = predict_budgets(request, cfg, ProgressLine("bootstrap") if args.bootstrap else None)
    for w in notes + result.warnings:
        print(f"scaling predict: warning: {w}", file=sys.stderr)
    text = json.dumps(result.rows, indent=1)
    print(text if args.format == "json" else result.text)
    if args.out:
        atomic.write_text(args.out, text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
