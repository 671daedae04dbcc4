"""Figures of a fit, drawn from fits.json alone: IsoFLOP curves, frontiers, compute multiplier and
Approach 3 residuals, each as PNG and PDF.

Real tiny sweeps may have arms with one valid budget or none, no multiplier, no parametric fit:
every missing element is skipped with a note in its panel (and in the returned notes), never an
exception.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogLocator, ScalarFormatter  # noqa: E402

from scaling import atomic  # noqa: E402
from scaling.spec import budget_tag  # noqa: E402

STYLE = {
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
LEGEND_HEADROOM = 0.3  # fraction of the (log) y range added above the data in the frontier panels


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


def isoflop_figure(fits: dict, notes: list[str]):
    arms = list(fits["arms"])
    budgets, colour = _budget_colours(fits)
    fig, axes = _grid(len(arms), 2.3)
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
        for cell in a["cells"]:
            b, p = cell["budget_flops"], cell["parabola"]
            x = np.linspace(cell["ln_n_min"] - 0.15, cell["ln_n_max"] + 0.15, 100)
            style = "--" if cell["valid"] else ":"
            ax.plot(np.exp(x), (p["a"] * x + p["b"]) * x + p["c"], style, color=colour(b), lw=0.9)
            if cell["n_star"] is not None and cell["l_star"] is not None:
                ax.plot(
                    cell["n_star"],
                    cell["l_star"],
                    "x",
                    color="k" if cell["valid"] else "0.6",
                    ms=5,
                    mew=1.2,
                    zorder=5,
                )
        flagged = [
            f"{budget_tag(c['budget_flops'])}: {', '.join(c['flags'])}" for c in a["cells"] if c["flags"]
        ]
        skipped = [budget_tag(b) for b in a["skipped_budgets"]]
        text = []
        if flagged:
            text.append("flagged (dotted): " + "; ".join(flagged))
            notes.append(f"isoflop {arm}: " + "; ".join(flagged))
        if skipped:
            text.append("too few sizes: " + ", ".join(skipped))
            notes.append(f"isoflop {arm}: budgets without a parabola (too few sizes): {', '.join(skipped)}")
        if text:  # under the axis label, where it cannot cover data
            ax.text(
                0.5,
                -0.27,
                "\n".join(text),
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=6,
                color="0.3",
            )
        if len(n) == 0:
            _note(ax, "no runs")
        ax.set_xscale("log")
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
    fig.legend(handles=handles, loc="outside right upper", title="budget", title_fontsize=7)
    return fig


def _arm_colour(arms: list[str]):
    return {a: ARM_COLOURS[i % len(ARM_COLOURS)] for i, a in enumerate(arms)}


def frontiers_figure(fits: dict, notes: list[str]):
    arms = list(fits["arms"])
    colours = _arm_colour(arms)
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 2.5), layout="constrained")
    panels = (
        ("n_star", "compute-optimal parameters $N^*$"),
        ("d_star", "compute-optimal tokens $D^*$"),
        ("l_star", r"frontier loss $L^*$ (nats/token)"),
    )
    for ax, (q, ylabel) in zip(axes, panels):
        for i, arm in enumerate(arms):
            a, col = fits["arms"][arm], colours[arm]
            cells = [c for c in a["cells"] if c[q] is not None and c["c_star"] is not None]
            dodge = 1.03 ** (
                i - (len(arms) - 1) / 2
            )  # arms share budgets: shift their markers apart a little
            for c in cells:
                lo, hi = c["ci"][q]
                err = None if lo is None or hi is None else [[max(c[q] - lo, 0)], [max(hi - c[q], 0)]]
                ax.errorbar(
                    c["c_star"] * dodge,
                    c[q],
                    yerr=err,
                    fmt="o",
                    color=col,
                    ms=3.5,
                    elinewidth=0.7,
                    capsize=1.5,
                    mfc=col if c["valid"] else "white",
                    zorder=4,
                )
            label, handle = arm, "o"
            bands = a["bands"]
            if bands is not None:
                c_grid = _arr(bands["compute"])
                curve = _curve(a, q, c_grid)
                if curve is not None:
                    ax.plot(c_grid, curve, "-", color=col, lw=1.1)
                    label, handle = _law_label(arm, a, q), "o-"
                low, high = _arr(bands[q]["low"]), _arr(bands[q]["high"])
                ok = np.isfinite(low) & np.isfinite(high)
                if ok.any():
                    ax.fill_between(c_grid[ok], low[ok], high[ok], color=col, alpha=0.15, lw=0)
            elif cells and q == "n_star":
                notes.append(f"frontiers {arm}: fewer than 2 valid budgets, no power law drawn")
            if cells:
                ax.plot([], [], handle, color=col, ms=3.5, label=label)
        if not any(fits["arms"][arm]["cells"] for arm in arms):
            _note(ax, "no IsoFLOP vertices")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        # headroom above the data for the legend, on the side the frontier leaves free
        # (N* and D* grow with compute, L* falls)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * (hi / lo) ** LEGEND_HEADROOM)
        ax.legend(loc="upper right" if q == "l_star" else "upper left", handlelength=1.5)
        if q == "l_star":
            _plain_log_ticks(ax)
    fig.supxlabel(_compute_label(fits), fontsize=8)
    fig.get_layout_engine().set(w_pad=0.06)
    return fig


def _plain_log_ticks(ax) -> None:
    """Loss spans less than a decade: label it with plain numbers, not powers of ten."""
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=np.arange(1, 10) * 0.1, numticks=12))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)


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
    low, high = _arr(curve["low"]), _arr(curve["high"])
    ok = np.isfinite(low) & np.isfinite(high)
    ax.fill_between(
        loss[ok], low[ok], high[ok], color=ARM_COLOURS[0], alpha=0.18, lw=0, label="95% bootstrap band"
    )
    ax.plot(loss, value, "-", color=ARM_COLOURS[0], label="fitted frontiers")
    ax.axhline(1.0, color="0.4", lw=0.7, ls=":")
    if m["value"] is not None:
        lo, hi = m["ci"]
        err = None if lo is None or hi is None else [[m["value"] - lo], [hi - m["value"]]]
        ax.errorbar(
            m["loss_ref"],
            m["value"],
            yerr=err,
            fmt="o",
            color="k",
            ms=4,
            capsize=2,
            elinewidth=0.8,
            label=f"at geometric-mean loss {m['loss_ref']:.2f}",
            zorder=5,
        )
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
        ax.text(
            0.98,
            0.04,
            f"RMS {np.sqrt(np.mean(res**2)):.2g}e-3",
            transform=ax.transAxes,
            ha="right",
            fontsize=6.5,
            color="0.3",
        )
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
