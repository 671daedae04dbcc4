"""`scaling fit`: both input forms, outputs, summary, and bad input (exit 2, no partial output)."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.synthetic import isoflop_runs, run_specs, to_table, write_run_folder
from scaling.cli import main


@pytest.fixture
def runs_file(tmp_path):
    table = to_table(
        isoflop_runs(arm="mdlm-elbo", noise=0.005, seed=1, sizes_per_budget=6),
        isoflop_runs(arm="mdlm-ce", noise=0.005, seed=2, sizes_per_budget=6, compute_scale=1.15),
    )
    path = tmp_path / "runs.parquet"
    pq.write_table(table, path)
    return path


def _fit(capsys, *argv):
    code = main(["fit", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_form_writes_json_parquet_and_summary(runs_file, tmp_path, capsys):
    out = tmp_path / "fits"
    code, stdout, _ = _fit(capsys, "--runs", runs_file, "--out", out, "--bootstrap", 20, "--seed", 1)
    assert code == 0
    assert re.search(
        r"mdlm-ce is \d+\.\d% \[-?\d+\.\d, \d+\.\d\] (more|less) FLOPs-efficient than mdlm-elbo "
        r"at val loss \d\.\d\d",
        stdout,
    ), stdout
    assert "N*(C) = " in stdout and "Approach 3: E " in stdout
    fits = json.loads((out / "fits.json").read_text())
    assert fits["schema_version"] == 1 and fits["flops"] == "budget" and fits["bootstrap"]["n"] == 20
    assert set(fits["arms"]) == {"mdlm-ce", "mdlm-elbo"}
    cell = fits["arms"]["mdlm-ce"]["cells"][0]
    assert cell["valid"] and cell["ci"]["n_star"][0] <= cell["n_star"] <= cell["ci"]["n_star"][1]
    assert fits["multiplier"]["sentence"] in stdout
    tidy = pq.read_table(out / "fits.parquet").to_pandas()
    assert set(tidy["section"]) == {"isoflop", "power_law", "frontier", "parametric", "multiplier"}
    alpha = tidy[(tidy.section == "parametric") & (tidy.arm == "mdlm-ce") & (tidy.quantity == "alpha")]
    assert len(alpha) == 1 and alpha.ci_low.iloc[0] <= alpha.value.iloc[0] <= alpha.ci_high.iloc[0]
    # same seed, same numbers
    first = (out / "fits.json").read_text()
    assert _fit(capsys, "--runs", runs_file, "--out", out, "--bootstrap", 20, "--seed", 1)[0] == 0
    assert (out / "fits.json").read_text() == first


def _bad_table(tmp_path, **changes) -> str:
    r = isoflop_runs(arm="mdlm-ce", sizes_per_budget=4)
    cols = {k: v.tolist() for k, v in r.items()}
    for k, v in changes.items():
        if v is None:
            del cols[k]
        else:
            cols[k] = v(cols[k])
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(cols), path)
    return path


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"tokens": None, "arm": None}, "lacks column(s) arm, tokens"),
        ({"val_loss": lambda v: [float("nan")] + v[1:]}, "non-positive or missing val_loss"),
        ({"val_loss": lambda v: v[:-1] + [-1.0]}, "non-positive or missing val_loss"),
        ({"params_non_embedding": lambda v: [0] + v[1:]}, "non-positive or missing params_non_embedding"),
    ],
)
def test_bad_tables_fail_without_output(tmp_path, capsys, changes, message):
    out = tmp_path / "out"
    code, _, err = _fit(capsys, "--runs", _bad_table(tmp_path, **changes), "--out", out, "--bootstrap", 5)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--candidate", "eso"], "arm 'eso' is not in the data"),
        (["--arms", "mdlm-ce,duo"], "arm(s) duo not in the data"),
        (["--arms", "mdlm-ce", "--baseline", "mdlm-elbo"], "not in --arms"),
        (["--flops", "attention"], "needs column flops_attention"),
        (["--bootstrap", "-1"], "--bootstrap -1"),
        (["--candidate", "mdlm-ce", "--baseline", "mdlm-ce"], "two different arms"),
    ],
)
def test_bad_options(runs_file, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code, _, err = _fit(capsys, "--runs", runs_file, "--out", out, "--bootstrap", 5, *argv)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_missing_runs_and_form_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path))
    assert _fit(capsys, "nosweep")[0] == 2
    assert _fit(capsys, "--runs", tmp_path / "x.parquet")[0] == 2  # no --out
    (tmp_path / "junk.parquet").write_text("not parquet")
    code, _, err = _fit(capsys, "--runs", tmp_path / "junk.parquet", "--out", tmp_path / "o")
    assert code == 2 and "not a readable parquet" in err


def test_few_sizes_and_empty_arms_warn(tmp_path, capsys):
    """A budget with 2 sizes is skipped with a warning; an arm with no budget left is a warning
    unless named, and fitting goes on with the other arms."""
    good = isoflop_runs(arm="mdlm-ce", noise=0.002, seed=3, sizes_per_budget=5)
    thin = isoflop_runs(arm="duo", budgets=(1e19, 1e20), sizes_per_budget=2)
    cols = {k: np.concatenate([good[k], thin[k]]) for k in good}
    keep = ~(
        (cols["budget_flops"] == 1e20)
        & (cols["arm"] == "mdlm-ce")
        & (cols["params_non_embedding"] > np.median(cols["params_non_embedding"]))
    )
    cols = {k: v[keep].tolist() for k, v in cols.items()}
    pq.write_table(pa.table(cols), tmp_path / "r.parquet")
    code, stdout, err = _fit(
        capsys, "--runs", tmp_path / "r.parquet", "--out", tmp_path / "o", "--bootstrap", 5
    )
    assert code == 0, err
    assert "mdlm-ce 1e20: fewer than 3 sizes, budget skipped" in err
    assert "arm duo has no budget with at least 3 sizes; no IsoFLOP fit" in err
    assert "no compute multiplier" in err
    fits = json.loads((tmp_path / "o" / "fits.json").read_text())
    assert fits["arms"]["mdlm-ce"]["skipped_budgets"] == [1e20] and fits["multiplier"] is None
    code, _, err = _fit(
        capsys, "--runs", tmp_path / "r.parquet", "--out", tmp_path / "o2", "--arms", "mdlm-ce,duo"
    )
    assert code == 2 and "arm duo has no budget" in err and not (tmp_path / "o2").exists()
    thin_only = {k: v.tolist() for k, v in thin.items()}
    pq.write_table(pa.table(thin_only), tmp_path / "t.parquet")
    code, _, err = _fit(capsys, "--runs", tmp_path / "t.parquet", "--out", tmp_path / "o3")
    assert code == 2 and "nothing to fit" in err


def test_sweep_form_collect_fit_plot(tmp_path, monkeypatch, capsys):
    """Run folders -> collect -> fit SWEEP -> plot SWEEP, with the sweep's convention on the x axis."""
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path))
    runs = tmp_path / "demo" / "runs"
    specs = run_specs(arms=("mdlm-ce", "mdlm-elbo"), budgets=(1e12, 3e12, 1e13), widths=(16, 24, 32, 48, 64))
    for s in specs:
        write_run_folder(runs, s)
    write_run_folder(runs, run_specs(arms=("ar",), budgets=(1e12,), widths=(16,))[0], "running")
    assert main(["collect", "demo"]) == 0
    code, stdout, err = _fit(capsys, "demo", "--bootstrap", 10)
    assert code == 0, err
    assert "compute axis: flops_reference" in stdout and "left out: 1 running" in err
    fits = json.loads((tmp_path / "demo" / "fits" / "fits.json").read_text())
    assert fits["flops"] == "reference" and set(fits["arms"]) == {"mdlm-ce", "mdlm-elbo"}
    code, _, err = _fit(capsys, "demo", "--bootstrap", 0, "--flops", "6N", "--out", tmp_path / "six")
    assert code == 0
    assert json.loads((tmp_path / "six" / "fits.json").read_text())["x_column"] == "flops_6N"
    assert main(["plot", "demo"]) == 0
    names = sorted(p.name for p in (tmp_path / "demo" / "plots").iterdir())
    # no multiplier figure: both arms' vertices lie outside the sampled sizes at 3e12 and 1e13, so
    # neither has the 2 valid budgets of a loss frontier (and plot draws no empty figure)
    assert names == sorted(
        f"{f}.{e}" for f in ("curves", "frontiers", "isoflop", "residuals") for e in ("pdf", "png")
    )


