"""The compute multiplier between two arms on the same validation metric.

On the fitted loss frontiers L*(C) of a candidate and a baseline arm, the multiplier at loss L is
C_baseline(L) / C_candidate(L): the factor of compute the baseline needs to reach the loss the
candidate reaches (1.12 = "12% more FLOPs-efficient"). It is evaluated over the range of frontier
losses (valid IsoFLOP vertices) both arms cover and reported at the range's geometric mean. When
the ranges do not overlap the gap between them is used and the result is flagged as extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.isoflop import LossFrontier

DEFAULT_CANDIDATE = "mdlm-ce"
DEFAULT_BASELINE = "mdlm-elbo"
CURVE_POINTS = 41


def multiplier(candidate: LossFrontier, baseline: LossFrontier, loss) -> np.ndarray:
    """C_baseline(L) / C_candidate(L); NaN where either frontier never reaches L."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return baseline.compute(loss) / candidate.compute(loss)


@dataclass(frozen=True)
class LossRange:
    low: float
    high: float
    extrapolated: bool  # the arms' loss ranges do not overlap: this is the gap between them

    @property
    def reference(self) -> float:
        """The geometric-mean loss, where the multiplier is reported."""
        return float(np.sqrt(self.low * self.high))

    def grid(self, points: int = CURVE_POINTS) -> np.ndarray:
        if self.low == self.high:
            return np.array([self.low])
        return np.geomspace(self.low, self.high, points)


def common_loss_range(candidate_losses: np.ndarray, baseline_losses: np.ndarray) -> LossRange:
    low = max(np.min(candidate_losses), np.min(baseline_losses))
    high = min(np.max(candidate_losses), np.max(baseline_losses))
    if low <= high:
        return LossRange(float(low), float(high), extrapolated=False)
    return LossRange(float(high), float(low), extrapolated=True)


def efficiency_sentence(
    candidate: str, baseline: str, value: float, low: float, high: float, loss: float
) -> str:
    """'mdlm-ce is 12.3% [8.1, 16.0] more FLOPs-efficient than mdlm-elbo at val loss 3.10' (no
    interval without a bootstrap); factors beyond 2x read as factors ('is 410x [240x, 891x] as
    FLOPs-efficient as', 'needs 2.9x [2.6x, 3.2x] the compute of')."""
    pct = [100 * (v - 1) for v in (value, low, high)]
    if not np.isfinite(pct[0]):
        return f"{candidate} vs {baseline}: the frontiers do not reach a common loss; no multiplier"
    has_ci = bool(np.isfinite(pct[1:]).all())
    at = f"at val loss {loss:.2f}"
    if value >= 2:
        interval = f" [{low:.3g}x, {high:.3g}x]" if has_ci else ""
        return f"{candidate} is {value:.3g}x{interval} as FLOPs-efficient as {baseline} {at}"
    if value <= 0.5:
        interval = f" [{1 / high:.3g}x, {1 / low:.3g}x]" if has_ci else ""
        return f"{candidate} needs {1 / value:.3g}x{interval} the compute of {baseline} {at}"
    word = "more" if pct[0] >= 0 else "less"
    if word == "less":
        pct = [-pct[0], -pct[2], -pct[1]]
    interval = f" [{pct[1]:.1f}, {pct[2]:.1f}]" if has_ci else ""
    return f"{candidate} is {pct[0]:.1f}%{interval} {word} FLOPs-efficient than {baseline} {at}"
