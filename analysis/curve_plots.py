"""Figures of curves.parquet (scaling/collect.py): the training curves of a sweep and of one run.

- `cells_figure`: one panel per cell (arm x budget), the validation loss of every size against
  training FLOPs as the runs train: the IsoFLOP curves as they form. The lower envelope of the
  curves (at each compute, the best loss any size has reached) is the compute-optimal frontier of
  Chinchilla's Approach 1, drawn in grey. One y-range for the whole figure (arms compared), one
  colour per model size (N, log scale).
- `run_figure`: one run's curves against steps: training and validation loss (+-1 standard
  error), learning rate, gradient norm, throughput.

Same style and helpers as analysis/plots.py; an empty selection draws nothing (None) and says why.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from analysis.plots import (
    LOSS_LABEL,
    STDERR_NOTE,
    WIDTH,
    caption,
    log_ticks,
    loss_limits,
    plt,
    power_text,
)
from scaling.flops import CONVENTIONS

CURVES_FIGURE = "curves"
ENVELOPE_GREY = "0.45"
ENVELOPE_POINTS = 200  # compute grid of the envelope per cell


def flops_column(convention: str | None) -> str:
    """The compute axis: a convention's cumulative FLOPs (the fit's, when it names one)."""
    return f"flops_{convention if convention in CONVENTIONS else 'reference'}"


def _validation(curves: pa.Table, keep: set[str] | None) -> dict[str, np.ndarray]:
    d = curves.to_pydict()
    rows = [
        i
        for i, k in enumerate(d["kind"])
        if k == "val" and d["val_loss"][i] is not None and (keep is None or d["run_key"][i] in keep)
    ]
    return {c: np.array([d[c][i] for i in rows], dtype=object) for c in d}


def envelope(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The lower envelope of several loss curves (compute, loss) on a log-compute grid: at each
    compute, the lowest loss a run has reached there (each curve interpolated in ln C between its
    points, only within its own range)."""
    spans = [(c.min(), c.max()) for c, _ in runs if len(c)]
    if not spans:
        return np.array([]), np.array([])
    grid = np.geomspace(min(lo for lo, _ in spans), max(hi for _, hi in spans), ENVELOPE_POINTS)
    grid = np.unique(np.concatenate([grid, *(c for c, _ in runs)]))  # every run's points on the grid
    best = np.full(grid.shape, np.inf)
    for c, loss in runs:
        order = np.argsort(c)
        c, loss = c[order], loss[order]
        inside = (grid >= c[0]) & (grid <= c[-1])
        best[inside] = np.minimum(best[inside], np.interp(np.log(grid[inside]), np.log(c), loss))
    ok = np.isfinite(best)
    return grid[ok], best[ok]


