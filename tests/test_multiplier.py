"""The compute multiplier C_baseline(L) / C_candidate(L) on fitted loss frontiers."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.fit import FitOptions, fit_runs
from analysis.isoflop import POWER, SATURATING, LossFrontier
from analysis.multiplier import common_loss_range, efficiency_sentence, multiplier
from analysis.report import summary
from analysis.synthetic import exact_parabola_runs, to_table
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
    # factors beyond 2 read as factors, not as thousands of percent
    s = efficiency_sentence("ar", "duo", 410.0, 240.0, 891.0, 2.2)
    assert s == "ar is 410x [240x, 891x] as FLOPs-efficient as duo at val loss 2.20"
    s = efficiency_sentence("duo", "ar", 1 / 410, 1 / 891, 1 / 240, 2.2)
    assert s == "duo needs 410x [240x, 891x] the compute of ar at val loss 2.20"


def test_end_to_end_multiplier_exact(tmp_path):
    k = 1.25
    pq.write_table(
        to_table(exact_parabola_runs(k, "mdlm-ce"), exact_parabola_runs(1.0, "mdlm-elbo")),
        tmp_path / "runs.parquet",
    )
    data, _ = load_runs(tmp_path / "runs.parquet")
    report = fit_runs(data, FitOptions(n_boot=30, seed=1))
    m = report.multiplier
    assert (m.candidate, m.baseline) == ("mdlm-ce", "mdlm-elbo")
    assert m.value == pytest.approx(k, rel=1e-9)
    np.testing.assert_allclose(m.curve, k, rtol=1e-9)
    # every resample of exact data refits the same frontiers: the interval collapses onto k
    assert m.interval.low == pytest.approx(k, rel=1e-6) and m.interval.high == pytest.approx(k, rel=1e-6)
    # ... which the summary says in words rather than as a point-width interval
    assert "[every resample equal]" in summary(report) or "n/a (" in summary(report)
    assert not m.range.extrapolated
