"""Figures of a fit, drawn from fits.json (and, for error bars, the runs' val_loss_stderr): IsoFLOP
curves, frontiers, compute multiplier and Approach 3 residuals, each as PNG and PDF. The training
curves of curves.parquet are drawn by analysis/curve_plots.py with the same style and helpers.

For a paper: panels that compare arms share one y-range (share_y, the default); every log axis is
labelled in powers of ten (2x10^4); losses carry +-1 standard-error bars; each residual panel names
the fit it shows; frontier points sit at the compute of their cell, with intervals clipped at the
axis and marked there; axis limits come from the data.

Real tiny sweeps may have arms with one valid budget or none, no multiplier, no parametric fit:
every missing element is skipped with a note (returned to the caller, printed by `scaling plot`),
never an exception, and a figure with nothing to show is not written at all. Their flagged cells
carry extrapolated vertices (N* = 1e-30) and bootstrap intervals spanning dozens of decades: the
axes are set by the data, valid estimates and fitted laws only, and what falls far outside them
is clipped or named in a note instead of flattening the figure.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    AutoLocator,
    Formatter,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    ScalarFormatter,
)

from scaling import atomic  # noqa: E402
from scaling.spec import budget_tag  # noqa: E402

STYLE: dict[Any, Any] = {  # matplotlib rcParams
    "font.family": "serif",
    "font.serif": ["STIXGeneral", "DejaVu Serif"],
    "mathtext.fontset": "stix",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.linewidth": 0.3,
    "grid.alpha": 0.5,
    "savefig.dpi": 200,
}
WIDTH = 7.0  # inches: a two-column paper's text width
LOSS_LABEL = "validation loss (nats/token)"
# Okabe-Ito: distinguishable for colour-blind readers and in greyscale print
ARM_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
FIGURES = ("isoflop", "frontiers", "multiplier", "residuals")  # from fits.json, in this order
FLAGGED_GREY = "0.6"
# a flagged IsoFLOP vertex is drawn when its N* is within this factor of the sampled sizes and its
# L* within this fraction of the loss span of the data; farther ones are named in the notes
VERTEX_REACH_N = 2.0
VERTEX_REACH_LOSS = 0.25
# on the log axes of estimates: how far (in decades) intervals and bands may take the axis beyond
# the estimates themselves, at least, and as a fraction of the estimates' own span
MIN_REACH_DECADES = math.log10(2)
LOSS_REACH_DECADES = math.log10(1.1)
REACH_FRACTION = 0.5
# a compute axis spans at least this many decades (one budget would otherwise fill the panel with
# a sliver of compute, its ticks far apart in value and the arms' dodge looking like a compute gap)
MIN_COMPUTE_DECADES = 1.0
MIN_ESTIMATE_DECADES = 0.15  # and an axis of estimates at least this many (a factor 1.4)
DODGE_FRACTION = 0.012  # arms sharing a budget are shifted apart by this fraction of the axis
LABEL_INCHES = 0.45  # room a tick label such as 2x10^4 needs along a horizontal axis
STDERR_NOTE = "Error bars: $\\pm 1$ standard error over the validation windows"


def _compute_label(fits: dict) -> str:
    flops = fits.get("flops", "budget")
    what = "planned budget" if flops == "budget" else f"{flops} convention"
    return f"training compute $C$ (FLOPs, {what})"


def _arr(xs) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=float)


def _budget_colours(budgets):
    budgets = sorted({b for b in budgets if b})
    lo, hi = (math.log10(budgets[0]), math.log10(budgets[-1])) if budgets else (0, 1)
    norm = Normalize(lo - 1e-9, hi + 1e-9)
    cmap = plt.get_cmap("viridis")
    return budgets, (lambda b: cmap(0.88 * norm(math.log10(b))))


def _fit_budgets(fits: dict) -> list[float]:
    return [b for arm in fits["arms"].values() for b in arm["runs"]["budget_flops"]]


def _note(ax, text: str) -> None:
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.35", wrap=True
    )


def _grid(n: int, height: float, max_cols: int = 3):
    cols = min(max_cols, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[: max(n, 1)])


def loss_limits(values, pad: float = 0.06) -> tuple[float, float] | None:
    v = _arr(np.ravel(values))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    margin = pad * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-3)
    return lo - margin, hi + margin


def _stderr_of(runs: dict, stderr: dict[str, float] | None) -> np.ndarray | None:
    """The runs' val_loss_stderr: from fits.json when it carries them, else by run key."""
    if "val_loss_stderr" in runs:
        return _arr(runs["val_loss_stderr"])
    if not stderr:
        return None
    return _arr([stderr.get(k) for k in runs.get("run_key", [])])


