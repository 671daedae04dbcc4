"""Approach 2: a parabola in ln N per IsoFLOP budget, then power laws through the vertices.

Per (arm, budget): least squares L = a (ln N)^2 + b ln N + c over the budget's runs; the vertex
gives N*, L*; D* and the vertex's compute C* are read off straight lines ln D ~ ln N and
ln C ~ ln N fitted to the same runs (within a budget D ~ C / (6N) up to flooring of steps and the
counting convention, so the line is nearly exact and also covers conventions other than 6N).
A cell is flagged `non-convex` when a <= 0 (its N*, D*, L* are NaN) and `vertex-outside` when
ln N* lies outside the sampled sizes; only unflagged cells enter the power laws.
Power laws y = k C^e are least squares of ln y on ln C; the loss frontier is also fitted as
L* = E + A C^-g (docs/methods.md says when E counts as identified).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

MIN_SIZES = 3  # distinct sizes a budget needs for a parabola
NON_CONVEX = "non-convex"
VERTEX_OUTSIDE = "vertex-outside"


@dataclass(frozen=True)
class Parabola:
    """L = a x^2 + b x + c with x = ln N."""

    a: float
    b: float
    c: float

    @property
    def vertex_x(self) -> float:
        return -self.b / (2 * self.a)

    @property
    def vertex_y(self) -> float:
        return self.c - self.b * self.b / (4 * self.a)

    def __call__(self, x):
        return (self.a * x + self.b) * x + self.c


def fit_parabola(x: np.ndarray, y: np.ndarray) -> Parabola:
    """Least squares on centred x (ln N ~ 20-30 makes the raw Vandermonde ill-conditioned)."""
    x0 = x.mean()
    u = x - x0
    design = np.stack([u * u, u, np.ones_like(u)], axis=1)
    (a, b1, c1), *_ = np.linalg.lstsq(design, y, rcond=None)
    return Parabola(a=float(a), b=float(b1 - 2 * a * x0), c=float(c1 - b1 * x0 + a * x0 * x0))


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of least squares y ~ x; slope 0 when x has no spread."""
    x0 = x.mean()
    u = x - x0
    ss = float(u @ u)
    slope = float(u @ (y - y.mean())) / ss if ss > 0 else 0.0
    return float(y.mean() - slope * x0), slope


@dataclass(frozen=True)
class Cell:
    """One IsoFLOP budget of one arm."""

    arm: str
    budget: float
    n_runs: int
    n_sizes: int
    ln_n_min: float
    ln_n_max: float
    parabola: Parabola
    n_star: float
    d_star: float
    l_star: float
    c_star: float  # compute of the optimal model on the x axis (achieved FLOPs or budget)
    curvature: float  # d^2 L / d(ln N)^2 = 2a
    flags: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return not self.flags


def fit_cell(
    arm: str, budget: float, n: np.ndarray, d: np.ndarray, compute: np.ndarray, loss: np.ndarray
) -> Cell:
    """Vertex of one budget; the caller ensures at least MIN_SIZES distinct sizes."""
    x = np.log(n)
    p = fit_parabola(x, loss)
    flags: list[str] = []
    if not p.a > 0:
        flags.append(NON_CONVEX)
        xs = ys = float("nan")
    else:
        xs, ys = p.vertex_x, p.vertex_y
        if not x.min() <= xs <= x.max():
            flags.append(VERTEX_OUTSIDE)
    d0, d1 = fit_line(x, np.log(d))
    c0, c1 = fit_line(x, np.log(compute))
    with np.errstate(over="ignore"):  # a nearly flat parabola's vertex may lie absurdly far out (flagged)
        n_star, d_star, c_star = np.exp(xs), np.exp(d0 + d1 * xs), np.exp(c0 + c1 * xs)
    return Cell(
        arm=arm,
        budget=float(budget),
        n_runs=len(n),
        n_sizes=len(np.unique(n)),
        ln_n_min=float(x.min()),
        ln_n_max=float(x.max()),
        parabola=p,
        n_star=float(n_star),
        d_star=float(d_star),
        l_star=float(ys),
        c_star=float(c_star),
        curvature=2 * p.a,
        flags=tuple(flags),
    )


