"""Figures of a fit, drawn from fits.json alone: IsoFLOP curves, frontiers, compute multiplier and
Approach 3 residuals, each as PNG and PDF.

Real tiny sweeps may have arms with one valid budget or none, no multiplier, no parametric fit:
every missing element is skipped with a note in its panel (and in the returned notes), never an
exception. Their flagged cells carry extrapolated vertices (N* = 1e-30) and bootstrap intervals
spanning dozens of decades: the axes are set by the data, valid estimates and fitted laws only,
and what falls far outside them is clipped or named in a note instead of flattening the figure.
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
FIGURES = ("isoflop", "frontiers", "multiplier", "residuals")
FLAGGED_GREY = "0.6"
# a flagged IsoFLOP vertex is drawn when its N* is within this factor of the sampled sizes and its
# L* within this fraction of the loss span of the data; farther ones are named in the notes
VERTEX_REACH_N = 2.0
VERTEX_REACH_LOSS = 0.25
# on the log axes of estimates: how far (in decades) intervals and bands may take the axis beyond
# the estimates themselves, at least, and as a fraction of the estimates' own span
MIN_REACH_DECADES = math.log10(2)
REACH_FRACTION = 0.5


def _compute_label(fits: dict) -> str:
    flops = fits.get("flops", "budget")
    what = "planned budget" if flops == "budget" else f"{flops} convention"
    return f"training compute $C$ (FLOPs, {what})"


def _arr(xs) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=float)


def _budget_colours(fits: dict):
    budgets = sorted({b for arm in fits["arms"].values() for b in arm["runs"]["budget_flops"] if b})
    lo, hi = (math.log10(budgets[0]), math.log10(budgets[-1])) if budgets else (0, 1)
    norm = Normalize(lo - 1e-9, hi + 1e-9)
    cmap = plt.get_cmap("viridis")
    return budgets, (lambda b: cmap(0.88 * norm(math.log10(b))))


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


def isoflop_figure(fits: dict, notes: list[str]):
    arms = list(fits["arms"])
    budgets, colour = _budget_colours(fits)
    fig, axes = _grid(len(arms), 2.3)
    caption = []
    for ax, arm in zip(axes, arms):
        a = fits["arms"][arm]
        runs = a["runs"]
        n, loss, budget = (
            _arr(runs["params_non_embedding"]),
            _arr(runs["val_loss"]),
            _arr(runs["budget_flops"]),
        )
        for b in sorted(set(budget)):
            m = budget == b
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
            caption.append(f"{arm}: " + "; ".join(flagged))
        if len(n) == 0:
            _note(ax, "no runs")
        ax.set_xscale("log")
        _log_ticks(ax.xaxis)
        ax.set_title(arm)
        ax.set_xlabel("non-embedding parameters $N$")
        ax.set_ylabel(LOSS_LABEL)
    handles = [
        Line2D([], [], color=colour(b), marker="o", ls="--", ms=3, lw=0.9, label=f"{budget_tag(b)} FLOPs")
        for b in budgets
    ]
    handles.append(
        Line2D([], [], color="k", marker="x", ls="none", ms=5, mew=1.2, label="vertex $(N^*, L^*)$")
    )
    if caption:
        handles += [
            Line2D([], [], color=FLAGGED_GREY, ls=":", lw=0.9, label="flagged parabola"),
            Line2D([], [], color=FLAGGED_GREY, marker="x", ls="none", ms=5, mew=1.2, label="flagged vertex"),
        ]
        _caption(fig, ["Flagged cells (dotted, not used for the frontiers):"] + caption)
    fig.legend(handles=handles, loc="outside right upper", title="budget", title_fontsize=7)
    return fig


def _short(v: float) -> str:
    """Two significant digits in the '2e4' style of the tick labels."""
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _caption(fig, lines: list[str]) -> None:
    """A note block under the whole figure (saved with bbox_inches="tight"), wrapped to its width:
    per-panel notes of long flag lists would run into each other."""
    width = int(fig.get_figwidth() * 22)  # characters of 6 pt serif per inch, with a margin
    text = "\n".join(textwrap.fill(line, width, subsequent_indent="    ") for line in lines)
    fig.text(0.01, 0, text, ha="left", va="top", fontsize=6, color="0.3", linespacing=1.3)


def _arm_colour(arms: list[str]):
    return {a: ARM_COLOURS[i % len(ARM_COLOURS)] for i, a in enumerate(arms)}


def _log_limits(core, extra) -> tuple[float, float] | None:
    """Log-axis limits that show the estimates `core` in full and `extra` (their intervals and
    bands) only as far as a modest reach beyond them: a bootstrap interval of 1e-8 .. 1e20 then runs
    off the panel instead of flattening the estimates into a line. None without a core value."""
    core = np.log10(_positive(core))
    if core.size == 0:
        return None
    lo, hi = core.min(), core.max()
    reach = max(REACH_FRACTION * (hi - lo), MIN_REACH_DECADES)
    extra = np.clip(np.log10(_positive(extra)), lo - reach, hi + reach)
    if extra.size:
        lo, hi = min(lo, extra.min()), max(hi, extra.max())
    pad = max(0.05 * (hi - lo), 0.02)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def _positive(values) -> np.ndarray:
    v = _arr(np.ravel(values))
    return v[np.isfinite(v) & (v > 0)]


def _clamp(values, lims: tuple[float, float]) -> np.ndarray:
    """Values pulled to just beyond the axis (NaN kept): drawn as running off the panel, and never
    non-positive on a log axis."""
    return np.clip(_arr(np.ravel(values)), lims[0] / 10, lims[1] * 10)


def _yerr(value: float, ci, lims: tuple[float, float]):
    lo, hi = ci
    if lo is None or hi is None:
        return None
    lo, hi = _clamp([lo, hi], lims)
    return [[max(value - lo, 0)], [max(hi - value, 0)]]


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
    return _log_limits(core, extra)


def frontiers_figure(fits: dict, notes: list[str]):
    arms = list(fits["arms"])
    colours = _arm_colour(arms)
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 2.5), layout="constrained")
    panels = (
        ("n_star", "compute-optimal parameters $N^*$"),
        ("d_star", "compute-optimal tokens $D^*$"),
        ("l_star", r"frontier loss $L^*$ (nats/token)"),
    )
    any_flagged = False
    for ax, (q, ylabel) in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        lims = _frontier_limits(fits, q)
        if lims is None:
            _note(ax, "no valid IsoFLOP vertex")
            continue
        laws = 0
        for i, arm in enumerate(arms):
            a, col = fits["arms"][arm], colours[arm]
            cells = [c for c in a["cells"] if c[q] is not None and c["c_star"] is not None]
            # arms share budgets: shift their markers apart a little
            dodge = 1.03 ** (i - (len(arms) - 1) / 2)
            off = []
            for c in cells:
                x = c["c_star"] * dodge
                if c["valid"]:
                    ax.errorbar(
                        x,
                        c[q],
                        yerr=_yerr(c[q], c["ci"][q], lims),
                        fmt="o",
                        color=col,
                        ms=3.5,
                        elinewidth=0.7,
                        capsize=1.5,
                        zorder=4,
                    )
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
                    ax.plot(c_grid, curve, "-", color=col, lw=1.1, label=_law_label(arm, a, q))
                    laws += 1
                low, high = _clamp(bands[q]["low"], lims), _clamp(bands[q]["high"], lims)
                ok = np.isfinite(low) & np.isfinite(high)
                if ok.any():
                    ax.fill_between(c_grid[ok], low[ok], high[ok], color=col, alpha=0.15, lw=0)
            elif cells and q == "n_star":
                notes.append(f"frontiers {arm}: fewer than 2 valid budgets, no power law drawn")
        lo, hi = lims
        if laws:
            # headroom above the data for the legend of the laws, on the side the frontier leaves
            # free (N* and D* grow with compute, L* falls)
            share = 0.06 + 0.075 * laws  # of the panel height, per legend row
            hi *= (hi / lo) ** (share / (1 - share))
            ax.legend(loc="upper right" if q == "l_star" else "upper left", handlelength=1.5)
        ax.set_ylim(lo, hi)
        _log_ticks(ax.yaxis, plain=q == "l_star")
        _log_ticks(ax.xaxis)
    handles = [Line2D([], [], color=colours[arm], marker="o", ls="none", ms=3.5, label=arm) for arm in arms]
    marker: dict[str, Any] = {"color": "k", "marker": "o", "ls": "none", "ms": 3.5}
    handles.append(Line2D([], [], **marker, label="valid vertex, 95% CI"))
    if any_flagged:
        handles.append(
            Line2D([], [], **marker, mfc="white", label="flagged (no CI; beyond the axes: omitted)")
        )
    cols = len(handles) if len(handles) <= 7 else math.ceil(len(handles) / 2)
    fig.legend(handles=handles, loc="outside lower center", ncols=cols, columnspacing=1.2)
    # on the middle panel rather than as supxlabel, which the figure legend below would cover
    axes[1].set_xlabel(_compute_label(fits))
    engine = fig.get_layout_engine()
    assert isinstance(engine, ConstrainedLayoutEngine)
    engine.set(w_pad=0.06)
    return fig


def _log_ticks(axis, plain: bool = False) -> None:
    """Labelled ticks that cannot run into each other: 1-2-5 or decades depending on the span shown
    (set after the limits), as '2e4' (or plain numbers); minor ticks unlabelled."""
    lo, hi = axis.get_view_interval()
    span = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = list(np.arange(1.0, 10.0)) if span < 0.6 else [1.0, 2.0, 5.0] if span < 2.1 else [1.0]
    # plain numbers over less than a decade (a loss): evenly spaced ones read best
    linear = plain and span < 0.6
    axis.set_major_locator(AutoLocator() if linear else LogLocator(base=10, subs=subs, numticks=12))
    fmt: Formatter
    if plain:
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
    else:
        fmt = FuncFormatter(lambda v, _: budget_tag(v))
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
    m = fits.get("multiplier")
    fig, ax = plt.subplots(figsize=(WIDTH / 2, 2.7), layout="constrained")
    if m is None:
        _note(ax, "no compute multiplier\n(needs two arms with 2+ valid budgets each)")
        notes.append("multiplier: not fitted, panel left empty")
        ax.set_axis_off()
        return fig
    curve = m["curve"]
    loss, value = _arr(curve["loss"]), _arr(curve["value"])
    ci = [np.nan, np.nan] if m["value"] is None else m["ci"]
    # a ratio: log scale, limits from the fitted curve, the band and the parity line 1 within reach
    lims = _log_limits([*value, m["value"]], [*curve["low"], *curve["high"], *ci, 1.0])
    if lims is None:
        _note(ax, "compute multiplier undefined over the common loss range")
        notes.append("multiplier: no finite value, panel left empty")
        ax.set_axis_off()
        return fig
    low, high = _clamp(curve["low"], lims), _clamp(curve["high"], lims)
    ok = np.isfinite(low) & np.isfinite(high)
    ax.fill_between(
        loss[ok], low[ok], high[ok], color=ARM_COLOURS[0], alpha=0.18, lw=0, label="95% bootstrap band"
    )
    ax.plot(loss, value, "-", color=ARM_COLOURS[0], label="fitted frontiers")
    if lims[0] <= 1 <= lims[1]:
        ax.axhline(1.0, color="0.4", lw=0.7, ls=":")
    if m["value"] is not None:
        ax.errorbar(
            m["loss_ref"],
            m["value"],
            yerr=_yerr(m["value"], m["ci"], lims),
            fmt="o",
            color="k",
            ms=4,
            capsize=2,
            elinewidth=0.8,
            label=f"at geometric-mean loss {m['loss_ref']:.2f}",
            zorder=5,
        )
    ax.set_yscale("log")
    ax.set_ylim(*lims)
    _log_ticks(ax.yaxis, plain=True)
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


def residuals_figure(fits: dict, notes: list[str]):
    arms = list(fits["arms"])
    budgets, colour = _budget_colours(fits)
    fig, axes = _grid(len(arms), 2.0)
    for ax, arm in zip(axes, arms):
        a = fits["arms"][arm]
        p = a["parametric"]
        ax.set_title(arm)
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters $N$")
        ax.set_ylabel(r"$\ln L - \ln \hat L$ ($\times 10^{-3}$)")
        if p is None:
            _note(ax, "no Approach 3 fit\n(too few runs)")
            notes.append(f"residuals {arm}: no parametric fit")
            continue
        runs = a["runs"]
        n, d, loss, budget = (
            _arr(runs[k]) for k in ("params_non_embedding", "tokens", "val_loss", "budget_flops")
        )
        pred = p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]
        res = 1e3 * (np.log(loss) - np.log(pred))
        for b in sorted(set(budget)):
            m = budget == b
            ax.plot(n[m], res[m], "o", color=colour(b), ms=3, mec="none")
        ax.axhline(0, color="0.3", lw=0.7)
        _log_ticks(ax.xaxis)
        # in the title, where it cannot cover a point
        ax.set_title(f"{arm} (RMS {np.sqrt(np.nanmean(res**2)):.2g}" + r"$\times 10^{-3}$)")
    handles = [
        Line2D([], [], color=colour(b), marker="o", ls="none", ms=3, label=f"{budget_tag(b)} FLOPs")
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


def plot_all(fits: dict, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Every figure into out_dir; returns the files written and notes on what was skipped."""
    notes: list[str] = []
    written: list[Path] = []
    makers = {
        "isoflop": isoflop_figure,
        "frontiers": frontiers_figure,
        "multiplier": multiplier_figure,
        "residuals": residuals_figure,
    }
    with plt.rc_context(STYLE):
        for name in FIGURES:
            fig = makers[name](fits, notes)
            written += save(fig, out_dir, name)
    return written, notes
