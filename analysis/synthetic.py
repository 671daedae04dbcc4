"""Synthetic sweeps drawn from a known law, for tests, benchmarks and demonstrations.

`isoflop_runs` samples an IsoFLOP grid from a Chinchilla-form law with C = 6 N D and writes a
table with the minimal columns of analysis/table.py (plus run_key); `compute_scale` > 1 makes an
arm that reaches every loss with 1/compute_scale of the compute (its multiplier against the
unscaled arm is exactly compute_scale under C = 6 N D).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# Hoffmann et al. 2022, Approach 3 estimates (DESIGN.md section 5)
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        return self.E + self.A * np.power(n, -self.alpha) + self.B * np.power(d, -self.beta)

    def n_opt(self, c):
        """Compute-optimal N under C = 6 N D (Hoffmann et al. eq. 4)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return g * np.power(np.asarray(c) / 6, b / (a + b))


CHINCHILLA_LAW = Law(**CHINCHILLA)


def isoflop_runs(
    law: Law = CHINCHILLA_LAW,
    budgets=(6e18, 1e19, 3e19, 6e19, 1e20),
    sizes_per_budget: int = 9,
    span: float = 4.0,
    noise: float = 0.0,
    seed: int = 0,
    arm: str = "synthetic",
    compute_scale: float = 1.0,
    repeats: int = 1,
) -> dict[str, np.ndarray]:
    """Sizes log-spaced in [N_opt / span, N_opt * span] per budget; loss times exp(noise * z)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("arm", "budget_flops", "params_non_embedding", "tokens", "val_loss")}
    for c in budgets:
        eff = c * compute_scale  # the arm trains as if it had compute_scale times the FLOPs
        n_opt = float(law.n_opt(eff))
        n = np.repeat(np.geomspace(n_opt / span, n_opt * span, sizes_per_budget), repeats)
        d = c / (6 * n)
        loss = law.loss(n, d * compute_scale) * np.exp(noise * rng.standard_normal(len(n)))
        cols["arm"] += [arm] * len(n)
        cols["budget_flops"] += [float(c)] * len(n)
        cols["params_non_embedding"] += n.tolist()
        cols["tokens"] += d.tolist()
        cols["val_loss"] += loss.tolist()
    return {k: np.asarray(v) for k, v in cols.items()}


def to_table(*parts: dict[str, np.ndarray]) -> pa.Table:
    """Concatenates parts from isoflop_runs into a table with a unique run_key per row."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cols["run_key"] = np.array([f"{a}-{i}" for i, a in enumerate(cols["arm"])])
    return pa.table({k: pa.array(v.tolist()) for k, v in cols.items()})
