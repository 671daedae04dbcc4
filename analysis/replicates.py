"""Every bootstrap replicate of one arm at once, as arrays: the fit of analysis/fit.py, vectorised.

A replicate resamples the runs of each budget with replacement, so it is the arm's runs with
integer weights (a run drawn k times has weight k). Least squares with weights k equals least
squares on the duplicated rows, so the IsoFLOP parabolas, the lines for D* and C*, the power laws
and the loss frontier of all replicates are weighted fits computed together: moments summed over
runs, 3x3 normal equations solved for every replicate in one call. Approach 3 is
analysis/parametric.py's `fit_replicates`. The full-data fit (fit_arm) stays the reference:
tests/test_bootstrap.py checks that unit weights reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.isoflop import MIN_SIZES, SATURATING, Cell, LossFrontier
from analysis.parametric import ParametricLaw, fit_replicates, theta_quantities

CELL_QUANTITIES = ("n_star", "d_star", "l_star", "c_star", "curvature")  # reported per cell
LAWS = ("n_star", "d_star", "l_star")  # power laws of the vertices against compute


@dataclass
class ReplicateFits:
    """One arm, R replicates; NaN where a replicate cannot compute a quantity."""

    cells: dict[float, dict[str, np.ndarray]]  # budget -> quantity -> (R,)
    valid: dict[float, np.ndarray]  # budget -> (R,) the replicate's cell is ok (enters the laws)
    laws: dict[str, tuple[np.ndarray, np.ndarray]]  # quantity -> (coef, exponent), each (R,)
    frontier: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (E, A, g), each (R,)
    parametric: dict[str, np.ndarray] | None  # ParametricLaw.as_dict names -> (R,)

    @staticmethod
    def concat(parts: list[ReplicateFits]) -> ReplicateFits:
        """Replicates of several spans of one arm, in order."""
        first = parts[0]
        cells = {
            b: {q: np.concatenate([p.cells[b][q] for p in parts]) for q in first.cells[b]}
            for b in first.cells
        }
        laws = {
            q: (np.concatenate([p.laws[q][0] for p in parts]), np.concatenate([p.laws[q][1] for p in parts]))
            for q in first.laws
        }
        frontier = None
        if first.frontier is not None:
            e, a, g = (
                np.concatenate([p.frontier[i] for p in parts if p.frontier is not None]) for i in range(3)
            )
            frontier = (e, a, g)
        parametric = None
        if first.parametric is not None:
            parametric = {
                q: np.concatenate([p.parametric[q] for p in parts if p.parametric is not None])
                for q in first.parametric
            }
        return ReplicateFits(
            cells=cells,
            valid={b: np.concatenate([p.valid[b] for p in parts]) for b in first.valid},
            laws=laws,
            frontier=frontier,
            parametric=parametric,
        )

    def frontier_loss(self, c: np.ndarray) -> np.ndarray:
        """L*(C) of every replicate: (R, len(c))."""
        assert self.frontier is not None
        e, a, g = (v[:, None] for v in self.frontier)
        return e + a * np.power(c[None, :], -g)

    def frontier_compute(self, loss: np.ndarray) -> np.ndarray:
        """C at which each replicate's frontier reaches `loss`: (R, len(loss)); NaN where it never does."""
        assert self.frontier is not None
        e, a, g = (v[:, None] for v in self.frontier)
        loss = np.asarray(loss, dtype=float)[None, :]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = np.power(a / (loss - e), 1.0 / g)
        return np.where((loss > e) & (g > 0), out, np.nan)

    def law(self, q: str, c: np.ndarray) -> np.ndarray:
        coef, exponent = self.laws[q]
        with np.errstate(over="ignore", invalid="ignore"):
            return coef[:, None] * np.power(c[None, :], exponent[:, None])


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """(intercept, slope) of weighted least squares y ~ x per row; slope 0 without spread (as
    isoflop.fit_line). x, y, w broadcast to (R, k)."""
    sw = w.sum(-1)
    mx = (w * x).sum(-1) / sw
    my = (w * y).sum(-1) / sw
    dx = x - mx[..., None]
    ss = (w * dx * dx).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(ss > 0, (w * dx * (y - my[..., None])).sum(-1) / ss, 0.0)
    return my - slope * mx, slope


