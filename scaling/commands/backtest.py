"""`scaling backtest SWEEP` (or `--runs FILE`): hold out each arm's largest budget, fit the rest,
and compare the predicted N* and L* (both approaches, with intervals) with the held-out budget's
own vertex and runs. The work is scaling/workflows/backtest.py's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling import atomic
from scaling.commands.fit import parse_arms
from scaling.commands.predict import add_source_arguments
from scaling.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--out", type=Path, help="also write the backtest as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from scaling.workflows.backtest import backtest_table
    from scaling.workflows.fit import FitRequest, ProgressLine, sweep_source

    runs, _, _ = sweep_source(args.sweep, args.runs, "backtest")
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: give a count >= 0")
    request = FitRequest(
        runs=runs, flops=args.flops, n_boot=args.bootstrap, seed=args.seed, arms=parse_arms(args.arms)
    )
    result = backtest_table(request, ProgressLine("bootstrap") if args.bootstrap else None)
    for w in result.warnings:
        print(f"scaling backtest: warning: {w}", file=sys.stderr)
    text = json.dumps(result.rows, indent=1)
    print(text if args.format == "json" else result.text)
    if args.out:
        atomic.write_text(args.out, text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
