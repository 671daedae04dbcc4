"""The noise schedule every diffusion arm shares (a leaf module: the samplers and the arms import it).

Log-linear: alpha_t = 1 - (1 - eps) t with t ~ U[eps, 1], drawn antithetically over the global batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-3  # schedule floor: alpha_1 = EPS, and t is drawn from [EPS, 1]


def alpha(t: Tensor) -> Tensor:
    """Log-linear schedule: alpha_t = 1 - (1 - eps) t, so sigma_t = -log alpha_t is log-linear in t."""
    return 1 - (1 - EPS) * t


def alpha_prime(t: Tensor) -> Tensor:
    return torch.full_like(t, -(1 - EPS))


def stratified_t(n: int, u: float) -> Tensor:
    """Antithetic times for a global batch of n: t_i = eps + (1 - eps) ((u + i/n) mod 1), u ~ U(0, 1).

    One u shared by every rank gives each rank its contiguous slice of one stratified set.
    """
    grid = torch.remainder(u + torch.arange(n, dtype=torch.float64) / n, 1.0)
    return (EPS + (1 - EPS) * grid).float()
