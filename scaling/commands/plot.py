"""`scaling plot SWEEP` (or `--fits FILE --out DIR`): the figures of a fit as PNG and PDF, the
training curves of curves.parquet, and report.md; `--run KEY`: one run's curves.

    scaling plot tiny                       # results/tiny/plots/*.png|pdf and results/tiny/report.md
    scaling plot tiny --run ar-d16-l2-1e11  # results/tiny/plots/runs/<run_key>.png|pdf (a running run too)
    scaling plot --fits fits.json --out DIR [--runs runs.parquet] [--curves curves.parquet]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling import paths, store
from scaling.errors import UserError
from scaling.workflows.plot import plot_fits, plot_run


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep",
        nargs="?",
        help="sweep name: reads results/<sweep>/fits/fits.json, runs.parquet and curves.parquet, "
        "writes results/<sweep>/plots/ and results/<sweep>/report.md",
    )
    parser.add_argument("--fits", type=Path, help="a fits.json written by `scaling fit` (instead of SWEEP)")
    parser.add_argument(
        "--out", type=Path, help="output folder (required with --fits; report.md goes there too)"
    )
    parser.add_argument(
        "--runs", type=Path, help="with --fits: the runs table for error bars (default: the one the fit read)"
    )
    parser.add_argument(
        "--curves", type=Path, help="with --fits: a curves.parquet for the training-curves figure"
    )
    parser.add_argument(
        "--run",
        metavar="KEY",
        help="one run's curves (loss, learning rate, gradient norm, throughput): a run key of SWEEP "
        "(or a unique prefix of one), or a run folder with --out",
    )
    parser.add_argument(
        "--independent-y",
        action="store_true",
        help="give each arm's panel its own y-range (default: one y-range per figure, arms compared)",
    )


def _run_folder(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.sweep is None:
        folder = Path(args.run)
        if args.out is None or not folder.is_dir():
            raise UserError("--run without SWEEP needs a run folder and --out DIR (or name the sweep)")
        return folder, args.out
    runs = paths.runs_dir(args.sweep)
    keys = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    found = [k for k in keys if k == args.run] or [k for k in keys if k.startswith(args.run)]
    if not found:
        raise UserError(
            f"no run of sweep {args.sweep} matches {args.run!r}: see `scaling status {args.sweep} --runs`"
        )
    if len(found) > 1:
        raise UserError(
            f"{len(found)} runs of sweep {args.sweep} match {args.run!r} ({', '.join(found[:3])}, ...): "
            "give more of the run key"
        )
    return runs / found[0], args.out or paths.sweep_dir(args.sweep) / "plots" / "runs"


def run(args: argparse.Namespace) -> int:
    if args.run is not None:
        folder, out = _run_folder(args)
        written, notes = plot_run(folder, out)
    elif args.fits is not None or args.sweep is None:
        fits_path, out = paths.stage_paths(
            "plot",
            args.sweep,
            args.fits,
            args.out,
            flag="--fits",
            what="fit",
            reads="fits/fits.json",
            writes="plots",
            out_holds="the figures",
        )
        written, notes = plot_fits(
            fits_path,
            out,
            runs=args.runs,
            curves=args.curves,
            report=out / "report.md",
            share_y=not args.independent_y,
        )
    else:
        sweep = paths.sweep_dir(args.sweep)
        written, notes = plot_fits(
            sweep / "fits" / "fits.json",
            args.out or sweep / "plots",
            runs=sweep / "runs.parquet",
            curves=sweep / "curves.parquet",
            keep=store.read_plan_manifest(sweep),
            report=sweep / "report.md",
            title=f"Scaling-law report: sweep {args.sweep}",
            share_y=not args.independent_y,
        )
    for n in notes:
        print(f"scaling plot: note: {n}", file=sys.stderr)
    for p in written:
        print(p)
    return 0
