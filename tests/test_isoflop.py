"""Approach 2: parabola vertices, flags, power laws and the loss frontier."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.isoflop import (
    NON_CONVEX,
    POWER,
    SATURATING,
    VERTEX_OUTSIDE,
    fit_cell,
    fit_cells,
    fit_loss_frontier,
    fit_parabola,
    fit_power_law,
)
from analysis.synthetic import CHINCHILLA_LAW, isoflop_runs


def test_parabola_exact_on_large_ln_n():
    x = np.log(np.geomspace(1e8, 1e9, 7))
    y = 0.07 * (x - 19.9) ** 2 + 2.5
    p = fit_parabola(x, y)
    assert p.vertex_x == pytest.approx(19.9, rel=1e-12)
    assert p.vertex_y == pytest.approx(2.5, rel=1e-12)
    np.testing.assert_allclose(p(x), y, rtol=1e-12)


@pytest.mark.parametrize("budget", [6e18, 1e20])
def test_noise_free_quadratic_vertex_exact(budget):
    n_star, l_star, a = 3.3e8 * (budget / 6e18) ** 0.5, 2.7, 0.05
    n = np.array([1e8, 1.7e8, 2.4e8, 5e8, 9e8, 2e9]) * (budget / 6e18) ** 0.5
    loss = a * (np.log(n) - np.log(n_star)) ** 2 + l_star
    d = budget / (6 * n)
    cell = fit_cell("arm", budget, n, d, np.full_like(n, budget), loss)
    assert cell.flags == ()
    assert cell.n_star == pytest.approx(n_star, rel=1e-10)
    assert cell.l_star == pytest.approx(l_star, rel=1e-12)
    assert cell.curvature == pytest.approx(2 * a, rel=1e-9)
    # D = C / (6N) exactly, so the line in ln D ~ ln N reads D* = C / (6 N*)
    assert cell.d_star == pytest.approx(budget / (6 * n_star), rel=1e-10)
    assert cell.c_star == pytest.approx(budget, rel=1e-12)
    assert (cell.n_runs, cell.n_sizes) == (6, 6)


def test_flags():
    n = np.geomspace(1e6, 1e7, 5)
    x = np.log(n)
    concave = fit_cell("a", 1e15, n, 1e15 / (6 * n), np.full(5, 1e15), -((x - x.mean()) ** 2) + 3)
    assert concave.flags == (NON_CONVEX,) and not concave.valid and np.isnan(concave.n_star)
    outside = fit_cell("a", 1e15, n, 1e15 / (6 * n), np.full(5, 1e15), 0.1 * (x - np.log(3e7)) ** 2 + 3)
    assert outside.flags == (VERTEX_OUTSIDE,)
    assert outside.n_star == pytest.approx(3e7, rel=1e-9)  # reported, but flagged


def test_budgets_with_too_few_sizes_are_skipped():
    n = np.array([1e6, 2e6, 4e6, 1e6, 2e6, 1e6, 1e6, 3e6])
    budget = np.array([1e15, 1e15, 1e15, 2e15, 2e15, 3e15, 3e15, 3e15])
    loss = 3 + 0.1 * (np.log(n) - np.log(2e6)) ** 2
    cells, skipped = fit_cells("a", budget, n, budget / (6 * n), budget, loss)
    assert [c.budget for c in cells] == [1e15]
    assert skipped == [2e15, 3e15]  # 2 sizes; 4 runs but only 2 distinct sizes


def test_power_law_exact():
    c = np.geomspace(1e18, 1e21, 4)
    law = fit_power_law(c, 0.3 * c**0.52)
    assert law.exponent == pytest.approx(0.52, rel=1e-12)
    assert law.coef == pytest.approx(0.3, rel=1e-9)
    assert fit_power_law(np.array([1e18, 1e18]), np.array([1.0, 2.0])) is None


def test_loss_frontier_forms():
    c = np.geomspace(6e18, 1e20, 5)
    sat = fit_loss_frontier(c, 1.69 + 1071.0 * c**-0.1535)
    assert sat.form == SATURATING
    assert (sat.E, sat.g) == (pytest.approx(1.69, rel=1e-7), pytest.approx(0.1535, rel=1e-6))
    assert sat.A == pytest.approx(1071.0, rel=1e-5)
    np.testing.assert_allclose(sat.compute(sat.loss(c)), c, rtol=1e-9)
    # three budgets cannot identify E: the log-log line
    line = fit_loss_frontier(c[:3], 40.0 * c[:3] ** -0.06)
    assert line.form == POWER and line.E == 0 and line.g == pytest.approx(0.06, rel=1e-12)
    # a pure power law puts E on its lower bound: not identified, the line is used
    assert fit_loss_frontier(c, 40.0 * c**-0.06).form == POWER
    assert np.isnan(line.compute(np.array([-1.0]))).all()


def test_chinchilla_n_star_exponent():
    """IsoFLOP vertices of the published law: N* ~ C^(beta / (alpha + beta)).

    Noise-free the quadratic's bias in ln N* is the same at every budget (the IsoFLOP curve has the
    same shape in ln(N / N_opt) at every C, up to scale), so the exponent is exact; with 0.2%
    multiplicative noise it stays within 0.02.
    """
    law = CHINCHILLA_LAW
    truth = law.beta / (law.alpha + law.beta)
    for noise, tol in ((0.0, 1e-9), (0.002, 0.02)):
        for seed in range(3):
            r = isoflop_runs(noise=noise, seed=seed)
            cells, _ = fit_cells(
                "x",
                r["budget_flops"],
                r["params_non_embedding"],
                r["tokens"],
                r["budget_flops"],
                r["val_loss"],
            )
            assert all(c.valid for c in cells) and len(cells) == 5
            c_star = np.array([c.c_star for c in cells])
            fit = fit_power_law(c_star, np.array([c.n_star for c in cells]))
            assert abs(fit.exponent - truth) < tol, (noise, seed, fit.exponent)
            d_fit = fit_power_law(c_star, np.array([c.d_star for c in cells]))
            assert fit.exponent + d_fit.exponent == pytest.approx(1.0, abs=1e-9)  # N* D* = C / 6