def test_rerun_on_unchanged_inputs_reuses_the_fit(runs_file, tmp_path, capsys):
    out = tmp_path / "fits"
    args = ("--runs", runs_file, "--out", out, "--bootstrap", 20)
    code, first, _ = _fit(capsys, *args)
    assert code == 0 and "unchanged runs and options" not in first
    stamp = (out / "fits.json").stat().st_mtime_ns
    code, again, _ = _fit(capsys, *args)
    assert code == 0 and "unchanged runs and options" in again
    assert again.split("\nunchanged")[0] == first.split("\nwrote")[0]  # the same summary
    assert (out / "fits.json").stat().st_mtime_ns == stamp
    # new options, new data or --force: a real refit
    for changed in (("--force",), ("--seed", 7)):
        _, stdout, _ = _fit(capsys, *args, *changed)
        assert "unchanged runs and options" not in stdout and "\nwrote " in stdout
    table = pq.read_table(runs_file)
    pq.write_table(table.slice(1), runs_file)
    _, stdout, _ = _fit(capsys, *args)
    assert "unchanged runs and options" not in stdout
    # an output damaged or edited since is fitted again, not kept
    good = (out / "fits.json").read_text()
    for damaged in ("{garbage", '{"a": 1}'):
        (out / "fits.json").write_text(damaged)
        _, stdout, _ = _fit(capsys, *args)
        assert "unchanged runs and options" not in stdout and (out / "fits.json").read_text() == good


