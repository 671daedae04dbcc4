"""The fit of a sweep's runs table, as functions (`scaling fit`, `predict`, `backtest` and `compare`
are their adapters).

    outcome = fit_sweep(FitRequest(runs=Path("results/tiny/runs.parquet"), out=Path("results/tiny/fits")))
    outcome.report          # analysis.fit.FitReport (None when the last fit was reused)
    report = fit_table(FitRequest(runs=path), progress=ProgressLine("bootstrap"))   # nothing written

`fit_sweep` writes fits.json and fits.parquet atomically (both serialized before either is
written) and a cache: a rerun on the same table bytes, options and fitting code reprints the last
summary instead of refitting. The bootstrap reports its progress with an ETA on stderr, on a
terminal or not (a line per step off a terminal).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import analysis
from analysis.bootstrap import DEFAULT_N_BOOT
from analysis.fit import FitOptions, FitReport, fit_runs
from analysis.multiplier import DEFAULT_BASELINE, DEFAULT_CANDIDATE
from analysis.report import summary, to_json, to_table
from analysis.table import load_runs
from scaling import atomic, paths
from scaling.collect import parquet_bytes
from scaling.config import SweepConfig, load_sweep
from scaling.errors import UserError
from scaling.tables import duration

CACHE_FILE = ".fit-cache.json"  # what the last fit read and printed: a rerun on the same inputs reuses it


def check_bootstrap(n_boot: int) -> None:
    if n_boot < 0:
        raise UserError(f"--bootstrap {n_boot}: give a count >= 0")


@dataclass(frozen=True)
class FitRequest:
    runs: Path
    out: Path | None = None  # where fits.json and fits.parquet go (fit_sweep)
    flops: str | None = None
    x: str = "achieved"
    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    candidate: str | None = None
    baseline: str | None = None
    arms: tuple[str, ...] | None = None
    force: bool = False

    def __post_init__(self) -> None:
        check_bootstrap(self.n_boot)
        pair = {a for a in (self.candidate, self.baseline) if a is not None}
        if self.arms is not None:
            outside = sorted(pair - set(self.arms))
            if outside:
                raise UserError(
                    f"--candidate/--baseline {', '.join(outside)} not in --arms: add it to --arms"
                )

    def options(self) -> FitOptions:
        pair = {a for a in (self.candidate, self.baseline) if a is not None}
        return FitOptions(
            n_boot=self.n_boot,
            seed=self.seed,
            candidate=self.candidate or DEFAULT_CANDIDATE,
            baseline=self.baseline or DEFAULT_BASELINE,
            named_arms=frozenset(self.arms or ()) | frozenset(pair),
        )


@dataclass
class FitOutcome:
    text: str  # the printed summary
    warnings: list[str]
    written: list[Path] = field(default_factory=list)
    report: FitReport | None = None  # None when the last fit was reused
    reused: bool = False


class ProgressLine:
    """`label 40% (400/1000), 6.1 s, ETA 9.2 s` on `stream`: redrawn in place on a terminal, else
    one line per tenth of the work (a log file gets a few lines, not hundreds)."""

    def __init__(self, label: str, stream: TextIO | None = None):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        eta = duration(elapsed * (total - done) / done) if done else "?"
        pct = 100 * done / total if total else 100.0
        line = f"{self.label} {pct:.0f}% ({done}/{total}), {duration(elapsed)}, ETA {eta}"
        if self.tty:
            end = "\n" if done >= total else ""
            print(f"\r\033[K{line}", end=end, file=self.stream, flush=True)
            return
        tenth = int(10 * done / total) if total else 10
        if tenth > self.last_tenth:
            self.last_tenth = tenth
            print(line, file=self.stream, flush=True)


def sweep_source(
    sweep: str | None, runs: Path | None, command: str
) -> tuple[Path, SweepConfig | None, list[str]]:
    """The runs table of `scaling COMMAND SWEEP` (results/<sweep>/runs.parquet, with the sweep's
    config when one of that name exists) or of `--runs FILE` (no config); notes say what is missing."""
    if (sweep is None) == (runs is None):
        raise UserError(
            f"name a sweep (scaling {command} SWEEP) or a runs table (scaling {command} --runs FILE)"
        )
    if runs is not None:
        return runs, None, []
    assert sweep is not None
    path = paths.sweep_dir(sweep) / "runs.parquet"
    try:
        return path, load_sweep(sweep), []
    except UserError as e:  # e.g. a -m sweep named tiny-lr=0.001: its runs exist, its config has no file
        return path, None, [f"no sweep config for {sweep} ({e}): shapes, steps and GPU-hours left out"]


def fit_table(
    request: FitRequest, progress: Callable[[int, int], None] | None = None
) -> tuple[FitReport, list[str]]:
    """Reads and fits the runs table; returns the report and the warnings of reading it."""
    data, warnings = load_runs(
        request.runs, flops=request.flops, x=request.x, arms=list(request.arms or []) or None
    )
    return fit_runs(data, request.options(), progress=progress), warnings


def fit_sweep(
    request: FitRequest,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FitOutcome:
    """Fits the table and writes fits.json, fits.parquet and the cache into request.out; on
    unchanged inputs reprints the last fit. `say` gets the summary, `warn` each warning (default:
    stderr), `progress` the bootstrap's progress (default: a ProgressLine on stderr)."""
    if request.out is None:
        raise UserError("fit_sweep needs an output folder")
    warn = warn or (lambda w: print(f"scaling fit: warning: {w}", file=sys.stderr))
    out = request.out
    digest = _input_digest(request)
    cached = _cached(out, digest) if not request.force else None
    if cached is not None:
        for w in cached["warnings"]:
            warn(w)
        say(cached["summary"])
        say(f"\nunchanged runs and options: kept {out / 'fits.json'} (--force refits)")
        return FitOutcome(cached["summary"], cached["warnings"], reused=True)
    report, warnings = fit_table(
        request, progress if progress is not None else (ProgressLine("bootstrap") if request.n_boot else None)
    )
    # both files are serialized before either is written: a failure leaves no partial output
    fits_json = json.dumps(to_json(report), indent=1, allow_nan=False) + "\n"
    fits_parquet = parquet_bytes(to_table(report))
    all_warnings = warnings + report.warnings
    for w in all_warnings:
        warn(w)
    text = summary(report)
    say(text)
    atomic.write_text(out / "fits.json", fits_json)
    atomic.write_bytes(out / "fits.parquet", fits_parquet)
    outputs = {"fits.json": _sha256(fits_json.encode()), "fits.parquet": _sha256(fits_parquet)}
    atomic.write_json(
        out / CACHE_FILE, {"digest": digest, "outputs": outputs, "warnings": all_warnings, "summary": text}
    )
    say(f"\nwrote {out / 'fits.json'} and {out / 'fits.parquet'}")
    return FitOutcome(text, all_warnings, [out / "fits.json", out / "fits.parquet"], report)


