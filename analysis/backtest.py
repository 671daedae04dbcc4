"""A backtest of the laws: hold out each arm's largest budget, fit the rest, predict the held-out
budget's N* and L* (analysis/predict.py, both approaches, with intervals) and compare with what
its runs say: the vertex of its own IsoFLOP parabola (the "truth" of Approach 2) and the runs'
losses themselves (Approach 3 predicts every run's loss from its N and D; the best run's loss
bounds L* from above).

Errors: N* as predicted / fitted - 1, L* as predicted - fitted (nats); `inside` says whether the
fitted value lies in the predicted 95% interval. The prediction is made at the held-out vertex's
compute C* (the fit's compute axis), so the comparison is at equal compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.fit import FitReport
from analysis.isoflop import MIN_SIZES, Cell, fit_cell
from analysis.predict import Estimate, predict
from analysis.table import FitData


def split_largest(data: FitData) -> tuple[FitData, FitData]:
    """(every arm's runs but those of its largest budget, those runs)."""
    held = np.zeros(len(data), dtype=bool)
    for arm in data.arms:
        rows = data.arm == arm
        held |= rows & (data.budget == data.budget[rows].max())
    return data.take(np.flatnonzero(~held)), data.take(np.flatnonzero(held))


@dataclass
class Check:
    """One approach's prediction of one quantity against the held-out truth."""

    predicted: Estimate
    truth: float

    @property
    def error(self) -> float:
        return self.predicted.value / self.truth - 1

    @property
    def difference(self) -> float:
        return self.predicted.value - self.truth

    @property
    def inside(self) -> bool | None:
        iv = self.predicted.interval
        return iv.contains(self.truth) if iv.defined and math.isfinite(self.truth) else None


@dataclass
class ArmBacktest:
    arm: str
    budget: float  # the held-out budget
    compute: float  # where the prediction is made: the held-out vertex's C*
    cell: Cell | None  # the held-out budget's own parabola (None with fewer than 3 sizes)
    best_run_loss: float
    checks: dict[str, dict[str, Check]] = field(default_factory=dict)  # approach -> n_star | l_star -> Check
    run_errors: np.ndarray | None = None  # Approach 3: predicted - actual loss of every held-out run
    notes: list[str] = field(default_factory=list)


def backtest(train: FitReport, held: FitData) -> list[ArmBacktest]:
    """Compares `train` (a fit without the largest budgets) with the held-out runs."""
    out = []
    for arm in held.arms:
        rows = held.of_arm(arm)
        budget = float(rows.budget[0])
        best = float(rows.loss.min())
        cell = None
        notes = []
        if len(np.unique(rows.n)) >= MIN_SIZES:
            cell = fit_cell(arm, budget, rows.n, rows.d, rows.compute, rows.loss)
            if not cell.valid:
                notes.append(
                    f"{arm}: the held-out budget's own parabola is {', '.join(cell.flags)}: its vertex is no truth"
                )
        else:
            notes.append(
                f"{arm}: the held-out budget has fewer than {MIN_SIZES} sizes: no vertex to compare with"
            )
        compute = (
            cell.c_star if cell is not None and cell.valid else float(np.exp(np.log(rows.compute).mean()))
        )
        result = ArmBacktest(arm, budget, compute, cell, best, notes=notes)
        if arm not in train.arms:
            result.notes.append(f"{arm}: nothing left to fit without its largest budget")
            out.append(result)
            continue
        (p,) = predict(train, [compute], arms=[arm])
        result.notes += p.notes
        for name, source in (("approach2", p.approach2), ("approach3", p.approach3)):
            if not source:
                continue
            result.checks[name] = {}
            if cell is not None and cell.valid:
                result.checks[name]["n_star"] = Check(source["n_star"], cell.n_star)
                result.checks[name]["l_star"] = Check(source["l_star"], cell.l_star)
        law = train.arms[arm].parametric
        if law is not None:
            result.run_errors = law.predict(rows.n, rows.d) - rows.loss
        out.append(result)
    return out
