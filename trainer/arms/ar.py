"""Autoregressive arm: causal attention, next-token cross-entropy, exact NLL.

Token 0 has no prediction: the model reads x[:, :-1] and predicts x[:, 1:], and losses are
normalized by the T - 1 predicted tokens (training: B (T - 1); validation: T - 1 per sequence).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.arms.base import Arm, forbid_mask


class Autoregressive(Arm):
    def sample_t(self, n_global: int, u: float) -> None:
        return None

    def token_nll(self, model: nn.Module, x: Tensor) -> Tensor:
        """[B, T - 1]: -log p(x_i | x_<i) for i = 1 .. T-1."""
        logits = forbid_mask(model(x[:, :-1], mode="causal"), self.mask_id)
        return F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(
            x.shape[0], -1
        )

    def training_loss(
        self, model: nn.Module, x: Tensor, t: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        return self.token_nll(model, x).mean()

    def validation_loss(
        self, model: nn.Module, x: Tensor, t: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        return self.token_nll(model, x).mean(dim=1)
