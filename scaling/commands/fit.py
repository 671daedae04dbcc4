"""`scaling fit SWEEP` or `scaling fit --runs FILE.parquet --out DIR`: IsoFLOP parabolas and power
laws (Approach 2), the parametric law (Approach 3), the compute multiplier, bootstrap intervals.
Writes fits.json and fits.parquet (docs/results-schema.md) and prints a summary."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import analysis
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
    parser.add_argument(
        "--force", action="store_true", help="refit even when the runs and options are those of the last fit"
    )


def run(args: argparse.Namespace) -> int:
    # imported here so that `scaling --help` does not load scipy
    from analysis.fit import FitOptions, fit_runs
    from analysis.report import summary, to_json, to_table
    from analysis.table import load_runs
    from scaling.collect import parquet_bytes

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
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: give a count >= 0")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    pair = {a for a in (args.candidate, args.baseline) if a is not None}
    if arms is not None:
        outside = sorted(pair - set(arms))
        if outside:
            raise UserError(f"--candidate/--baseline {', '.join(outside)} not in --arms: add it to --arms")
    digest = _input_digest(runs_path, args)
    cached = _cached(out, digest) if not args.force else None
    if cached is not None:
        for w in cached["warnings"]:
            print(f"scaling fit: warning: {w}", file=sys.stderr)
        print(cached["summary"])
        print(f"\nunchanged runs and options: kept {out / 'fits.json'} (--force refits)")
        return 0
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
    all_warnings = warnings + report.warnings
    for w in all_warnings:
        print(f"scaling fit: warning: {w}", file=sys.stderr)
    text = summary(report)
    print(text)
    atomic.write_text(out / "fits.json", fits_json)
    atomic.write_bytes(out / "fits.parquet", fits_parquet)
    atomic.write_json(out / CACHE_FILE, {"digest": digest, "warnings": all_warnings, "summary": text})
    print(f"\nwrote {out / 'fits.json'} and {out / 'fits.parquet'}")
    return 0


CACHE_FILE = ".fit-cache.json"  # what the last fit read and printed: a rerun on the same inputs reuses it


def _input_digest(runs_path: Path, args: argparse.Namespace) -> str | None:
    """Everything the fit depends on: the table's bytes, the options and the fitting code."""
    try:
        table = runs_path.read_bytes()
    except OSError:
        return None  # load_runs reports the problem
    h = hashlib.sha256(table)
    options = [args.flops, args.x, args.bootstrap, args.seed, args.candidate, args.baseline, args.arms]
    h.update(json.dumps(options).encode())
    for source in sorted(Path(analysis.__file__).parent.glob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()


def _cached(out: Path, digest: str | None) -> dict | None:
    if digest is None or not (out / "fits.json").exists() or not (out / "fits.parquet").exists():
        return None
    try:
        cache = json.loads((out / CACHE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cache if isinstance(cache, dict) and cache.get("digest") == digest else None


def _progress(i: int, n: int) -> None:
    if i == n or i % max(1, n // 100) == 0:
        end = "\n" if i == n else ""
        print(f"\rbootstrap {i}/{n}", end=end, file=sys.stderr, flush=True)
