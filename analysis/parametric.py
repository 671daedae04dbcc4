"""Approach 3: L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Besiroglu et al. 2024).

Parameters theta = (e, a, b, alpha, beta) with E = exp(e), A = exp(a), B = exp(b), so that
ln L_hat = logsumexp(e, a - alpha ln N, b - beta ln D). The objective is the mean Huber loss
(delta 1e-3) of ln L_hat - ln L, divided by delta (a scale that keeps L-BFGS-B's tolerances
meaningful; the minimizer is unchanged). The Hoffmann grid of 4,500 starting points is evaluated
at once with numpy (the terms of the three exponentials are separable, so the grid costs one
broadcast); L-BFGS-B with the analytic gradient then runs from the best few starts and the lowest
objective wins.

Bootstrap replicates (`fit_replicates`) are weighted copies of the runs (a run drawn k times has
weight k), so all of them share the runs' ln N, ln D, ln L: the grid of every replicate is one
matrix product, and a projected BFGS runs on all replicates at once in numpy, from the full-data
optimum (its inverse Hessian as the first curvature estimate) and from each replicate's best grid
point. It stops by L-BFGS-B's rules (relative decrease below 1e-14, projected gradient below
1e-10) and reaches scipy's optima to ~1e-15 of the objective (tests/test_parametric.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

HUBER_DELTA = 1e-3
N_PARAMS = 5
RUNS_PER_PARAM = 3  # fewer runs than 3 per parameter leave the five parameters unidentified
MIN_RUNS = N_PARAMS * RUNS_PER_PARAM

# Hoffmann et al. 2022, appendix D.2: the grid of initial values.
GRID_E = np.arange(-1.0, 1.01, 0.5)
GRID_AB = np.arange(0.0, 25.1, 5.0)
GRID_EXP = np.arange(0.0, 2.01, 0.5)
BOUNDS = [(-10.0, 10.0), (-20.0, 80.0), (-20.0, 80.0), (0.0, 5.0), (0.0, 5.0)]
LOWER, UPPER = np.array(BOUNDS).T
N_STARTS = 3  # L-BFGS-B runs from the best few grid points
FTOL, GTOL = 1e-14, 1e-10  # stopping rules of the point fit's L-BFGS-B, also used by the batched BFGS
MAX_ITER = 2000
# A bootstrap replicate stops after this many BFGS iterations: the few that have not converged by
# then creep along a nearly flat valley, mostly E toward 0 (its bound), where the point reached is
# as arbitrary as L-BFGS-B's. Against 3,000 iterations on the tiny-shaped and cpu runs (1,000
# resamples), interval ends moved by at most 1.1% of their width (log width for E, A, B), except
# E's lower end (2.4% and 17% for two tiny arms).
REPLICATE_MAX_ITER = 500


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


def _terms(params, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray):
    """The law's three terms scaled by their largest (x_e, x_n, x_d), their sum s, and the
    residual r = ln L_hat - ln L, by a stable log-sum-exp; `params` (E, a, b, alpha, beta)
    broadcast over runs."""
    e, a, b, alpha, beta = params
    t_n = a - alpha * ln_n
    t_d = b - beta * ln_d
    m = np.maximum(np.maximum(t_n, t_d), e)
    x_e, x_n, x_d = np.exp(e - m), np.exp(t_n - m), np.exp(t_d - m)
    s = x_e + x_n + x_d
    return x_e, x_n, x_d, s, m + np.log(s) - ln_l


def objective(
    theta: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, delta: float = HUBER_DELTA
) -> tuple[float, np.ndarray]:
    """Mean Huber / delta of ln L_hat - ln L and its gradient in theta (a hot loop: plain numpy)."""
    x_e, x_n, x_d, s, r = _terms(theta, ln_n, ln_d, ln_l)
    h = np.clip(r, -delta, delta)
    hs = h / s  # huber'(r) times d lse / d term, without the term's own factor
    hn, hd = hs * x_n, hs * x_d
    scale = 1.0 / (len(r) * delta)
    grad = scale * np.array([hs @ x_e, hn.sum(), hd.sum(), -(hn @ ln_n), -(hd @ ln_d)])
    return float(h @ (r - 0.5 * h)) * scale, grad


def grid_thetas() -> np.ndarray:
    """The 4,500 grid points (E, N-pair, D-pair order, as grid_objective returns them)."""
    a, alpha = np.meshgrid(GRID_AB, GRID_EXP, indexing="ij")
    a, alpha = a.reshape(-1), alpha.reshape(-1)
    ie, i_n, i_d = np.meshgrid(np.arange(len(GRID_E)), np.arange(len(a)), np.arange(len(a)), indexing="ij")
    return np.stack([GRID_E[ie], a[i_n], a[i_d], alpha[i_n], alpha[i_d]], axis=-1).reshape(-1, 5)


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
    return grid_thetas(), values.reshape(-1)


def grid_huber(ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, delta: float = HUBER_DELTA):
    """Huber / delta of every run at every grid point: (thetas (G, 5), values (G, runs)); a
    replicate's grid objective is its weights times this, divided by the run count."""
    a, alpha = np.meshgrid(GRID_AB, GRID_EXP, indexing="ij")
    t_n = np.exp(a.reshape(-1, 1) - alpha.reshape(-1, 1) * ln_n)
    t_d = np.exp(a.reshape(-1, 1) - alpha.reshape(-1, 1) * ln_d)
    pred = np.log(np.exp(GRID_E)[:, None, None, None] + t_n[None, :, None, :] + t_d[None, None, :, :])
    return grid_thetas(), (_huber(pred - ln_l, delta) / delta).reshape(-1, len(ln_l))


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


