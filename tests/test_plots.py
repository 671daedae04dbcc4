"""Figures from fits.json: all four as PNG and PDF, and graceful degradation on thin sweeps."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.fit import FitOptions, fit_runs
from analysis.plots import (
    FIGURES,
    STYLE,
    frontiers_figure,
    isoflop_figure,
    multiplier_figure,
    plot_all,
    residuals_figure,
)
from analysis.report import to_json
from analysis.synthetic import isoflop_runs, to_table
from analysis.table import load_runs
from scaling.cli import main


def _fits(tmp_path, *parts, n_boot=8) -> dict:
    pq.write_table(to_table(*parts), tmp_path / "runs.parquet")
    data, _ = load_runs(tmp_path / "runs.parquet")
    # through JSON text, as `scaling plot` reads it
    return json.loads(json.dumps(to_json(fit_runs(data, FitOptions(n_boot=n_boot)))))


def _check_files(written, out, figures=FIGURES):
    assert sorted(p.name for p in written) == sorted(f"{f}.{e}" for f in figures for e in ("png", "pdf"))
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
    budget: no multiplier (no figure, and an earlier plot's multiplier.png is removed), no frontier
    and no residual panel for the first arm; every other figure is still drawn."""
    one = isoflop_runs(arm="duo", budgets=(1e19,), sizes_per_budget=4)
    two = isoflop_runs(arm="ar", budgets=(1e19, 1e20), sizes_per_budget=5, noise=0.002)
    edge = isoflop_runs(arm="ar", budgets=(3e19,), sizes_per_budget=7, span=8)
    keep = edge["params_non_embedding"] > 1.2 * np.median(edge["params_non_embedding"])
    edge = {k: v[keep] for k, v in edge.items()}  # 3 sizes above the optimum: vertex outside
    fits = _fits(tmp_path, one, two, edge)
    assert fits["multiplier"] is None and fits["arms"]["duo"]["parametric"] is None
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "multiplier.png").write_bytes(b"an earlier plot's")
    written, notes = plot_all(fits, tmp_path / "plots")
    parametric = [a for a, f in fits["arms"].items() if f["parametric"] is not None]
    _check_files(
        written, tmp_path / "plots", ("isoflop", "frontiers") + (("residuals",) if parametric else ())
    )
    assert not (tmp_path / "plots" / "multiplier.png").exists()
    text = "\n".join(notes)
    assert "multiplier: not fitted" in text and "residuals duo: no parametric fit" in text
    assert "multiplier: removed multiplier.png of an earlier plot" in text
    with plt.rc_context(STYLE):
        res = residuals_figure(fits, [])
    if parametric:  # a panel per arm with a fit, none for the others
        panels = [ax.get_title().split(":")[0] for ax in res.axes if ax.get_visible() and ax.get_title()]
        assert panels == parametric
        plt.close(res)
    else:
        assert res is None
    assert "frontiers duo: fewer than 2 valid budgets" in text
    assert "isoflop ar: 3e19: vertex-outside" in text


def _extrapolated(fits: dict) -> dict:
    """What real tiny sweeps produce: a flagged cell whose vertex is extrapolated to N* = 1e-30 with
    absurd bootstrap intervals, a valid cell whose N* interval spans 28 decades, and a multiplier
    whose bootstrap band reaches 1e12."""
    cells = fits["arms"]["mdlm-ce"]["cells"]
    cells[0].update(
        flags=["vertex-outside"],
        valid=False,
        n_star=1e-30,
        d_star=1e40,
        l_star=0.3,
        ci={"n_star": [1e-35, 1e20], "d_star": [1e5, 1e45], "l_star": [-3.0, 5.0]},
    )
    cells[1]["ci"]["n_star"] = [1e-8, 1e20]
    m = fits["multiplier"]
    m["ci"] = [1e-9, 1e9]
    m["curve"]["low"] = [-1.0] * len(m["curve"]["low"])
    m["curve"]["high"] = [1e12] * len(m["curve"]["high"])
    return fits


