"""Figures from fits.json: all four as PNG and PDF, and graceful degradation on thin sweeps."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.fit import FitOptions, fit_runs
from analysis.plots import FIGURES, plot_all
from analysis.report import to_json
from analysis.synthetic import isoflop_runs, to_table
from analysis.table import load_runs
from scaling.cli import main


def _fits(tmp_path, *parts, n_boot=8) -> dict:
    pq.write_table(to_table(*parts), tmp_path / "runs.parquet")
    data, _ = load_runs(tmp_path / "runs.parquet")
    # through JSON text, as `scaling plot` reads it
    return json.loads(json.dumps(to_json(fit_runs(data, FitOptions(n_boot=n_boot)))))


def _check_files(written, out):
    assert sorted(p.name for p in written) == sorted(f"{f}.{e}" for f in FIGURES for e in ("png", "pdf"))
    for p in written:
        if p.suffix == ".png":
            image = mpimg.imread(p)
            assert image.shape[0] > 300 and image.shape[1] > 600
            assert image[..., :3].std() > 0.01  # not blank (an empty panel with a note is ~0.04)
        else:
            assert p.read_bytes()[:5] == b"%PDF-"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_full_fit_draws_every_figure(tmp_path):
    fits = _fits(
        tmp_path,
        isoflop_runs(arm="mdlm-elbo", noise=0.005, seed=1, sizes_per_budget=6),
        isoflop_runs(arm="mdlm-ce", noise=0.005, seed=2, sizes_per_budget=6, compute_scale=1.1),
    )
    written, notes = plot_all(fits, tmp_path / "plots")
    _check_files(written, tmp_path / "plots")
    assert notes == []


def test_thin_sweep_degrades_with_notes(tmp_path):
    """One arm with a single valid budget and too few runs for Approach 3, another with a flagged
    budget: no multiplier, no frontier for the first arm; every figure is still drawn."""
    one = isoflop_runs(arm="duo", budgets=(1e19,), sizes_per_budget=4)
    two = isoflop_runs(arm="ar", budgets=(1e19, 1e20), sizes_per_budget=5, noise=0.002)
    edge = isoflop_runs(arm="ar", budgets=(3e19,), sizes_per_budget=7, span=8)
    keep = edge["params_non_embedding"] > 1.2 * np.median(edge["params_non_embedding"])
    edge = {k: v[keep] for k, v in edge.items()}  # 3 sizes above the optimum: vertex outside
    fits = _fits(tmp_path, one, two, edge)
    assert fits["multiplier"] is None and fits["arms"]["duo"]["parametric"] is None
    written, notes = plot_all(fits, tmp_path / "plots")
    _check_files(written, tmp_path / "plots")
    text = "\n".join(notes)
    assert "multiplier: not fitted" in text and "residuals duo: no parametric fit" in text
    assert "frontiers duo: fewer than 2 valid budgets" in text
    assert "isoflop ar: 3e19: vertex-outside" in text


@pytest.mark.parametrize(
    "content,message",
    [(None, "does not exist"), ("{", "not valid JSON"), ('{"schema_version": 99}', "schema version")],
)
def test_plot_cli_bad_fits(tmp_path, capsys, content, message):
    path = tmp_path / "fits.json"
    if content is not None:
        path.write_text(content)
    assert main(["plot", "--fits", str(path), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "p").exists()