def _vertex_on_axes(cell: dict, n: np.ndarray, loss: np.ndarray) -> bool:
    """Whether a vertex lies close enough to the runs to be drawn without stretching the axes."""
    ok = np.isfinite(n) & np.isfinite(loss) & (n > 0)
    if not ok.any():
        return False
    n, loss = n[ok], loss[ok]
    pad = VERTEX_REACH_LOSS * (loss.max() - loss.min())
    return bool(
        n.min() / VERTEX_REACH_N <= cell["n_star"] <= n.max() * VERTEX_REACH_N
        and loss.min() - pad <= cell["l_star"] <= loss.max() + pad
    )


def isoflop_figure(
    fits: dict, notes: list[str], stderr: dict[str, float] | None = None, share_y: bool = True
):
    """One panel per arm with runs; None when no arm has any."""
    arms = [a for a in fits["arms"] if len(fits["arms"][a]["runs"]["val_loss"])]
    for a in fits["arms"]:
        if a not in arms:
            notes.append(f"isoflop {a}: no runs, no panel")
    if not arms:
        return None
    budgets, colour = _budget_colours(_fit_budgets(fits))
    fig, axes = _grid(len(arms), 2.3)
    shared = loss_limits([v for a in arms for v in fits["arms"][a]["runs"]["val_loss"]]) if share_y else None
    flagged_cells, with_errors = [], False
    for ax, arm in zip(axes, arms):
        a = fits["arms"][arm]
        runs = a["runs"]
        n, loss, budget = (
            _arr(runs["params_non_embedding"]),
            _arr(runs["val_loss"]),
            _arr(runs["budget_flops"]),
        )
        err = _stderr_of(runs, stderr)
        for b in sorted(set(budget)):
            m = budget == b
            if err is not None and np.isfinite(err[m]).any():
                with_errors = True
                ax.errorbar(
                    n[m],
                    loss[m],
                    yerr=np.nan_to_num(err[m]),
                    fmt="o",
                    color=colour(b),
                    ms=3,
                    mec="none",
                    alpha=0.9,
                    elinewidth=0.6,
                    capsize=0,
                )
            else:
                ax.plot(n[m], loss[m], "o", color=colour(b), ms=3, mec="none", alpha=0.9)
        flagged = []
        for cell in a["cells"]:
            b, p = cell["budget_flops"], cell["parabola"]
            x = np.linspace(cell["ln_n_min"] - 0.15, cell["ln_n_max"] + 0.15, 100)
            style = "--" if cell["valid"] else ":"
            ax.plot(np.exp(x), (p["a"] * x + p["b"]) * x + p["c"], style, color=colour(b), lw=0.9)
            what = list(cell["flags"])
            if cell["n_star"] is not None and cell["l_star"] is not None:
                if _vertex_on_axes(cell, n, loss):
                    colour_x = "k" if cell["valid"] else FLAGGED_GREY
                    ax.plot(cell["n_star"], cell["l_star"], "x", color=colour_x, ms=5, mew=1.2, zorder=5)
                else:
                    what.append(f"vertex N* = {_short(cell['n_star'])} off the axes")
            if what:
                flagged.append(f"{budget_tag(b)}: {', '.join(what)}")
        skipped = ", ".join(budget_tag(b) for b in a["skipped_budgets"])
        if flagged:
            notes.append(f"isoflop {arm}: " + "; ".join(flagged))
        if skipped:
            notes.append(f"isoflop {arm}: budgets without a parabola (too few sizes): {skipped}")
            flagged.append(f"too few sizes: {skipped}")
        if flagged:
            flagged_cells.append(f"{arm}: " + "; ".join(flagged))
        ax.set_xscale("log")
        n_ok = n[np.isfinite(n) & (n > 0)]
        ax.set_xlim(n_ok.min() / 1.25, n_ok.max() * 1.25)
        lims = shared or loss_limits(loss)
        if lims is not None:
            ax.set_ylim(*lims)
        log_ticks(ax.xaxis)
        ax.set_title(arm)
        ax.set_xlabel("non-embedding parameters $N$")
        ax.set_ylabel(LOSS_LABEL)
    handles = [
        Line2D([], [], color=colour(b), marker="o", ls="--", ms=3, lw=0.9, label=f"{power_text(b)} FLOPs")
        for b in budgets
    ]
    handles.append(
        Line2D([], [], color="k", marker="x", ls="none", ms=5, mew=1.2, label="vertex $(N^*, L^*)$")
    )
    lines = []
    if with_errors:
        lines.append(STDERR_NOTE)
    if flagged_cells:
        handles += [
            Line2D([], [], color=FLAGGED_GREY, ls=":", lw=0.9, label="flagged parabola"),
            Line2D([], [], color=FLAGGED_GREY, marker="x", ls="none", ms=5, mew=1.2, label="flagged vertex"),
        ]
        lines += ["Flagged cells (dotted, not used for the frontiers):"] + flagged_cells
    if lines:
        caption(fig, lines)
    fig.legend(handles=handles, loc="outside right upper", title="budget", title_fontsize=7)
    return fig


