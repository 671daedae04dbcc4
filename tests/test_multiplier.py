"""The compute multiplier C_baseline(L) / C_candidate(L) on fitted loss frontiers."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.fit import FitOptions, fit_runs
from analysis.isoflop import POWER, SATURATING, LossFrontier
from analysis.multiplier import common_loss_range, efficiency_sentence, multiplier
from analysis.table import load_runs


@pytest.mark.parametrize("form,E", [(POWER, 0.0), (SATURATING, 1.7)])
def test_two_power_laws_with_known_ratio(form, E):
    """Candidate reaches every loss with 1/k of the compute: L_c(C) = L_b(k C)."""
    k, A, g = 1.123, 55.0, 0.07
    base = LossFrontier(E=E, A=A, g=g, form=form)
    cand = LossFrontier(E=E, A=A * k**-g, g=g, form=form)
    c = np.geomspace(1e18, 1e21, 7)
    np.testing.assert_allclose(cand.loss(c), base.loss(k * c), rtol=1e-13)
    losses = base.loss(c)
    np.testing.assert_allclose(multiplier(cand, base, losses), k, rtol=1e-10)
    assert np.isnan(multiplier(cand, base, np.array([E - 0.1]))).all()


def test_common_loss_range():
    r = common_loss_range(np.array([2.5, 2.8, 3.2]), np.array([2.6, 3.0, 3.4]))
    assert (r.low, r.high, r.extrapolated) == (2.6, 3.2, False)
    assert r.reference == pytest.approx(np.sqrt(2.6 * 3.2))
    g = r.grid(5)
    assert g[0] == pytest.approx(2.6) and g[-1] == pytest.approx(3.2) and len(g) == 5
    gap = common_loss_range(np.array([2.0, 2.2]), np.array([2.5, 2.9]))
    assert (gap.low, gap.high, gap.extrapolated) == (2.2, 2.5, True)


def test_sentence():
    s = efficiency_sentence("mdlm-ce", "mdlm-elbo", 1.123, 1.081, 1.16, 3.1)
    assert s == "mdlm-ce is 12.3% [8.1, 16.0] more FLOPs-efficient than mdlm-elbo at val loss 3.10"
    s = efficiency_sentence("a", "b", 0.9, 0.85, 0.95, 2.0)
    assert s == "a is 10.0% [5.0, 15.0] less FLOPs-efficient than b at val loss 2.00"
    s = efficiency_sentence("a", "b", 1.2, float("nan"), float("nan"), 2.0)  # --bootstrap 0
    assert s == "a is 20.0% more FLOPs-efficient than b at val loss 2.00"


def _exact_parabola_runs(k: float, arm: str, budgets=(1e18, 3e18, 1e19)) -> dict:
    """Runs on exact parabolas in ln N whose vertices follow L*(C) = 40 (k C)^-0.06 exactly."""
    rows = {c: [] for c in ("arm", "budget_flops", "params_non_embedding", "tokens", "val_loss")}
    for c in budgets:
        n_star, l_star = 0.1 * (k * c) ** 0.5, 40.0 * (k * c) ** -0.06
        n = n_star * np.geomspace(0.25, 4, 7)
        rows["arm"] += [arm] * 7
        rows["budget_flops"] += [c] * 7
        rows["params_non_embedding"] += n.tolist()
        rows["tokens"] += (c / (6 * n)).tolist()
        rows["val_loss"] += (l_star + 0.04 * np.log(n / n_star) ** 2).tolist()
    return rows


def test_end_to_end_multiplier_exact(tmp_path):
    import pyarrow as pa

    k = 1.25
    a, b = _exact_parabola_runs(k, "mdlm-ce"), _exact_parabola_runs(1.0, "mdlm-elbo")
    pq.write_table(pa.table({c: a[c] + b[c] for c in a}), tmp_path / "runs.parquet")
    data, _ = load_runs(tmp_path / "runs.parquet")
    report = fit_runs(data, FitOptions(n_boot=30, seed=1))
    m = report.multiplier
    assert (m.candidate, m.baseline) == ("mdlm-ce", "mdlm-elbo")
    assert m.value == pytest.approx(k, rel=1e-9)
    np.testing.assert_allclose(m.curve, k, rtol=1e-9)
    # every resample of exact data refits the same frontiers: the interval collapses onto k
    assert m.interval.low == pytest.approx(k, rel=1e-6) and m.interval.high == pytest.approx(k, rel=1e-6)
    assert not m.range.extrapolated