# --- all bootstrap replicates at once -----------------------------------------------------------


def batch_objective(
    theta: np.ndarray,
    weights: np.ndarray,
    ln_n: np.ndarray,
    ln_d: np.ndarray,
    ln_l: np.ndarray,
    grad: bool = True,
    delta: float = HUBER_DELTA,
):
    """`objective` of many weighted problems: theta (..., 5), weights (..., runs) -> values (...)
    and, with `grad`, gradients (..., 5). Weight k counts a run k times."""
    x_e, x_n, x_d, s, r = _terms([theta[..., i, None] for i in range(5)], ln_n, ln_d, ln_l)
    h = np.clip(r, -delta, delta)
    scale = 1.0 / (weights.sum(-1) * delta)
    value = (weights * h * (r - 0.5 * h)).sum(-1) * scale
    if not grad:
        return value, None
    hs = weights * h / s * scale[..., None]
    hn, hd = hs * x_n, hs * x_d
    # sums, not matmuls: BLAS may sum in an order that depends on the batch's shape, and a
    # replicate's result must not depend on which others share its batch
    g = np.stack(
        [(hs * x_e).sum(-1), hn.sum(-1), hd.sum(-1), -(hn * ln_n).sum(-1), -(hd * ln_d).sum(-1)], axis=-1
    )
    return value, g


def hessian(
    theta: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, delta: float = HUBER_DELTA
):
    """The objective's Hessian at theta (5, 5) for unit weights: Huber's curvature (1 inside delta)
    times J J^T plus Huber's slope times the curvature of the log-sum-exp."""
    e, a, b, alpha, beta = theta
    z = np.stack([np.full_like(ln_n, e), a - alpha * ln_n, b - beta * ln_d], axis=1)
    lse = np.logaddexp.reduce(z, axis=1)
    p = np.exp(z - lse[:, None])  # softmax over the three terms
    r = lse - ln_l
    zero, one = np.zeros_like(ln_n), np.ones_like(ln_n)
    dz = np.stack(  # d z_k / d theta: (runs, 3 terms, 5 parameters)
        [
            np.stack([one, zero, zero, zero, zero], axis=1),
            np.stack([zero, one, zero, -ln_n, zero], axis=1),
            np.stack([zero, zero, one, zero, -ln_d], axis=1),
        ],
        axis=1,
    )
    jac = np.einsum("rk,rkj->rj", p, dz)
    scale = 1.0 / (len(r) * delta)
    inside = (np.abs(r) < delta) * scale
    slope = np.clip(r, -delta, delta) * scale
    lse_curv = np.einsum("rk,rki,rkj->rij", p, dz, dz) - np.einsum("ri,rj->rij", jac, jac)
    return np.einsum("r,ri,rj->ij", inside, jac, jac) + np.einsum("r,rij->ij", slope, lse_curv)


