"""`scaling plot SWEEP` (or `--fits FILE --out DIR`): the figures of a fit as PNG and PDF."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.plots import plot_all
from analysis.report import load_fits
from scaling import paths


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep",
        nargs="?",
        help="sweep name: reads results/<sweep>/fits/fits.json, writes results/<sweep>/plots/",
    )
    parser.add_argument("--fits", type=Path, help="a fits.json written by `scaling fit` (instead of SWEEP)")
    parser.add_argument("--out", type=Path, help="output folder (required with --fits)")


def run(args: argparse.Namespace) -> int:
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
    written, notes = plot_all(load_fits(fits_path), out)
    for n in notes:
        print(f"scaling plot: note: {n}", file=sys.stderr)
    for p in written:
        print(p)
    return 0