def _short(v: float) -> str:
    """Two significant digits in the '2e4' style (notes and captions: plain text)."""
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def power_text(v: float) -> str:
    """6e18 -> 6x10^18, 1e19 -> 10^19 in mathtext: the notation of the tick labels."""
    if not (v > 0 and math.isfinite(v)):
        return ""
    mantissa, exponent = budget_tag(v).split("e")
    if mantissa == "1":
        return f"$10^{{{int(exponent)}}}$"
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


def caption(fig, lines: list[str]) -> None:
    """A note block under the whole figure (saved with bbox_inches="tight"), wrapped to its width:
    per-panel notes of long flag lists would run into each other."""
    width = int(fig.get_figwidth() * 22)  # characters of 6 pt serif per inch, with a margin
    text = "\n".join(textwrap.fill(line, width, subsequent_indent="    ") for line in lines)
    fig.text(0.01, 0, text, ha="left", va="top", fontsize=6, color="0.3", linespacing=1.3)


def _arm_colour(arms: list[str]):
    return {a: ARM_COLOURS[i % len(ARM_COLOURS)] for i, a in enumerate(arms)}


def _log_limits(core, extra, min_reach: float = MIN_REACH_DECADES) -> tuple[float, float] | None:
    """Log-axis limits that show the estimates `core` in full and `extra` (their intervals and
    bands) only as far as a modest reach beyond them: a bootstrap interval of 1e-8 .. 1e20 then runs
    off the panel instead of flattening the estimates into a line. None without a core value."""
    core = np.log10(_positive(core))
    if core.size == 0:
        return None
    lo, hi = core.min(), core.max()
    reach = max(REACH_FRACTION * (hi - lo), min_reach)
    extra = np.clip(np.log10(_positive(extra)), lo - reach, hi + reach)
    if extra.size:
        lo, hi = min(lo, extra.min()), max(hi, extra.max())
    if hi - lo < MIN_ESTIMATE_DECADES:  # one estimate, or a few close ones: room to read them
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_ESTIMATE_DECADES / 2, mid + MIN_ESTIMATE_DECADES / 2
    pad = max(0.05 * (hi - lo), 0.02)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def _positive(values) -> np.ndarray:
    v = _arr(np.ravel(values))
    return v[np.isfinite(v) & (v > 0)]


def _clamp(values, lims: tuple[float, float]) -> np.ndarray:
    """Values pulled to just beyond the axis (NaN kept): drawn as running off the panel, and never
    non-positive on a log axis."""
    return np.clip(_arr(np.ravel(values)), lims[0] / 10, lims[1] * 10)


