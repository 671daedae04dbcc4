"""The compute multiplier between any two arms, of one sweep or of two (e.g. one arm trained at two
learning rates), as a curve over their common range of frontier losses with bootstrap bands.

Arms of several tables are fitted together after `combine` labels them `source:arm` (the same arm
in two sweeps becomes two arms); the multiplier is analysis/fit.py's `pair_multiplier` (docs/
methods.md, "Compute multiplier"). The figure draws every pair's curve and band on one log axis.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from analysis.fit import FitReport, MultiplierFit, pair_multiplier
from analysis.multiplier import efficiency_sentence
from analysis.table import FitData
from scaling.errors import UserError


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an arm of a source (a sweep name or a runs table)."""

    source: str
    arm: str
    label: str  # the arm's name in the combined fit


def combine(tables: dict[str, FitData], sides: list[Side]) -> FitData:
    """The runs of every side in one FitData, each side's arm renamed to its label."""
    parts = []
    axes = {src: t.flops for src, t in tables.items()}
    if len(set(axes.values())) > 1:
        listed = ", ".join(f"{s}: {a}" for s, a in axes.items())
        raise UserError(
            f"the tables count compute differently ({listed}): give --flops (or --x budget) to align them"
        )
    for side in dict.fromkeys(sides):
        table = tables[side.source]
        if side.arm not in table.arms:
            raise UserError(
                f"arm {side.arm!r} is not in {side.source}; arms present: {', '.join(table.arms)}"
            )
        rows = table.of_arm(side.arm)
        parts.append(replace(rows, arm=np.full(len(rows), side.label, dtype=object)))

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return FitData(
        arm=cat("arm"),
        budget=cat("budget"),
        n=cat("n"),
        d=cat("d"),
        loss=cat("loss"),
        compute=cat("compute"),
        run_key=cat("run_key"),
        flops=parts[0].flops,
        source=", ".join(dict.fromkeys(tables)),
    )


@dataclass
class Comparison:
    candidate: Side
    baseline: Side
    multiplier: MultiplierFit | None  # None: an arm lacks a loss frontier
    why_not: str = ""

    @property
    def sentence(self) -> str:
        m = self.multiplier
        if m is None:
            return f"{self.candidate.label} vs {self.baseline.label}: no multiplier ({self.why_not})"
        return efficiency_sentence(
            m.candidate, m.baseline, m.value, m.interval.low, m.interval.high, m.range.reference
        )


def compare(report: FitReport, pairs: list[tuple[Side, Side]]) -> list[Comparison]:
    out = []
    for cand, base in pairs:
        lacking = [s.label for s in (cand, base) if report.arms[s.label].frontier is None]
        if lacking:
            out.append(Comparison(cand, base, None, f"{' and '.join(lacking)}: fewer than 2 valid budgets"))
            continue
        out.append(Comparison(cand, base, pair_multiplier(report, cand.label, base.label)))
    return out


def comparison_figure(comparisons: list[Comparison], out_dir: Path, name: str = "compare") -> list[Path]:
    """Every pair's multiplier curve with its band against the loss, one log axis; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from analysis.plots import ARM_COLOURS, LOSS_LABEL, STYLE, WIDTH, save

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH / 2, 2.8), layout="constrained")
        drawn = 0
        for i, c in enumerate(comparisons):
            m = c.multiplier
            if m is None or not np.isfinite(m.curve).any():
                continue
            colour = ARM_COLOURS[i % len(ARM_COLOURS)]
            ok = np.isfinite(m.curve_low) & np.isfinite(m.curve_high)
            ax.fill_between(m.losses[ok], m.curve_low[ok], m.curve_high[ok], color=colour, alpha=0.18, lw=0)
            label = f"{m.candidate} over {m.baseline}" + (" (extrapolated)" if m.range.extrapolated else "")
            ax.plot(m.losses, m.curve, "-", color=colour, label=label)
            drawn += 1
        ax.axhline(1.0, color="0.4", lw=0.7, ls=":")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 1.3, not 1.3x10^0
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel(LOSS_LABEL)
        ax.set_ylabel(r"compute multiplier $C_\mathrm{baseline}(L) / C_\mathrm{candidate}(L)$")
        if drawn:
            ax.legend(loc="best", fontsize=7)
        else:
            ax.text(0.5, 0.5, "no pair has a multiplier", ha="center", va="center", transform=ax.transAxes)
        return save(fig, out_dir, name)