def _free(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Parameters not held at a bound by a gradient pointing out of the box."""
    return ~(((x <= LOWER) & (g > 0)) | ((x >= UPPER) & (g < 0)))


LINE_STEPS = 4  # step halvings tried per batched evaluation when the full step fails
ARMIJO = 1e-4
MAX_STEP = 5.0  # largest change of any parameter in one step


def minimize_batch(
    theta0: np.ndarray,
    weights: np.ndarray,
    ln_n: np.ndarray,
    ln_d: np.ndarray,
    ln_l: np.ndarray,
    inv_hessian0: np.ndarray | None = None,
    max_iter: int = MAX_ITER,
    delta: float = HUBER_DELTA,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected BFGS on many problems at once: theta0 (P, 5), weights (P, runs) -> (theta, value).

    Each problem keeps its own inverse-Hessian estimate, starting from `inv_hessian0` (P, 5, 5);
    where that is None or a problem's matrix is NaN, from the identity scaled by the first step
    (Nocedal & Wright eq. 6.20). A step is the BFGS
    direction on the parameters not held at a bound, at most MAX_STEP per parameter, halved until
    it satisfies Armijo's rule. A problem stops when its objective falls by less than FTOL
    (relative, as L-BFGS-B's factr), its projected gradient is below GTOL, or no step helps."""
    n = len(theta0)
    x = np.clip(np.asarray(theta0, dtype=float), LOWER, UPPER)
    f, g = batch_objective(x, weights, ln_n, ln_d, ln_l, delta=delta)
    eye = np.eye(5)
    H = np.full((n, 5, 5), np.nan) if inv_hessian0 is None else np.array(inv_hessian0, dtype=float)
    fresh = np.isnan(H).any(axis=(1, 2))
    H[fresh] = eye
    active = np.ones(n, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        xi, fi, gi, Hi, wi = x[idx], f[idx], g[idx], H[idx], weights[idx]
        free = _free(xi, gi)
        pg = gi * free
        d = -np.einsum("rij,rj->ri", Hi * free[:, :, None] * free[:, None, :], pg)
        uphill = (d * gi).sum(1) >= 0
        if uphill.any():  # a stale estimate: restart from steepest descent
            Hi[uphill] = eye
            fresh[idx[uphill]] = True
            d[uphill] = -pg[uphill]
        d *= np.minimum(1.0, MAX_STEP / np.maximum(np.abs(d).max(1), 1e-300))[:, None]
        xn = np.clip(xi + d, LOWER, UPPER)
        fn, gn = batch_objective(xn, wi, ln_n, ln_d, ln_l, delta=delta)
        ok = fn <= fi + ARMIJO * ((xn - xi) * gi).sum(1)
        step = 1.0
        while not ok.all() and step > 1e-12:
            # the failing problems try LINE_STEPS shorter steps in one evaluation
            nb = np.flatnonzero(~ok)
            steps = step * 0.5 ** np.arange(1, LINE_STEPS + 1)
            cand = np.clip(xi[nb, None, :] + steps[None, :, None] * d[nb, None, :], LOWER, UPPER)
            fc, _ = batch_objective(cand, wi[nb, None, :], ln_n, ln_d, ln_l, grad=False, delta=delta)
            armijo = fc <= fi[nb, None] + ARMIJO * ((cand - xi[nb, None, :]) * gi[nb, None, :]).sum(-1)
            first = np.argmax(armijo, axis=1)
            rows = np.arange(len(nb))
            hit = armijo[rows, first]
            if hit.any():
                h = nb[hit]
                xn[h] = cand[rows[hit], first[hit]]
                fn[h], gn[h] = batch_objective(xn[h], wi[h], ln_n, ln_d, ln_l, delta=delta)
                ok[h] = True
            step = steps[-1]
        xn = np.where(ok[:, None], xn, xi)
        fn = np.where(ok, fn, fi)
        gn = np.where(ok[:, None], gn, gi)
        s, y = xn - xi, gn - gi
        sy = (s * y).sum(1)
        update = ok & (sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1))
        if update.any():
            su, yu, Hu = s[update], y[update], Hi[update]
            rho = 1.0 / sy[update]
            first_step = fresh[idx[update]]
            if first_step.any():
                Hu[first_step] = eye * (sy[update][first_step] / (yu[first_step] ** 2).sum(1))[:, None, None]
            Hy = np.einsum("rij,rj->ri", Hu, yu)
            yHy = (yu * Hy).sum(1)
            Hu = (
                Hu
                + ((1 + rho * yHy) * rho)[:, None, None] * su[:, :, None] * su[:, None, :]
                - rho[:, None, None] * (Hy[:, :, None] * su[:, None, :] + su[:, :, None] * Hy[:, None, :])
            )
            Hi[update] = Hu
            fresh[idx[update]] = False
        x[idx], g[idx], H[idx] = xn, gn, Hi
        done = ~ok | (fi - fn <= FTOL * np.maximum(np.maximum(np.abs(fi), np.abs(fn)), 1.0))
        done |= np.abs(gn * _free(xn, gn)).max(1) <= GTOL
        f[idx] = fn
        active[idx] = ~done
    return x, f


def fit_replicates(
    full: ParametricLaw,
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    weights: np.ndarray,
    max_iter: int = REPLICATE_MAX_ITER,
) -> tuple[np.ndarray, np.ndarray]:
    """Approach 3 on every bootstrap replicate: weights (R, runs) -> (theta (R, 5), objective (R,)).

    Two starts per replicate, as the point fit's multi-start: the full-data optimum (with its
    inverse Hessian) and the replicate's best grid point; the lower objective wins."""
    ln_n, ln_d, ln_l = np.log(n), np.log(d), np.log(loss)
    reps = len(weights)
    thetas, per_run = grid_huber(ln_n, ln_d, ln_l)
    best_grid = thetas[
        np.argmin(np.einsum("rn,gn->rg", weights, per_run), axis=1)
    ]  # the first of ties, as the stable sort
    vals, vecs = np.linalg.eigh(hessian(full.theta, ln_n, ln_d, ln_l))
    curv = np.maximum(np.abs(vals), 1e-6 * np.abs(vals).max())  # positive definite, however flat
    inv_h = (vecs / curv) @ vecs.T
    starts = np.concatenate([np.tile(full.theta, (reps, 1)), best_grid])
    h0 = np.concatenate([np.broadcast_to(inv_h, (reps, 5, 5)), np.full((reps, 5, 5), np.nan)])
    x, f = minimize_batch(
        starts, np.concatenate([weights, weights]), ln_n, ln_d, ln_l, inv_hessian0=h0, max_iter=max_iter
    )
    grid_won = f[reps:] < f[:reps]
    return np.where(grid_won[:, None], x[reps:], x[:reps]), np.where(grid_won, f[reps:], f[:reps])


def theta_quantities(theta: np.ndarray) -> dict[str, np.ndarray]:
    """ParametricLaw.as_dict of many thetas (R, 5)."""
    e, a, b, alpha, beta = theta.T
    return {
        "E": np.exp(e),
        "A": np.exp(a),
        "B": np.exp(b),
        "alpha": alpha,
        "beta": beta,
        "n_opt_exponent": beta / (alpha + beta),
    }
