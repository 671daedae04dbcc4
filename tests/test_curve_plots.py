"""The training-curve figures (analysis/curve_plots.py), `scaling plot --run`, and the sweep's
report.md written by `scaling plot SWEEP`."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.curve_plots import cells_figure, envelope, run_figure
from analysis.plots import STYLE
from analysis.synthetic import run_specs, write_run_folder
from scaling import store
from scaling.cli import main
from scaling.collect import SCHEMA_METADATA_KEY, collect, run_curves


def test_envelope_is_the_lowest_loss_reached_at_each_compute():
    a = (np.array([1e2, 1e4]), np.array([3.0, 1.0]))  # falls across the whole range
    b = (np.array([1e2, 1e3]), np.array([2.0, 1.5]))  # better early, ends at 1e3
    c, loss = envelope([a, b])
    assert c[0] == pytest.approx(1e2) and c[-1] == pytest.approx(1e4)
    la = np.interp(np.log(c), np.log(a[0]), a[1])
    lb = np.where(c <= 1e3, np.interp(np.log(c), np.log(b[0]), b[1]), np.inf)
    np.testing.assert_allclose(loss, np.minimum(la, lb))
    assert envelope([]) == (pytest.approx([]), pytest.approx([]))


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """A collected sweep folder of 2 arms x 2 budgets x 4 sizes (3 validations per run)."""
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path))
    root = tmp_path / "demo"
    store.init_layout(root)
    specs = run_specs(arms=("mdlm-ce", "mdlm-elbo"), budgets=(1e12, 3e12), widths=(16, 24, 32, 48))
    for s in specs:
        write_run_folder(root / "runs", s, "done")
    store.write_plan_manifest(root, [s.run_key for s in specs])
    assert main(["collect", "demo"]) == 0
    return root, specs


def test_cells_figure_one_panel_per_arm_and_budget_one_y_range(sweep):
    root, specs = sweep
    curves = pq.read_table(root / "curves.parquet")
    with plt.rc_context(STYLE):
        fig = cells_figure(curves, [], "attention")
    panels = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(panels) == 4
    assert len({ax.get_ylim() for ax in panels}) == 1
    for ax in panels:
        runs = [line for line in ax.get_lines() if line.get_linewidth() < 2 and line.get_linestyle() == "-"]
        grey = [line for line in ax.get_lines() if line.get_linewidth() >= 2]
        assert len(runs) == 4 and len(grey) == 1  # a curve per size and their envelope
        env_x, env_y = grey[0].get_data()
        for line in runs:  # the envelope is never above a run where the run has a point
            x, y = line.get_data()
            assert (np.interp(np.log(x), np.log(env_x), env_y) <= y + 1e-9).all()
    keep = {specs[0].run_key}
    with plt.rc_context(STYLE):
        one = cells_figure(curves, [], "attention", keep=keep)
    drawn = [line for ax in one.axes if ax.get_xscale() == "log" for line in ax.get_lines()]
    assert len([line for line in drawn if line.get_linestyle() == "-"]) == 2  # the run and its envelope
    notes: list[str] = []
    assert cells_figure(curves, notes, keep=set()) is None and "no validation points" in notes[0]
    plt.close("all")


def test_run_figure_of_a_trained_run(tmp_path, byte_shards):
    from conftest import tiny_spec

    from trainer.loop import train

    spec = tiny_spec(byte_shards, arm="ar", steps=8)
    run = tmp_path / spec.run_key
    train(spec, run, log=lambda m: None)
    curves = run_curves(run)
    with plt.rc_context(STYLE):
        fig = run_figure(curves, spec.run_key, [])
    loss_ax, lr_ax = fig.axes[0], fig.axes[1]
    train_line = loss_ax.get_lines()[0]
    assert list(train_line.get_xdata()) == [r["step"] for r in curves.to_pylist() if r["kind"] == "train"]
    assert list(lr_ax.get_lines()[0].get_ydata()) == [
        r["lr"] for r in curves.to_pylist() if r["kind"] == "train"
    ]
    assert spec.run_key in fig._suptitle.get_text()
    notes: list[str] = []
    assert run_figure(curves, "nope", notes) is None and "no logged points" in notes[0]
    plt.close("all")


def test_plot_sweep_writes_figures_and_a_report(sweep, capsys):
    root, specs = sweep
    assert main(["fit", "demo", "--bootstrap", "0"]) == 0
    capsys.readouterr()
    assert main(["plot", "demo"]) == 0
    out = capsys.readouterr().out.split()
    report = root / "report.md"
    assert str(report) in out and (root / "plots" / "curves.png").is_file()
    text = report.read_text()
    links = re.findall(r"!\[(\w+)\]\(([^)]+)\)", text)
    drawn = {p.stem for p in (root / "plots").glob("*.png")}
    assert {name for name, _ in links} == drawn and {"isoflop", "curves"} <= drawn  # every figure drawn
    for _, rel in links:
        assert (root / rel).is_file(), rel
    for arm in ("mdlm-ce", "mdlm-elbo"):  # a row per cell
        assert len(re.findall(rf"^\| {arm} \| (1e12|3e12) \|", text, flags=re.M)) == 2
    assert "## Compute multiplier" in text and "## Scaling laws" in text


def test_plot_skips_curves_of_the_first_schema_with_a_note(sweep, capsys):
    root, _ = sweep
    assert main(["fit", "demo", "--bootstrap", "0"]) == 0
    old = pq.read_table(root / "curves.parquet").drop_columns(["kind"])
    pq.write_table(old.replace_schema_metadata({SCHEMA_METADATA_KEY: b"1"}), root / "curves.parquet")
    capsys.readouterr()
    assert main(["plot", "demo"]) == 0
    captured = capsys.readouterr()
    assert "rerun `scaling collect`" in captured.err and (root / "plots" / "isoflop.png").is_file()
    assert not (root / "plots" / "curves.png").exists()


def test_plot_run_by_key_prefix(sweep, capsys):
    root, specs = sweep
    key = specs[0].run_key
    assert main(["plot", "demo", "--run", key[: key.rindex("-")]]) == 0
    assert (root / "plots" / "runs" / f"{key}.png").is_file()
    capsys.readouterr()
    assert main(["plot", "demo", "--run", "mdlm"]) == 2
    assert "runs of sweep demo match 'mdlm'" in capsys.readouterr().err
    assert main(["plot", "demo", "--run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no run of sweep demo matches 'nope'" in err and err.count("\n") == 1
    assert main(["plot", "--run", str(root / "runs" / key), "--out", str(root / "elsewhere")]) == 0
    assert (root / "elsewhere" / f"{key}.pdf").is_file()


def test_collected_curves_carry_every_run(sweep):
    root, specs = sweep
    curves = collect(root / "runs", "demo").curves
    assert set(curves.column("run_key").to_pylist()) == {s.run_key for s in specs}