def _overlapping_tick_labels(fig) -> list[str]:
    """Pairs of drawn tick labels (major and minor) whose boxes overlap along their axis."""
    fig.canvas.draw()
    found = []
    for ax in fig.axes:
        for axis, horizontal in ((ax.xaxis, True), (ax.yaxis, False)):
            lo, hi = sorted(axis.get_view_interval())
            ticks = axis.get_major_ticks(len(axis.get_majorticklocs())) + axis.get_minor_ticks(
                len(axis.get_minorticklocs())
            )
            labels = [t.label1 for t in ticks if lo <= t.get_loc() <= hi]
            boxes = sorted(
                (t.get_window_extent() for t in labels if t.get_visible() and t.get_text()),
                key=lambda b: b.x0 if horizontal else b.y0,
            )
            for a, b in zip(boxes, boxes[1:]):
                if (a.x1 > b.x0) if horizontal else (a.y1 > b.y0):
                    found.append(f"{ax.get_title() or ax.get_ylabel()}: {a} / {b}")
    return found


def test_extrapolated_vertex_and_wild_intervals_keep_axes_on_the_data(tmp_path):
    # sizes spanning about a decade: where default log ticks label 2, 3, 4, 6 x 10^k on top of each other
    kw = {"budgets": (1e18, 3e18, 1e19), "sizes_per_budget": 5, "noise": 0.012}
    fits = _extrapolated(
        _fits(
            tmp_path,
            isoflop_runs(arm="mdlm-elbo", seed=3, **kw),
            isoflop_runs(arm="mdlm-ce", seed=4, compute_scale=0.5, **kw),
        )
    )
    runs = fits["arms"]["mdlm-ce"]["runs"]
    n, loss = np.array(runs["params_non_embedding"]), np.array(runs["val_loss"])
    notes: list[str] = []
    with plt.rc_context(STYLE):
        iso = isoflop_figure(fits, notes)
        front = frontiers_figure(fits, notes)
        res = residuals_figure(fits, notes)
        mult = multiplier_figure(fits, notes)
    ax = iso.axes[list(fits["arms"]).index("mdlm-ce")]
    lo, hi = ax.get_xlim()
    assert n.min() / 2 < lo < n.min() and n.max() < hi < 2 * n.max()
    lo, hi = ax.get_ylim()
    loss = np.array([v for a in fits["arms"].values() for v in a["runs"]["val_loss"]])  # one y-range
    span = loss.max() - loss.min()
    assert loss.min() - 0.2 * span < lo < loss.min() and loss.max() < hi < loss.max() + 0.2 * span
    assert "isoflop mdlm-ce: 1e18: vertex-outside, vertex N* = 1e-30 off the axes" in notes

    # N* panel: the valid estimates set the axis; intervals and the legend stretch it at most ~30x
    valid = [c["n_star"] for a in fits["arms"].values() for c in a["cells"] if c["valid"]]
    lo, hi = front.axes[0].get_ylim()
    assert min(valid) / 30 < lo < min(valid) and max(valid) < hi < 30 * max(valid)
    assert "frontiers mdlm-ce: flagged n_star beyond the axes, not drawn: 1e18 (1e-30)" in notes
    lo, hi = front.axes[2].get_ylim()  # L* = 0.3 and an interval down to -3 are left out
    assert 1 < lo < min(c["l_star"] for a in fits["arms"].values() for c in a["cells"] if c["valid"])

    value = [v for v in fits["multiplier"]["curve"]["value"] if v is not None]
    lo, hi = mult.axes[0].get_ylim()
    assert min(value) / 30 < lo < min(value) and max(value) < hi < 30 * max(value)

    for fig in (iso, front, res, mult):
        assert _overlapping_tick_labels(fig) == []
        plt.close(fig)


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


@pytest.fixture(scope="module")
def two_arms(tmp_path_factory) -> str:
    """fits.json text of two arms over three budgets (one fit for the tests below: each loads its own copy)."""
    kw = {"budgets": (1e18, 3e18, 1e19), "sizes_per_budget": 6, "noise": 0.004}
    return json.dumps(
        _fits(
            tmp_path_factory.mktemp("two_arms"),
            isoflop_runs(arm="mdlm-elbo", seed=5, **kw),
            isoflop_runs(arm="mdlm-ce", seed=6, compute_scale=0.3, **kw),
        )
    )


