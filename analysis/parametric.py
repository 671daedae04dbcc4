"""Approach 3: L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Besiroglu et al. 2024).

Parameters theta = (e, a, b, alpha, beta) with E = exp(e), A = exp(a), B = exp(b), so that
ln L_hat = logsumexp(e, a - alpha ln N, b - beta ln D). The objective is the mean Huber loss
(delta 1e-3) of ln L_hat - ln L, divided by delta (a scale that keeps L-BFGS-B's tolerances
meaningful; the minimizer is unchanged). The Hoffmann grid of 4,500 starting points is evaluated
at once with numpy (the terms of the three exponentials are separable, so the grid costs one
broadcast); L-BFGS-B with the analytic gradient then runs from the best few starts (and from any
extra start the caller gives, e.g. the full-data optimum inside a bootstrap) and the lowest
objective wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

HUBER_DELTA = 1e-3
MIN_RUNS = 6  # five parameters and one spare

# Hoffmann et al. 2022, appendix D.2: the grid of initial values.
GRID_E = np.arange(-1.0, 1.01, 0.5)
GRID_AB = np.arange(0.0, 25.1, 5.0)
GRID_EXP = np.arange(0.0, 2.01, 0.5)
BOUNDS = [(-10.0, 10.0), (-20.0, 80.0), (-20.0, 80.0), (0.0, 5.0), (0.0, 5.0)]
N_STARTS = 3  # L-BFGS-B runs from the best few grid points


@dataclass(frozen=True)
class ParametricLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # mean Huber / delta at the optimum
    n_runs: int

    def predict(self, n, d):
        return self.E + self.A * np.power(n, -self.alpha) + self.B * np.power(d, -self.beta)

    @property
    def n_opt_exponent(self) -> float:
        """N_opt ~ C^(beta / (alpha + beta)) under C = 6 N D."""
        return self.beta / (self.alpha + self.beta)

    @property
    def theta(self) -> np.ndarray:
        return np.array([np.log(self.E), np.log(self.A), np.log(self.B), self.alpha, self.beta])

    def as_dict(self) -> dict[str, float]:
        return {
            "E": self.E,
            "A": self.A,
            "B": self.B,
            "alpha": self.alpha,
            "beta": self.beta,
            "n_opt_exponent": self.n_opt_exponent,
        }


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    h = np.clip(r, -delta, delta)  # the Huber derivative; h (r - h/2) is the Huber loss itself
    return h * (r - 0.5 * h)


def objective(
    theta: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, delta: float = HUBER_DELTA
) -> tuple[float, np.ndarray]:
    """Mean Huber / delta of ln L_hat - ln L and its gradient in theta (a hot loop: plain numpy)."""
    e, a, b, alpha, beta = theta
    t_n = a - alpha * ln_n
    t_d = b - beta * ln_d
    m = np.maximum(np.maximum(t_n, t_d), e)
    x_e, x_n, x_d = np.exp(e - m), np.exp(t_n - m), np.exp(t_d - m)
    s = x_e + x_n + x_d
    r = m + np.log(s) - ln_l
    h = np.clip(r, -delta, delta)
    hs = h / s  # huber'(r) times d lse / d term, without the term's own factor
    hn, hd = hs * x_n, hs * x_d
    scale = 1.0 / (len(r) * delta)
    grad = scale * np.array([hs @ x_e, hn.sum(), hd.sum(), -(hn @ ln_n), -(hd @ ln_d)])
    return float(h @ (r - 0.5 * h)) * scale, grad


def grid_objective(ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, delta: float = HUBER_DELTA):
    """Objective at every grid point: (thetas (G, 5), values (G,))."""
    # term of N for every (a, alpha), of D for every (b, beta): (6*5, n) each, exponentiated once
    a, alpha = np.meshgrid(GRID_AB, GRID_EXP, indexing="ij")
    t_n = np.exp(a.reshape(-1, 1) - alpha.reshape(-1, 1) * ln_n)
    t_d = np.exp(a.reshape(-1, 1) - alpha.reshape(-1, 1) * ln_d)
    t_e = np.exp(GRID_E)
    # (E, N-pair, D-pair, run): the full grid in one broadcast
    pred = np.log(t_e[:, None, None, None] + t_n[None, :, None, :] + t_d[None, None, :, :])
    values = _huber(pred - ln_l, delta).mean(axis=-1) / delta
    ie, i_n, i_d = np.meshgrid(
        np.arange(len(GRID_E)), np.arange(len(t_n)), np.arange(len(t_d)), indexing="ij"
    )
    thetas = np.stack(
        [
            GRID_E[ie],
            a.reshape(-1)[i_n],
            a.reshape(-1)[i_d],
            alpha.reshape(-1)[i_n],
            alpha.reshape(-1)[i_d],
        ],
        axis=-1,
    ).reshape(-1, 5)
    return thetas, values.reshape(-1)


def fit_parametric(
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    extra_starts=(),
    n_starts: int = N_STARTS,
    delta: float = HUBER_DELTA,
) -> ParametricLaw:
    ln_n, ln_d, ln_l = np.log(n), np.log(d), np.log(loss)
    thetas, values = grid_objective(ln_n, ln_d, ln_l, delta)
    starts = list(thetas[np.argsort(values, kind="stable")[:n_starts]]) + [
        np.asarray(s) for s in extra_starts
    ]
    best = None
    for theta0 in starts:
        r = minimize(
            objective,
            np.clip(theta0, *np.array(BOUNDS).T),
            args=(ln_n, ln_d, ln_l, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=BOUNDS,
            options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-10},
        )
        if best is None or r.fun < best.fun:
            best = r
    assert best is not None  # at least one start
    e, a, b, alpha, beta = best.x
    return ParametricLaw(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=float(alpha),
        beta=float(beta),
        objective=float(best.fun),
        n_runs=len(loss),
    )
