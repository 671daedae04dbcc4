"""`scaling fit SWEEP` or `scaling fit --runs FILE.parquet --out DIR`: IsoFLOP parabolas and power
laws (Approach 2), the parametric law (Approach 3), the compute multiplier, bootstrap intervals.
Writes fits.json and fits.parquet (docs/results-schema.md) and prints a summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis.bootstrap import DEFAULT_N_BOOT
from analysis.multiplier import DEFAULT_BASELINE, DEFAULT_CANDIDATE
from analysis.table import MINIMAL_COLUMNS, X_CHOICES
from scaling import atomic, paths
from scaling.errors import UserError
from scaling.flops import CONVENTIONS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep",
        nargs="?",
        help="sweep name: reads results/<sweep>/runs.parquet, writes results/<sweep>/fits/",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        help=f"any parquet with the columns {', '.join(MINIMAL_COLUMNS)} (instead of SWEEP)",
    )
    parser.add_argument("--out", type=Path, help="output folder (required with --runs)")
    parser.add_argument(
        "--flops",
        choices=CONVENTIONS,
        help="FLOPs convention of the compute axis (default: the sweep's planning convention)",
    )
    parser.add_argument(
        "--x",
        choices=X_CHOICES,
        default="achieved",
        help="compute axis: each run's achieved FLOPs (column flops_<convention>) or its planned "
        "budget_flops (default achieved; budget when the table has no FLOPs columns)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_N_BOOT,
        metavar="N",
        help=f"bootstrap resamples (default {DEFAULT_N_BOOT}; 0 for point estimates only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument(
        "--candidate", help=f"arm whose compute efficiency is measured (default {DEFAULT_CANDIDATE})"
    )
    parser.add_argument("--baseline", help=f"arm it is compared with (default {DEFAULT_BASELINE})")
    parser.add_argument("--arms", help="comma-separated arms to fit (default: every arm in the table)")


def _inputs(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.runs is not None:
        if args.sweep is not None:
            raise UserError("give either SWEEP or --runs FILE, not both")
        if args.out is None:
            raise UserError("--runs needs --out DIR for fits.json and fits.parquet")
        return args.runs, args.out
    if args.sweep is None:
        raise UserError("name a sweep (scaling fit SWEEP) or a table (scaling fit --runs FILE --out DIR)")
    return paths.sweep_dir(args.sweep) / "runs.parquet", args.out or paths.sweep_dir(args.sweep) / "fits"


def run(args: argparse.Namespace) -> int:
    # imported here so that `scaling --help` does not load scipy
    from analysis.fit import FitOptions, fit_runs
    from analysis.report import summary, to_json, to_table
    from analysis.table import load_runs
    from scaling.collect import parquet_bytes

    runs_path, out = _inputs(args)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: give a count >= 0")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    pair = {a for a in (args.candidate, args.baseline) if a is not None}
    if arms is not None:
        outside = sorted(pair - set(arms))
        if outside:
            raise UserError(f"--candidate/--baseline {', '.join(outside)} not in --arms: add it to --arms")
    data, warnings = load_runs(runs_path, flops=args.flops, x=args.x, arms=arms)
    options = FitOptions(
        n_boot=args.bootstrap,
        seed=args.seed,
        candidate=args.candidate or DEFAULT_CANDIDATE,
        baseline=args.baseline or DEFAULT_BASELINE,
        named_arms=frozenset(arms or ()) | frozenset(pair),
    )
    report = fit_runs(data, options, progress=_progress if sys.stderr.isatty() else None)
    # both files are serialized before either is written: a failure leaves no partial output
    fits_json = json.dumps(to_json(report), indent=1, allow_nan=False) + "\n"
    fits_parquet = parquet_bytes(to_table(report))
    for w in warnings + report.warnings:
        print(f"scaling fit: warning: {w}", file=sys.stderr)
    print(summary(report))
    atomic.write_text(out / "fits.json", fits_json)
    atomic.write_bytes(out / "fits.parquet", fits_parquet)
    print(f"\nwrote {out / 'fits.json'} and {out / 'fits.parquet'}")
    return 0


def _progress(i: int, n: int) -> None:
    if i == n or i % max(1, n // 100) == 0:
        end = "\n" if i == n else ""
        print(f"\rbootstrap {i}/{n}", end=end, file=sys.stderr, flush=True)