def _labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_paper_conventions_shared_y_error_bars_powers_of_ten_and_the_fit_named(two_arms):
    fits = json.loads(two_arms)
    losses = [v for a in fits["arms"].values() for v in a["runs"]["val_loss"]]
    stderr = {k: 0.01 for a in fits["arms"].values() for k in a["runs"]["run_key"]}
    with plt.rc_context(STYLE):
        iso = isoflop_figure(fits, [], stderr)
        own = isoflop_figure(fits, [], stderr, share_y=False)
        res = residuals_figure(fits, [])
        front = frontiers_figure(fits, [])
        iso.canvas.draw()
        front.canvas.draw()
    panels = [ax for ax in iso.axes if ax.get_title() in fits["arms"]]
    assert len(panels) == 2 and panels[0].get_ylim() == panels[1].get_ylim()  # one y-range: arms compared
    lo, hi = panels[0].get_ylim()
    assert lo < min(losses) and max(losses) < hi and hi - lo < 1.3 * (max(losses) - min(losses))
    own_panels = [ax for ax in own.axes if ax.get_title() in fits["arms"]]
    assert own_panels[0].get_ylim() != own_panels[1].get_ylim()
    # error bars: one vertical segment per run, as long as two standard errors
    segments = [s for c in panels[0].collections for s in getattr(c, "get_segments", lambda: [])()]
    assert len(segments) == len(fits["arms"]["mdlm-elbo"]["runs"]["val_loss"])
    assert all(abs(abs(s[1][1] - s[0][1]) - 0.02) < 1e-9 for s in segments)
    # log axes in powers of ten, never 1e19 or 6.75e3
    for ax in [*panels, *front.axes[:2]]:
        for axis in (ax.xaxis,) if ax in panels else (ax.xaxis, ax.yaxis):
            labels = _labels(axis)
            assert labels and all("10^{" in t for t in labels), labels
            assert not any("e" in t.replace("\\times", "") for t in labels), labels
    # the residual plot names its fit, the figure and each panel
    assert "Approach 3" in res._suptitle.get_text() and "E + A" in res._suptitle.get_text()
    titles = [ax.get_title() for ax in res.axes if ax.get_visible() and ax.get_title()]
    assert len(titles) == 2 and all("\\alpha" in t and "\\beta" in t for t in titles)
    for fig in (iso, own, res, front):
        assert _overlapping_tick_labels(fig) == []
        plt.close(fig)


def test_one_budget_frontier_points_sit_at_that_compute(tmp_path):
    fits = _fits(
        tmp_path,
        *(
            isoflop_runs(arm=a, budgets=(1e11,), sizes_per_budget=5, noise=0.01, seed=i)
            for i, a in enumerate(["ar", "duo", "eso"])
        ),
    )
    with plt.rc_context(STYLE):
        front = frontiers_figure(fits, [])
    ax = front.axes[0]
    xs = [x for line in ax.get_lines() if line.get_marker() == "o" for x in line.get_xdata()]
    assert len(xs) == 3 and all(abs(x / 1e11 - 1) < 0.05 for x in xs)  # not spread to 5e10 .. 2e11
    lo, hi = ax.get_xlim()
    assert hi / lo >= 10 and lo < 1e11 < hi  # a readable compute axis around the budget
    plt.close(front)


def test_wild_intervals_are_clipped_and_marked_and_laws_sit_below_the_panels(two_arms):
    fits = _extrapolated(json.loads(two_arms))
    notes: list[str] = []
    with plt.rc_context(STYLE):
        front = frontiers_figure(fits, notes)
        front.canvas.draw()
    ax = front.axes[0]
    lo, hi = ax.get_ylim()
    caps = [line for line in ax.get_lines() if line.get_marker() in ("^", "v")]
    assert caps, "the interval 1e-8 .. 1e20 is clipped and marked"
    for line in caps:
        y = line.get_ydata()[0]
        assert y == (hi if line.get_marker() == "^" else lo)
    for line in ax.collections:  # every error bar stays inside the panel
        for seg in getattr(line, "get_segments", lambda: [])():
            assert all(lo * 0.999 <= y <= hi * 1.001 for _, y in seg)
    l_ax = front.axes[2]  # no headroom for a legend inside: the top is that of the points and laws
    drawn = [y for line in l_ax.get_lines() if line.get_marker() in ("o", "None") for y in line.get_ydata()]
    assert l_ax.get_ylim()[1] < 1.12 * max(drawn)  # bands reach 10% beyond; the legend took half
    for a in front.axes:
        legend = a.get_legend()
        if legend is not None:
            assert legend.get_window_extent().y1 <= a.get_window_extent().y0 + 1  # below the panel
    plt.close(front)
