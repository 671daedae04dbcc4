"""The figures of a sweep and its report.md, and one run's curves, as functions.

    written, notes = plot_fits(fits_path, out_dir, runs=..., curves=..., report=...)
    written, notes = plot_run(run_dir, out_dir)

`plot_fits` draws the figures of fits.json (analysis/plots.py) with the runs' standard errors from
their runs table, the training curves of curves.parquet when there is one (analysis/curve_plots.py),
and writes report.md (analysis/sweep_report.py) embedding what it drew. `plot_run` reads a run
folder directly, so it shows a run still training.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.curve_plots import CURVES_FIGURE, cells_figure, run_figure
from analysis.plots import STYLE, plot_all, plt, remove_stale, save
from analysis.report import load_fits
from analysis.sweep_report import report_markdown, write_report
from scaling.collect import read_curves, run_curves
from scaling.errors import UserError


def run_stderr(runs_path: Path | None) -> dict[str, float]:
    """run_key -> val_loss_stderr of a runs table; empty when there is none to read (the figures
    are then drawn without error bars)."""
    if runs_path is None or not runs_path.is_file():
        return {}
    try:
        table = pq.read_table(runs_path, columns=["run_key", "val_loss_stderr"])
    except (pa.ArrowInvalid, KeyError, OSError):
        return {}
    d = table.to_pydict()
    return {k: e for k, e in zip(d["run_key"], d["val_loss_stderr"]) if k is not None and e is not None}


def plot_fits(
    fits_path: Path,
    out_dir: Path,
    *,
    runs: Path | None = None,
    curves: Path | None = None,
    keep: set[str] | None = None,
    report: Path | None = None,
    title: str | None = None,
    share_y: bool = True,
) -> tuple[list[Path], list[str]]:
    """The figures of a fit into out_dir, the curves figure when `curves` exists (`keep`: the run
    keys to draw), report.md at `report` (None: none); returns the files written and the notes."""
    fits = load_fits(fits_path)
    if runs is None and fits.get("source"):
        runs = Path(fits["source"])  # the runs table the fit read, when it is still there
    written, notes = plot_all(fits, out_dir, run_stderr(runs), share_y)
    if curves is not None and curves.is_file():
        try:
            table = read_curves(curves)
        except UserError as e:
            notes.append(f"curves: {e}")
        else:
            with plt.rc_context(STYLE):  # saved inside: the style sets the resolution
                fig = cells_figure(table, notes, fits.get("flops"), keep)
                if fig is not None:
                    written += save(fig, out_dir, CURVES_FIGURE)
                else:
                    remove_stale(out_dir, CURVES_FIGURE)
    if report is not None:
        pngs = [(p.stem, os.path.relpath(p, report.parent)) for p in written if p.suffix == ".png"]
        text = report_markdown(
            fits, title or f"Scaling-law report of {fits.get('source') or fits_path}", pngs, notes
        )
        written.append(write_report(report, text))
    return written, notes


def plot_run(run_dir: Path, out_dir: Path) -> tuple[list[Path], list[str]]:
    """One run's curves as out_dir/<run_key>.png and .pdf, read from its folder."""
    if not (run_dir / "spec.yaml").is_file():
        raise UserError(f"{run_dir} is not a run folder (no spec.yaml): give a run key of the sweep")
    notes: list[str] = []
    with plt.rc_context(STYLE):
        fig = run_figure(run_curves(run_dir), run_dir.name, notes)
        return ([] if fig is None else save(fig, out_dir, run_dir.name)), notes