def _interval(ax, x: float, value: float, ci, lims: tuple[float, float], colour) -> bool:
    """The interval [low, high] around `value` as an error bar clipped to the axis, with a
    triangle where it was clipped; returns whether it was."""
    lo, hi = ci
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    low, high = max(lo, lims[0]), min(hi, lims[1])
    err = [[max(value - low, 0)], [max(high - value, 0)]]
    ax.errorbar(x, value, yerr=err, fmt="none", ecolor=colour, elinewidth=0.7, capsize=1.5, zorder=3)
    clipped = False
    for end, bound, marker in ((lo, lims[0], "v"), (hi, lims[1], "^")):
        if (end < bound) if marker == "v" else (end > bound):
            ax.plot(x, bound, marker, color=colour, ms=3.5, clip_on=False, zorder=5)
            clipped = True
    return clipped


def _frontier_limits(fits: dict, q: str):
    """From the valid vertices and the fitted laws; their intervals and bands within reach."""
    core, extra = [], []
    for a in fits["arms"].values():
        for c in a["cells"]:
            if c["valid"] and c[q] is not None:
                core.append(c[q])
                extra += c["ci"][q]
        if a["bands"] is not None:
            c_grid = _arr(a["bands"]["compute"])
            curve = _curve(a, q, c_grid)
            if curve is not None:
                core += list(curve)
            extra += a["bands"][q]["low"] + a["bands"][q]["high"]
    # a loss within a few percent is what matters: its intervals reach 10% beyond the estimates at most
    return _log_limits(core, extra, LOSS_REACH_DECADES if q == "l_star" else MIN_REACH_DECADES)


def _cell_compute(a: dict, cell: dict) -> float | None:
    """Where a cell's point belongs on the compute axis: its vertex's compute, kept within the
    compute its runs spent (a flagged cell's vertex is an extrapolation: its C* may be anywhere)."""
    runs = a["runs"]
    spent = _positive([c for c, b in zip(runs["compute"], runs["budget_flops"]) if b == cell["budget_flops"]])
    c_star = cell["c_star"]
    if spent.size == 0:
        return c_star if c_star is not None and c_star > 0 else None
    if c_star is None or not (c_star > 0 and math.isfinite(c_star)):
        return float(np.exp(np.log(spent).mean()))
    return float(np.clip(c_star, spent.min(), spent.max()))