def cells_figure(
    curves: pa.Table, notes: list[str], convention: str | None = None, keep: set[str] | None = None
):
    """See the module docstring; `keep`: the run keys to draw (the sweep's current plan)."""
    v = _validation(curves, keep)
    if len(v["run_key"]) == 0:
        notes.append("curves: no validation points in curves.parquet, no figure")
        return None
    x_col = flops_column(convention)
    arms = list(dict.fromkeys(sorted(set(v["arm"]), key=list(v["arm"]).index)))
    budgets = sorted(set(float(b) for b in v["budget_flops"]))
    n_all = np.array(v["params_non_embedding"], dtype=float)
    norm = LogNorm(n_all.min(), max(n_all.max(), n_all.min() * 1.01))
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        len(arms),
        len(budgets),
        figsize=(WIDTH, 1.75 * len(arms) + 0.4),
        squeeze=False,
        sharex="col",
        sharey=True,
        layout="constrained",
    )
    errors = False
    for r, arm in enumerate(arms):
        for c, budget in enumerate(budgets):
            ax = axes[r][c]
            cell = (v["arm"] == arm) & (v["budget_flops"].astype(float) == budget)
            runs = []
            for key in dict.fromkeys(v["run_key"][cell]):
                m = cell & (v["run_key"] == key)
                x = np.array(v[x_col][m], dtype=float)
                y = np.array(v["val_loss"][m], dtype=float)
                err = np.array([np.nan if e is None else e for e in v["val_loss_stderr"][m]], dtype=float)
                order = np.argsort(x)
                x, y, err = x[order], y[order], err[order]
                colour = cmap(norm(float(v["params_non_embedding"][m][0])))
                ax.plot(x, y, "-", color=colour, lw=0.9, zorder=3)
                if np.isfinite(err).any():
                    errors = True
                    ax.errorbar(
                        x, y, yerr=np.nan_to_num(err), fmt="o", color=colour, ms=2.2, elinewidth=0.5, zorder=3
                    )
                runs.append((x, y))
            if runs:
                gx, gy = envelope(runs)
                ax.plot(
                    gx, gy, "-", color=ENVELOPE_GREY, lw=3.0, alpha=0.45, zorder=2, solid_capstyle="round"
                )
            else:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", va="center", color="0.4")
            ax.set_xscale("log")
            if r == 0:
                ax.set_title(f"{power_text(budget)} FLOPs")
            if c == 0:
                ax.set_ylabel(f"{arm}\n{LOSS_LABEL}", fontsize=7)
    lims = loss_limits(np.array(v["val_loss"], dtype=float), pad=0.04)
    if lims is not None:
        axes[0][0].set_ylim(*lims)
    for ax in axes.flat:
        log_ticks(ax.xaxis)
    convention_name = x_col.removeprefix("flops_")
    fig.supxlabel(f"training compute so far (FLOPs, {convention_name} convention)", fontsize=8)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=axes, shrink=0.6, aspect=30, pad=0.01)
    bar.set_label("non-embedding parameters $N$", fontsize=7)
    bar.ax.tick_params(labelsize=6.5)
    handles = [
        Line2D([], [], color=ENVELOPE_GREY, lw=3.0, alpha=0.45, label="envelope (Approach 1)"),
        Line2D([], [], color=cmap(0.5), marker="o", ms=2.2, lw=0.9, label="one run's validation loss"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=2)
    if errors:
        caption(fig, [STDERR_NOTE])
    return fig


def run_figure(curves: pa.Table, run_key: str, notes: list[str]):
    """One run's curves (see the module docstring); None when curves.parquet has none of it."""
    d = curves.to_pydict()
    idx = [i for i, k in enumerate(d["run_key"]) if k == run_key]
    if not idx:
        notes.append(f"run {run_key}: no logged points yet, no figure")
        return None

    def series(kind: str, col: str):
        pts = [(d["step"][i], d[col][i]) for i in idx if d["kind"][i] == kind and d[col][i] is not None]
        pts = [(s, y) for s, y in pts if math.isfinite(y)]
        return np.array([s for s, _ in pts], dtype=float), np.array([y for _, y in pts], dtype=float)

    fig, axes = plt.subplots(2, 2, figsize=(WIDTH, 4.2), sharex=True, layout="constrained")
    (loss_ax, lr_ax), (norm_ax, speed_ax) = axes
    steps, train = series("train", "train_loss")
    loss_ax.plot(steps, train, "-", color="0.55", lw=0.8, label="training loss")
    vs, val = series("val", "val_loss")
    err = np.array(
        [
            d["val_loss_stderr"][i] or 0.0
            for i in idx
            if d["kind"][i] == "val" and d["val_loss"][i] is not None
        ]
    )
    if len(vs):
        loss_ax.errorbar(
            vs, val, yerr=err[: len(vs)], fmt="o-", color="#0072B2", ms=3, lw=1.1, label="validation loss"
        )
    loss_ax.set_ylabel("loss (nats/token)")
    loss_ax.legend()
    lims = loss_limits(np.concatenate([train[len(train) // 10 :], val]), pad=0.08)  # past the first drop
    if lims is not None:
        loss_ax.set_ylim(lims[0], max(lims[1], float(val.max()) if len(val) else lims[1]))
    for ax, col, label, log in (
        (lr_ax, "lr", "learning rate", False),
        (norm_ax, "grad_norm", "gradient norm (before clipping)", True),
        (speed_ax, "tokens_per_s", "throughput (tokens/s)", False),
    ):
        s, y = series("train", col)
        ax.plot(s, y, "-", color="#D55E00" if col == "lr" else "0.3", lw=0.9)
        ax.set_ylabel(label)
        if log and len(y) and (y > 0).all():
            ax.set_yscale("log")
            log_ticks(ax.yaxis, plain=True)  # norms near 1: 0.5, 1, 2 read better than powers
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    first = idx[0]
    n = float(f"{d['params_non_embedding'][first]:.2g}")
    fig.suptitle(
        f"{run_key}: {d['arm'][first]}, $N$ = {power_text(n)}, "
        f"budget {power_text(float(d['budget_flops'][first]))} FLOPs",
        fontsize=8.5,
    )
    return fig
