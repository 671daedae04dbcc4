"""Predictions of a fit at budgets nobody trained: N*, D*, L* per arm at compute C, from Approach
2 (the power laws through the IsoFLOP vertices and the loss frontier) and from Approach 3 (the
parametric law's optimum), with bootstrap intervals from the fit's own replicates.

Approach 3's optimum needs the compute of a model of N parameters trained on D tokens. Under
C = 6ND it has a closed form; the sweep's runs count FLOPs under their convention (attention
products, the head, conditioning), so the arm's runs are used instead: ln(C / (N D)) is fitted as a
straight line in ln N (exact for 6N, within a few percent for the others over a sweep's sizes), and
L(N, D(N, C)) is minimized over ln N numerically (a grid, then golden-section refinement). The
prediction is in the compute axis of the fit (fits.json `x_column`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import Interval, percentile_interval
from analysis.fit import FitReport
from analysis.isoflop import fit_line
from analysis.table import FitData

QUANTITIES = ("n_star", "d_star", "l_star")
SEARCH_HALF_WIDTH = 12.0  # ln N searched on either side of the 6ND closed form
GRID = 97
GOLDEN_STEPS = 40


@dataclass(frozen=True)
class Estimate:
    value: float
    interval: Interval


@dataclass
class Prediction:
    """One arm at one budget."""

    arm: str
    budget: float
    approach2: dict[str, Estimate] = field(default_factory=dict)  # empty without power laws
    approach3: dict[str, Estimate] = field(default_factory=dict)  # empty without a parametric fit
    disagree: list[str] = field(default_factory=list)  # quantities whose two intervals do not overlap
    notes: list[str] = field(default_factory=list)

    def best(self, q: str) -> Estimate | None:
        """Approach 2's estimate (the IsoFLOP method), else Approach 3's."""
        return self.approach2.get(q) or self.approach3.get(q)


@dataclass(frozen=True)
class ComputeRelation:
    """ln(C / (N D)) = intercept + slope ln N, fitted to an arm's runs."""

    intercept: float
    slope: float

    def tokens(self, c, ln_n):
        """D at which a model of exp(ln_n) parameters spends c."""
        return c / np.exp(ln_n + self.intercept + self.slope * ln_n)


def compute_relation(data: FitData) -> ComputeRelation:
    intercept, slope = fit_line(np.log(data.n), np.log(data.compute / (data.n * data.d)))
    return ComputeRelation(intercept, slope)


def parametric_optimum(
    params: Mapping[str, np.ndarray | float], c: float, relation: ComputeRelation
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N*, D*, L*) of L = E + A N^-alpha + B D^-beta at compute c, for arrays of parameters (R,)."""
    e, a, b, alpha, beta = (
        np.atleast_1d(np.asarray(params[k], dtype=float)) for k in ("E", "A", "B", "alpha", "beta")
    )
    k = np.exp(relation.intercept)  # C ~ k N D at the 6ND closed form's first guess

    def loss(ln_n):
        ln_d = np.log(relation.tokens(c, ln_n))
        with np.errstate(over="ignore", invalid="ignore"):
            return (
                e[:, None]
                + a[:, None] * np.exp(-alpha[:, None] * ln_n)
                + b[:, None] * np.exp(-beta[:, None] * ln_d)
            )

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
        guess = np.log(g) + beta / (alpha + beta) * np.log(c / k)
    guess = np.where(np.isfinite(guess), guess, np.log(np.sqrt(c / k)))
    offsets = np.linspace(-SEARCH_HALF_WIDTH, SEARCH_HALF_WIDTH, GRID)
    grid = guess[:, None] + offsets[None, :]
    values = np.where(np.isfinite(v := loss(grid)), v, np.inf)
    raw = np.argmin(values, axis=1)
    best = np.clip(raw, 1, GRID - 2)
    rows = np.arange(len(e))
    lo, hi = grid[rows, best - 1], grid[rows, best + 1]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(GOLDEN_STEPS):  # golden-section search inside the grid cell pair around the minimum
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        f1, f2 = loss(np.stack([x1, x2], axis=1)).T
        left = f1 < f2
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
    ln_n = (lo + hi) / 2
    l_star = loss(ln_n[:, None])[:, 0]
    ok = np.isfinite(l_star) & np.all(np.isfinite([e, a, b, alpha, beta]), axis=0) & (alpha > 0) & (beta > 0)
    # an optimum on the search's edge is no optimum (the law keeps improving with N or with D)
    ok &= (raw > 0) & (raw < GRID - 1)
    nan = np.full(len(e), np.nan)
    return (
        np.where(ok, np.exp(ln_n), nan),
        np.where(ok, relation.tokens(c, ln_n), nan),
        np.where(ok, l_star, nan),
    )


def _overlap(x: Interval, y: Interval) -> bool:
    return x.low <= y.high and y.low <= x.high


def predict(report: FitReport, budgets: list[float], arms: list[str] | None = None) -> list[Prediction]:
    """N*, D*, L* of every arm (or `arms`) at every budget, from both approaches."""
    level = report.options.level
    out = []
    for arm in arms or list(report.arms):
        fit = report.arms[arm]
        rep = report.replicates.get(arm)
        relation = compute_relation(report.data.of_arm(arm)) if fit.parametric is not None else None
        for c in budgets:
            p = Prediction(arm, float(c))
            grid = np.array([float(c)])
            if fit.power_laws["n_star"] is not None and fit.frontier is not None:
                for q in ("n_star", "d_star"):
                    law = fit.power_laws[q]
                    assert law is not None  # n_star and d_star laws come from the same valid cells
                    samples = rep.law(q, grid)[:, 0] if rep is not None else np.array([])
                    p.approach2[q] = Estimate(float(law(c)), percentile_interval(samples, level))
                samples = (
                    rep.frontier_loss(grid)[:, 0]
                    if rep is not None and rep.frontier is not None
                    else np.array([])
                )
                p.approach2["l_star"] = Estimate(
                    float(fit.frontier.loss(c)), percentile_interval(samples, level)
                )
            else:
                p.notes.append(f"{arm}: Approach 2 needs 2 valid budgets for its power laws")
            if fit.parametric is not None and relation is not None:
                point = parametric_optimum(fit.parametric.as_dict(), c, relation)
                reps = (
                    parametric_optimum(rep.parametric, c, relation)
                    if rep is not None and rep.parametric is not None
                    else (np.array([]),) * 3
                )
                for q, v, s in zip(QUANTITIES, point, reps):
                    p.approach3[q] = Estimate(float(v[0]), percentile_interval(s, level))
                if not np.isfinite(point[0][0]):
                    p.notes.append(
                        f"{arm}: Approach 3's law has no optimum at this budget (it keeps improving with N or D)"
                    )
            for q in QUANTITIES:
                x, y = p.approach2.get(q), p.approach3.get(q)
                if (
                    x
                    and y
                    and x.interval.defined
                    and y.interval.defined
                    and not _overlap(x.interval, y.interval)
                ):
                    p.disagree.append(q)
            out.append(p)
    return out