def _compute_limits(xs) -> tuple[float, float] | None:
    v = np.log10(_positive(xs))
    if v.size == 0:
        return None
    lo, hi = v.min(), v.max()
    if hi - lo < MIN_COMPUTE_DECADES:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_COMPUTE_DECADES / 2, mid + MIN_COMPUTE_DECADES / 2
    pad = 0.05 * (hi - lo)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def frontiers_figure(fits: dict, notes: list[str]):
    """N*, D*, L* against compute; None when no arm has a valid IsoFLOP vertex."""
    arms = list(fits["arms"])
    colours = _arm_colour(arms)
    panels = (
        ("n_star", "compute-optimal parameters $N^*$"),
        ("d_star", "compute-optimal tokens $D^*$"),
        ("l_star", r"frontier loss $L^*$ (nats/token)"),
    )
    if all(_frontier_limits(fits, q) is None for q, _ in panels):
        notes.append("frontiers: no valid IsoFLOP vertex in any arm, no figure")
        return None
    # the points' compute, and the laws' grids: one compute axis for the three panels
    points = {
        arm: [(c, _cell_compute(fits["arms"][arm], c)) for c in fits["arms"][arm]["cells"]] for arm in arms
    }
    xs = [x for pts in points.values() for c, x in pts if c["valid"]]
    xs += [x for a in fits["arms"].values() if a["bands"] is not None for x in a["bands"]["compute"]]
    xlims = _compute_limits(xs) or _compute_limits([x for pts in points.values() for _, x in pts])
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 2.5), layout="constrained")
    any_flagged = any_clipped = False
    for ax, (q, ylabel) in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        lims = _frontier_limits(fits, q)
        if lims is None:
            _note(ax, "no valid IsoFLOP vertex")
            continue
        span = math.log10(xlims[1] / xlims[0]) if xlims else 1.0
        laws = []
        for i, arm in enumerate(arms):
            a, col = fits["arms"][arm], colours[arm]
            # arms share budgets: shift their markers apart by a fixed share of the axis
            dodge = 10 ** (DODGE_FRACTION * span * (i - (len(arms) - 1) / 2))
            off = []
            for c, x in points[arm]:
                if c[q] is None or x is None:
                    continue
                x *= dodge
                if c["valid"]:
                    ax.plot(x, c[q], "o", color=col, ms=3.5, zorder=4)
                    any_clipped |= _interval(ax, x, c[q], c["ci"][q], lims, col)
                    continue
                any_flagged = True
                if lims[0] <= c[q] <= lims[1]:  # flagged: its interval is meaningless, show the point
                    ax.plot(x, c[q], "o", color=col, mfc="white", ms=3.5, zorder=4)
                else:
                    off.append(f"{budget_tag(c['budget_flops'])} ({_short(c[q])})")
            if off:
                notes.append(f"frontiers {arm}: flagged {q} beyond the axes, not drawn: {', '.join(off)}")
            bands = a["bands"]
            if bands is not None:
                c_grid = _arr(bands["compute"])
                curve = _curve(a, q, c_grid)
                if curve is not None:
                    (line,) = ax.plot(c_grid, curve, "-", color=col, lw=1.1, label=_law_label(arm, a, q))
                    laws.append(line)
                low, high = _clamp(bands[q]["low"], lims), _clamp(bands[q]["high"], lims)
                ok = np.isfinite(low) & np.isfinite(high)
                if ok.any():
                    ax.fill_between(c_grid[ok], low[ok], high[ok], color=col, alpha=0.15, lw=0)
            elif any(c["valid"] for c, _ in points[arm]) and q == "n_star":
                notes.append(f"frontiers {arm}: fewer than 2 valid budgets, no power law drawn")
        ax.set_ylim(*lims)
        if xlims is not None:
            ax.set_xlim(*xlims)
        if laws:  # under the panel: inside, the legend would need room the data do not
            ax.legend(
                handles=laws,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.2),
                handlelength=1.5,
                borderaxespad=0,
            )
        log_ticks(ax.yaxis, plain=q == "l_star")
        log_ticks(ax.xaxis)
    handles = [Line2D([], [], color=colours[arm], marker="o", ls="none", ms=3.5, label=arm) for arm in arms]
    marker: dict[str, Any] = {"color": "k", "marker": "o", "ls": "none", "ms": 3.5}
    handles.append(Line2D([], [], **marker, label="valid vertex, 95% CI"))
    if any_clipped:
        handles.append(Line2D([], [], color="k", marker="^", ls="none", ms=3.5, label="CI beyond the axis"))
    if any_flagged:
        handles.append(
            Line2D([], [], **marker, mfc="white", label="flagged (no CI; beyond the axes: omitted)")
        )
    cols = len(handles) if len(handles) <= 7 else math.ceil(len(handles) / 2)
    fig.legend(handles=handles, loc="outside upper center", ncols=cols, columnspacing=1.2)
    fig.supxlabel(_compute_label(fits), fontsize=8)
    engine = fig.get_layout_engine()
    assert isinstance(engine, ConstrainedLayoutEngine)
    engine.set(w_pad=0.06)
    return fig


def _tick_subs(axis, lo: float, hi: float) -> list[float]:
    """The densest of 1..9, 1-2-5, 1-3, decades whose labels fit along the axis (at least two
    labels when the span allows)."""
    ax = axis.axes
    box = ax.get_position()
    fig_w, fig_h = ax.figure.get_size_inches()
    length = box.width * fig_w if axis is ax.xaxis else box.height * fig_h * 1.6  # labels stack tighter
    room = max(2, int(length / LABEL_INCHES))
    choices = [list(np.arange(1.0, 10.0)), [1.0, 2.0, 5.0], [1.0, 3.0], [1.0]]
    for subs in choices:
        count = sum(
            lo <= s * 10.0**k <= hi
            for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            for s in subs
        )
        if count <= room:
            return subs
    return [1.0]


def log_ticks(axis, plain: bool = False) -> None:
    """Labelled ticks that cannot run into each other, chosen for the span shown and the room along
    the axis (set after the limits): powers of ten (2x10^4) or plain numbers; minor ticks unlabelled."""
    lo, hi = axis.get_view_interval()
    span = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    # plain numbers over less than a decade (a loss): evenly spaced ones read best
    linear = plain and span < 0.6
    if linear:
        axis.set_major_locator(AutoLocator())
    else:
        subs = _tick_subs(axis, lo, hi) if lo > 0 and hi > lo else [1.0]
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=40))
    fmt: Formatter
    if plain:
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
    else:
        fmt = FuncFormatter(lambda v, _: power_text(v))
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(NullFormatter())