def budget_groups(budget: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(budget, row indices) per distinct budget, ascending."""
    return [(float(b), np.flatnonzero(budget == b)) for b in np.unique(budget)]


def fit_cells(arm: str, budget, n, d, compute, loss) -> tuple[list[Cell], list[float]]:
    """Cells of every budget with enough sizes, and the budgets skipped for too few sizes."""
    cells, skipped = [], []
    for b, idx in budget_groups(budget):
        if len(np.unique(n[idx])) < MIN_SIZES:
            skipped.append(b)
            continue
        cells.append(fit_cell(arm, b, n[idx], d[idx], compute[idx], loss[idx]))
    return cells, skipped


@dataclass(frozen=True)
class PowerLaw:
    """y = coef * C^exponent."""

    coef: float
    exponent: float

    def __call__(self, c):
        return self.coef * np.power(c, self.exponent)


def fit_power_law(c: np.ndarray, y: np.ndarray) -> PowerLaw | None:
    """Least squares in log-log space; None with fewer than 2 distinct compute values."""
    if len(np.unique(c)) < 2:
        return None
    intercept, slope = fit_line(np.log(c), np.log(y))
    return PowerLaw(coef=float(np.exp(intercept)), exponent=slope)


SATURATING = "saturating"  # L = E + A C^-g with E fitted
POWER = "power"  # E = 0: the log-log line L = A C^-g
MIN_BUDGETS_FOR_E = 4  # three parameters need a spare point before E is trusted
E_BOUND_MARGIN = 1e-3  # E within this fraction of min L* (or of 0) sits on its bound: not identified


@dataclass(frozen=True)
class LossFrontier:
    """L*(C) = E + A C^-g; E = 0 for the `power` form."""

    E: float
    A: float
    g: float
    form: str

    def loss(self, c):
        return self.E + self.A * np.power(c, -self.g)

    def compute(self, loss):
        """C at which the frontier reaches `loss`; NaN where it never does."""
        loss = np.asarray(loss, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.power(self.A / (loss - self.E), 1.0 / self.g)
        return np.where((loss > self.E) & (self.g > 0), out, np.nan)


def fit_loss_frontier(
    c: np.ndarray, loss: np.ndarray, form: str | None = None, start: LossFrontier | None = None
) -> LossFrontier | None:
    """Least squares of ln L on ln C. form None: saturating when E is identified, else power.

    `start` (e.g. the full-data frontier inside a bootstrap) replaces the default starting points.
    """
    line = fit_power_law(c, loss)
    if line is None:
        return None
    power = LossFrontier(E=0.0, A=line.coef, g=-line.exponent, form=POWER)
    if form == POWER or (form is None and len(np.unique(c)) < MIN_BUDGETS_FOR_E):
        return power
    sat = _fit_saturating(c, loss, power, start)
    if form == SATURATING:
        return sat
    top = loss.min()
    identified = E_BOUND_MARGIN * top < sat.E < (1 - E_BOUND_MARGIN) * top and sat.g > 0
    return sat if identified else power


def _fit_saturating(
    c: np.ndarray, loss: np.ndarray, line: LossFrontier, start: LossFrontier | None
) -> LossFrontier:
    """E in [0, min L), 0 <= g <= 10; in u = ln(C / C0) so that A at C0 is of order L."""
    ln_c0 = float(np.log(c).mean())
    u = np.log(c) - ln_c0
    y = np.log(loss)
    top = float(loss.min())
    lower, upper = [0.0, -np.inf, 0.0], [top * (1 - 1e-9), np.inf, 10.0]

    def residuals(p):
        e, log_a, g = p
        return np.log(e + np.exp(log_a - g * u)) - y

    def jac(p):
        e, log_a, g = p
        t = np.exp(log_a - g * u)
        s = e + t
        return np.stack([1 / s, t / s, -u * t / s], axis=1)

    if start is not None:
        starts = [(min(start.E, 0.99 * top), np.log(start.A) - start.g * ln_c0, start.g)]
    else:  # from the log-log line, with E at 0, half and 0.9 of the lowest loss
        g0 = max(line.g, 1e-3)
        starts = [(f * top, float(np.log(loss - f * top).mean()), g0) for f in (0.0, 0.5, 0.9)]
    best = None
    for p0 in starts:
        r = least_squares(
            residuals,
            np.clip(p0, lower, upper),
            jac=jac,
            bounds=(lower, upper),
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
        )
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None  # at least one start
    e, log_a, g = best.x
    return LossFrontier(E=float(e), A=float(np.exp(log_a + g * ln_c0)), g=float(g), form=SATURATING)
