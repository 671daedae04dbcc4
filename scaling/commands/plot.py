"""`scaling plot SWEEP` (or `--fits FILE --out DIR`): the figures of a fit as PNG and PDF."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling import paths
from scaling.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep",
        nargs="?",
        help="sweep name: reads results/<sweep>/fits/fits.json, writes results/<sweep>/plots/",
    )
    parser.add_argument("--fits", type=Path, help="a fits.json written by `scaling fit` (instead of SWEEP)")
    parser.add_argument("--out", type=Path, help="output folder (required with --fits)")


def load_fits(path: Path) -> dict:
    from analysis.report import FITS_SCHEMA_VERSION

    try:
        fits = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run `scaling fit` first") from None
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}): rerun `scaling fit`"
        ) from None
    if not isinstance(fits, dict) or fits.get("schema_version") != FITS_SCHEMA_VERSION or "arms" not in fits:
        raise UserError(
            f"{path} is not a fits.json of schema version {FITS_SCHEMA_VERSION}: rerun `scaling fit`"
        )
    return fits


def run(args: argparse.Namespace) -> int:
    from analysis.plots import plot_all

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