def _curve(a: dict, q: str, c: np.ndarray):
    if q == "l_star":
        f = a["frontier"]
        return None if f is None else f["E"] + f["A"] * np.power(c, -f["g"])
    law = a["power_laws"][q]
    return None if law is None else law["coef"] * np.power(c, law["exponent"])


def _law_label(arm: str, a: dict, q: str) -> str:
    if q == "l_star":
        f = a["frontier"]
        if f["form"] == "saturating":
            return f"{arm}: $L^* = {f['E']:.2f} + A\\,C^{{-{f['g']:.3f}}}$"
        return f"{arm}: $L^* \\propto C^{{-{f['g']:.3f}}}$"
    sym = "N^*" if q == "n_star" else "D^*"
    return f"{arm}: ${sym} \\propto C^{{{a['power_laws'][q]['exponent']:.2f}}}$"


def multiplier_figure(fits: dict, notes: list[str]):
    """The compute multiplier against the loss; None (and a note) when there is none to draw."""
    m = fits.get("multiplier")
    if m is None:
        notes.append("multiplier: not fitted (needs two arms with 2+ valid budgets each), no figure")
        return None
    curve = m["curve"]
    loss, value = _arr(curve["loss"]), _arr(curve["value"])
    ci = [np.nan, np.nan] if m["value"] is None else m["ci"]
    # a ratio: log scale, limits from the fitted curve, the band and the parity line 1 within reach
    lims = _log_limits([*value, m["value"]], [*curve["low"], *curve["high"], *ci, 1.0])
    if lims is None:
        notes.append("multiplier: undefined over the common loss range, no figure")
        return None
    fig, ax = plt.subplots(figsize=(WIDTH / 2, 2.7), layout="constrained")
    low, high = _clamp(curve["low"], lims), _clamp(curve["high"], lims)
    ok = np.isfinite(low) & np.isfinite(high)
    ax.fill_between(
        loss[ok], low[ok], high[ok], color=ARM_COLOURS[0], alpha=0.18, lw=0, label="95% bootstrap band"
    )
    ax.plot(loss, value, "-", color=ARM_COLOURS[0], label="fitted frontiers")
    if lims[0] <= 1 <= lims[1]:
        ax.axhline(1.0, color="0.4", lw=0.7, ls=":")
    if m["value"] is not None:
        ax.plot(
            m["loss_ref"],
            m["value"],
            "o",
            color="k",
            ms=4,
            zorder=5,
            label=f"at geometric-mean loss {m['loss_ref']:.2f}, 95% CI",
        )
        if _interval(ax, m["loss_ref"], m["value"], m["ci"], lims, "k"):
            ax.plot([], [], "^", color="k", ms=3.5, label="CI beyond the axis")
    ax.set_yscale("log")
    ax.set_ylim(*lims)
    finite = loss[np.isfinite(loss)]
    if finite.size:
        pad = 0.03 * (finite.max() - finite.min() or 1.0)
        ax.set_xlim(finite.min() - pad, finite.max() + pad)
    log_ticks(ax.yaxis, plain=True)
    ax.set_xlabel(LOSS_LABEL)
    ax.set_ylabel(
        f"$C_{{\\mathrm{{{_tex(m['baseline'])}}}}}(L) \\,/\\, C_{{\\mathrm{{{_tex(m['candidate'])}}}}}(L)$"
    )
    ax.set_title(
        f"compute multiplier of {m['candidate']} over {m['baseline']}"
        + (" (extrapolated)" if m["extrapolated"] else "")
    )
    fig.legend(loc="outside lower center", ncols=2)
    return fig


def _tex(name: str) -> str:
    """An arm name inside \\mathrm{}: a bare '-' would be typeset as a minus sign with spacing."""
    return name.replace("-", "{-}")


PARAMETRIC_FORM = r"$\hat L(N, D) = E + A\,N^{-\alpha} + B\,D^{-\beta}$"