def cell_replicates(
    cell: Cell, n, d, compute, loss, weights: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """fit_cell of one budget's runs under every row of weights (R, runs): quantities and validity."""
    reps = len(weights)
    x = np.log(n)
    sizes, which = np.unique(n, return_inverse=True)
    per_size = np.zeros((reps, len(sizes)))
    np.add.at(per_size.T, which, weights.T)
    enough = (per_size > 0).sum(1) >= MIN_SIZES  # else the replicate skips the budget
    x0 = x.mean()
    u = x - x0
    powers = u[None, :] ** np.arange(5)[:, None]  # (5, runs): u^0..u^4
    moments = np.einsum("rn,kn->rk", weights, powers)  # (R, 5); einsum: no shape-dependent BLAS order
    rhs = np.einsum("rn,kn->rk", weights * loss, powers[:3])  # (R, 3): sum w y, sum w u y, sum w u^2 y
    normal = np.stack([moments[:, [4, 3, 2]], moments[:, [3, 2, 1]], moments[:, [2, 1, 0]]], axis=1)
    normal[~enough] = np.eye(3)
    a, b, c = np.linalg.solve(normal, rhs[:, [2, 1, 0]][..., None])[..., 0].T
    convex = a > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(convex, -b / (2 * a), np.nan)
        ys = np.where(convex, c - b * b / (4 * a), np.nan)
    drawn = weights > 0
    inside = (xs >= np.where(drawn, u, np.inf).min(1)) & (xs <= np.where(drawn, u, -np.inf).max(1))
    d0, d1 = _weighted_line(u, np.log(d), weights)
    c0, c1 = _weighted_line(u, np.log(compute), weights)
    with np.errstate(over="ignore", invalid="ignore"):  # a flat parabola's vertex may lie far out (flagged)
        values = {
            "n_star": np.exp(xs + x0),
            "d_star": np.exp(d0 + d1 * xs),
            "l_star": ys,
            "c_star": np.exp(c0 + c1 * xs),
            "curvature": 2 * a,
        }
    for v in values.values():
        v[~enough] = np.nan
    return values, enough & convex & inside


def _laws(
    c_star: np.ndarray, ys: dict[str, np.ndarray], ok: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Power laws through each replicate's valid vertices (R, budgets); NaN with fewer than 2."""
    enough = ok.sum(1) >= 2
    w = ok.astype(float)
    lc = np.log(np.where(ok, c_star, 1.0))
    out = {}
    for q, y in ys.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            intercept, slope = _weighted_line(lc, np.log(np.where(ok, y, 1.0)), w)
        spread = (
            w * (lc - (w * lc).sum(1, keepdims=True) / np.maximum(w.sum(1, keepdims=True), 1)) ** 2
        ).sum(1) > 0
        good = enough & spread
        out[q] = (np.where(good, np.exp(intercept), np.nan), np.where(good, slope, np.nan))
    return out


LM_ITER = 200


def saturating_replicates(
    c: np.ndarray, loss: np.ndarray, ok: np.ndarray, start: LossFrontier
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """isoflop._fit_saturating of every replicate: least squares of ln L on ln C over its valid
    vertices (ok), E in [0, min L*), 0 <= g <= 10, by projected Levenberg-Marquardt from the
    full-data frontier (one start, as the bootstrap has always used). Returns (E, A, g)."""
    reps = len(c)
    w = ok.astype(float)
    count = w.sum(1)
    lc = np.log(np.where(ok, c, 1.0))
    y = np.log(np.where(ok, loss, 1.0))
    ln_c0 = (w * lc).sum(1) / np.maximum(count, 1)
    u = lc - ln_c0[:, None]
    top = np.where(ok, loss, np.inf).min(1)
    lower = np.stack([np.zeros(reps), np.full(reps, -np.inf), np.zeros(reps)], axis=1)
    upper = np.stack([top * (1 - 1e-9), np.full(reps, np.inf), np.full(reps, 10.0)], axis=1)
    p = np.stack(
        [np.minimum(start.E, 0.99 * top), np.log(start.A) - start.g * ln_c0, np.full(reps, start.g)], axis=1
    )
    p = np.clip(p, lower, upper)

    def resid_jac(p):
        e, la, g = (p[:, i, None] for i in range(3))
        t = np.exp(la - g * u)
        s = e + t
        r = (np.log(s) - y) * w
        jac = np.stack([1 / s, t / s, -u * t / s], axis=-1) * w[..., None]
        return r, jac

    r, jac = resid_jac(p)
    cost = (r * r).sum(1)
    lam = np.full(reps, 1e-3)
    active = count >= 2
    for _ in range(LM_ITER):
        if not active.any():
            break
        jtj = np.einsum("rki,rkj->rij", jac, jac)
        grad = np.einsum("rki,rk->ri", jac, r)
        damped = jtj + lam[:, None, None] * (
            np.eye(3) * np.maximum(np.diagonal(jtj, axis1=1, axis2=2), 1e-12)[:, None, :]
        )
        damped[~active] = np.eye(3)
        step = -np.linalg.solve(damped, grad[..., None])[..., 0]
        trial = np.clip(p + step, lower, upper)
        r2, jac2 = resid_jac(trial)
        cost2 = (r2 * r2).sum(1)
        better = active & (cost2 < cost)
        small = active & (
            (np.abs(trial - p) <= 1e-12 * (1 + np.abs(p))).all(1) | (better & (cost - cost2 <= 1e-15 * cost))
        )
        p = np.where(better[:, None], trial, p)
        r = np.where(better[:, None], r2, r)
        jac = np.where(better[:, None, None], jac2, jac)
        cost = np.where(better, cost2, cost)
        lam = np.where(better, lam / 3, lam * 4)
        active &= ~small & (lam < 1e12)
    e, la, g = p.T
    fitted = count >= 2
    nan = np.full(reps, np.nan)
    return (
        np.where(fitted, e, nan),
        np.where(fitted, np.exp(la + g * ln_c0), nan),
        np.where(fitted, g, nan),
    )


def arm_replicates(
    data,
    cells: list[Cell],
    frontier: LossFrontier | None,
    parametric: ParametricLaw | None,
    weights: np.ndarray,
) -> ReplicateFits:
    """fit_arm of every replicate of one arm (`data` its FitData, sorted by budget as load_runs
    leaves it), in the frontier form chosen on the full data."""
    reps = len(weights)
    out_cells, valid = {}, {}
    for cell in cells:
        rows = np.flatnonzero(data.budget == cell.budget)
        out_cells[cell.budget], valid[cell.budget] = cell_replicates(
            cell, data.n[rows], data.d[rows], data.compute[rows], data.loss[rows], weights[:, rows]
        )
    budgets = list(out_cells)
    if budgets:
        ok = np.stack([valid[b] for b in budgets], axis=1)
        c_star = np.stack([out_cells[b]["c_star"] for b in budgets], axis=1)
        ys = {q: np.stack([out_cells[b][q] for b in budgets], axis=1) for q in LAWS}
        laws = _laws(c_star, ys, ok)
    else:
        ok = np.zeros((reps, 0), dtype=bool)
        laws = {q: (np.full(reps, np.nan), np.full(reps, np.nan)) for q in LAWS}
    front = None
    if frontier is not None:
        if frontier.form == SATURATING:
            front = saturating_replicates(c_star, ys["l_star"], ok, frontier)
        else:
            coef, exponent = laws["l_star"]
            front = (np.where(np.isfinite(coef), 0.0, np.nan), coef, -exponent)
    par = None
    if parametric is not None:
        theta, _ = fit_replicates(parametric, data.n, data.d, data.loss, weights)
        par = theta_quantities(theta)
    return ReplicateFits(cells=out_cells, valid=valid, laws=laws, frontier=front, parametric=par)


def counts(index: np.ndarray, n_rows: int) -> np.ndarray:
    """Resample row indices (R, draws) -> weights (R, n_rows): how often each row was drawn."""
    w = np.zeros((len(index), n_rows))
    np.add.at(w, (np.arange(len(index))[:, None], index), 1.0)
    return w
