"""`scaling fit SWEEP` or `scaling fit --runs FILE.parquet --out DIR`: IsoFLOP parabolas and power
laws (Approach 2), the parametric law (Approach 3), the compute multiplier, bootstrap intervals.
Writes fits.json and fits.parquet (docs/results-schema.md) and prints a summary; the work is
scaling/workflows/fit.py's."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.bootstrap import DEFAULT_N_BOOT
from analysis.multiplier import DEFAULT_BASELINE, DEFAULT_CANDIDATE
from analysis.table import MINIMAL_COLUMNS, X_CHOICES
from scaling import paths
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
    add_bootstrap_arguments(parser)
    parser.add_argument(
        "--candidate", help=f"arm whose compute efficiency is measured (default {DEFAULT_CANDIDATE})"
    )
    parser.add_argument("--baseline", help=f"arm it is compared with (default {DEFAULT_BASELINE})")
    parser.add_argument("--arms", help="comma-separated arms to fit (default: every arm in the table)")
    parser.add_argument(
        "--force", action="store_true", help="refit even when the runs and options are those of the last fit"
    )


def run(args: argparse.Namespace) -> int:
    # imported here so that `scaling --help` does not load scipy
    from scaling.workflows.fit import FitRequest, fit_sweep

    runs_path, out = paths.stage_paths(
        "fit",
        args.sweep,
        args.runs,
        args.out,
        flag="--runs",
        what="table",
        reads="runs.parquet",
        writes="fits",
        out_holds="fits.json and fits.parquet",
    )
    fit_sweep(
        FitRequest(
            runs=runs_path,
            out=out,
            flops=args.flops,
            x=args.x,
            n_boot=args.bootstrap,
            seed=args.seed,
            candidate=args.candidate,
            baseline=args.baseline,
            arms=parse_arms(args.arms),
            force=args.force,
        )
    )
    return 0


def add_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    """--bootstrap N and --seed: shared by every command that draws bootstrap intervals (the
    requests check N >= 0)."""
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_N_BOOT,
        metavar="N",
        help=f"bootstrap resamples for the intervals (default {DEFAULT_N_BOOT}; 0 for point estimates only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


def parse_arms(text: str | None) -> tuple[str, ...] | None:
    """--arms a,b -> ('a', 'b'); None when not given."""
    return tuple(a.strip() for a in text.split(",") if a.strip()) if text else None