def residuals_figure(fits: dict, notes: list[str], share_y: bool = True):
    """Residuals of each arm's Approach 3 fit; arms without one get no panel, and no arm with one
    means no figure."""
    arms = [a for a in fits["arms"] if fits["arms"][a]["parametric"] is not None]
    for a in fits["arms"]:
        if a not in arms:
            notes.append(f"residuals {a}: no parametric fit (too few runs), no panel")
    if not arms:
        return None
    budgets, colour = _budget_colours(_fit_budgets(fits))
    fig, axes = _grid(len(arms), 2.1)
    residuals = {}
    for arm in arms:
        a = fits["arms"][arm]
        p, runs = a["parametric"], a["runs"]
        n, d, loss = (_arr(runs[k]) for k in ("params_non_embedding", "tokens", "val_loss"))
        pred = p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]
        residuals[arm] = 1e3 * (np.log(loss) - np.log(pred))
    limit = None
    if share_y:
        spread = np.abs(np.concatenate([r[np.isfinite(r)] for r in residuals.values()]))
        limit = 1.1 * spread.max() if spread.size and spread.max() > 0 else None
    for ax, arm in zip(axes, arms):
        a = fits["arms"][arm]
        p, runs, res = a["parametric"], a["runs"], residuals[arm]
        n, budget = _arr(runs["params_non_embedding"]), _arr(runs["budget_flops"])
        for b in sorted(set(budget)):
            m = budget == b
            ax.plot(n[m], res[m], "o", color=colour(b), ms=3, mec="none")
        ax.axhline(0, color="0.3", lw=0.7)
        ax.set_xscale("log")
        if limit is not None:
            ax.set_ylim(-limit, limit)
        log_ticks(ax.xaxis)
        ax.set_xlabel("non-embedding parameters $N$")
        ax.set_ylabel(r"$\ln L - \ln \hat L$ ($\times 10^{-3}$)")
        rms = np.sqrt(np.nanmean(res**2))
        # the fit named in the panel: an arm's own Approach 3 parameters
        ax.set_title(
            f"{arm}: $E$ {p['E']:.2f}, $\\alpha$ {p['alpha']:.2f}, $\\beta$ {p['beta']:.2f}; RMS {rms:.2g}",
            fontsize=7.5,
        )
    fig.suptitle(
        f"Residuals of the Approach 3 fit {PARAMETRIC_FORM}, fitted per arm to all its runs "
        "(Huber loss on $\\ln L$)",
        fontsize=8,
    )
    handles = [
        Line2D([], [], color=colour(b), marker="o", ls="none", ms=3, label=f"{power_text(b)} FLOPs")
        for b in budgets
    ]
    fig.legend(handles=handles, loc="outside right upper", title="budget", title_fontsize=7)
    return fig


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """PNG and PDF, each written atomically."""
    written = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, bbox_inches="tight")
        path = out_dir / f"{name}.{ext}"
        atomic.write_bytes(path, buf.getvalue())
        written.append(path)
    plt.close(fig)
    return written


def remove_stale(out_dir: Path, name: str) -> list[Path]:
    """A figure this plot did not draw: its files from an earlier plot would show what no longer holds."""
    removed = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def plot_all(
    fits: dict, out_dir: Path, stderr: dict[str, float] | None = None, share_y: bool = True
) -> tuple[list[Path], list[str]]:
    """Every figure of the fit that has something to show into out_dir; returns the files written
    and notes on what was skipped (a figure not drawn loses its files of an earlier plot)."""
    notes: list[str] = []
    written: list[Path] = []
    makers = {
        "isoflop": lambda: isoflop_figure(fits, notes, stderr, share_y),
        "frontiers": lambda: frontiers_figure(fits, notes),
        "multiplier": lambda: multiplier_figure(fits, notes),
        "residuals": lambda: residuals_figure(fits, notes, share_y),
    }
    with plt.rc_context(STYLE):
        for name in FIGURES:
            fig = makers[name]()
            if fig is None:
                for path in remove_stale(out_dir, name):
                    notes.append(f"{name}: removed {path.name} of an earlier plot")
                continue
            written += save(fig, out_dir, name)
    return written, notes
