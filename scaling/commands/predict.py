"""`scaling predict SWEEP --budget C [--budget ...]` (or `--runs FILE`): per arm, N*, D*, L* at
budgets nobody trained, from Approach 2 and Approach 3 side by side with bootstrap intervals, the
shapes for N* with steps and tokens at the sweep's batch, and GPU-hours when a card is known; a
table, or JSON with --format json / --out FILE. The work is scaling/workflows/predict.py's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scaling import atomic
from scaling.commands.fit import add_bootstrap_arguments, parse_arms
from scaling.flops import CONVENTIONS

if TYPE_CHECKING:
    from scaling.config import SweepConfig
    from scaling.workflows.fit import FitRequest


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """SWEEP or --runs FILE, the fit's options and the output's: shared by predict and backtest."""
    parser.add_argument(
        "sweep", nargs="?", help="sweep name: reads results/<sweep>/runs.parquet and its config"
    )
    parser.add_argument("--runs", type=Path, help="any runs table (scaling fit --runs) instead of SWEEP")
    parser.add_argument(
        "--flops", choices=CONVENTIONS, help="FLOPs convention of the compute axis (default: the sweep's)"
    )
    add_bootstrap_arguments(parser)
    parser.add_argument("--arms", help="comma-separated arms (default: every arm in the table)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON to this file")


def source_request(
    args: argparse.Namespace, command: str
) -> tuple[FitRequest, SweepConfig | None, list[str]]:
    """The fit request of add_source_arguments' options, the sweep's config (None for --runs) and
    notes about the source."""
    from scaling.workflows.fit import FitRequest, sweep_source

    runs, cfg, notes = sweep_source(args.sweep, args.runs, command)
    request = FitRequest(
        runs=runs, flops=args.flops, n_boot=args.bootstrap, seed=args.seed, arms=parse_arms(args.arms)
    )
    return request, cfg, notes


def report(args: argparse.Namespace, command: str, rows: list[dict], text: str, warnings: list[str]) -> None:
    """Warnings on stderr; the rows as a table or JSON (--format), and as JSON into --out."""
    for w in warnings:
        print(f"scaling {command}: warning: {w}", file=sys.stderr)
    as_json = json.dumps(rows, indent=1)
    print(as_json if args.format == "json" else text)
    if args.out:
        atomic.write_text(args.out, as_json + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


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


def run(args: argparse.Namespace) -> int:
    from scaling.workflows.fit import ProgressLine
    from scaling.workflows.predict import PredictRequest, predict_budgets

    fit, cfg, notes = source_request(args, "predict")
    request = PredictRequest(fit, budgets=tuple(args.budget), gpu=args.gpu, mfu=args.mfu)
    result = predict_budgets(request, cfg, ProgressLine("bootstrap") if args.bootstrap else None)
    report(args, "predict", result.rows, result.text, notes + result.warnings)
    return 0