def test_summary_grid_names_the_side_of_an_outside_vertex(tmp_path, capsys):
    """Only the larger half of the sizes at 1e20: the vertex lies below them; that cell prints no
    vertex (an extrapolation) and the grid says which way the sizes should move."""
    runs = isoflop_runs(arm="mdlm-ce", noise=0.001, seed=4, sizes_per_budget=8)
    at_top = runs["budget_flops"] == runs["budget_flops"].max()
    median = np.median(runs["params_non_embedding"][at_top])
    keep = ~at_top | (runs["params_non_embedding"] > median)
    pq.write_table(pa.table({k: v[keep].tolist() for k, v in runs.items()}), tmp_path / "r.parquet")
    code, stdout, err = _fit(
        capsys, "--runs", tmp_path / "r.parquet", "--out", tmp_path / "o", "--bootstrap", 0
    )
    assert code == 0, err
    top = f"{runs['budget_flops'].max():.3g}".replace("+", "")
    row = next(line.split() for line in stdout.splitlines() if line.split()[:1] == [top])
    assert row[2:6] == ["-"] * 4 and row[-1] == "vertex-outside", stdout
    n_budgets = len(np.unique(runs["budget_flops"]))
    assert f"cells: {n_budgets - 1} of {n_budgets} convex with the vertex inside" in stdout
    grid = [line.split() for line in stdout.splitlines() if line.split()[:1] == ["mdlm-ce"]][-1]
    assert grid == ["mdlm-ce", *["ok"] * (n_budgets - 1), "vertex", "below", "sizes"], stdout