def _input_digest(request: FitRequest) -> str | None:
    """Everything the fit depends on: the table's bytes, the options and the fitting code."""
    try:
        table = request.runs.read_bytes()
    except OSError:
        return None  # load_runs reports the problem
    h = hashlib.sha256(table)
    arms = ",".join(request.arms) if request.arms is not None else None
    options = [
        request.flops,
        request.x,
        request.n_boot,
        request.seed,
        request.candidate,
        request.baseline,
        arms,
    ]
    h.update(json.dumps(options).encode())
    for source in sorted(Path(analysis.__file__).parent.glob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()


def _cached(out: Path, digest: str | None) -> dict | None:
    """The cache of the last fit if its inputs were these and its outputs are still the files it
    wrote (a damaged or edited fits.json is fitted again, not kept)."""
    if digest is None:
        return None
    try:
        cache = json.loads((out / CACHE_FILE).read_text())
        if not isinstance(cache, dict) or cache.get("digest") != digest:
            return None
        outputs = cache.get("outputs")
        if not isinstance(outputs, dict) or set(outputs) != {"fits.json", "fits.parquet"}:
            return None
        if any(_sha256((out / name).read_bytes()) != sha for name, sha in outputs.items()):
            return None
    except (OSError, json.JSONDecodeError):
        return None
    return cache


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
