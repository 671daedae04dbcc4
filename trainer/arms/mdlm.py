"""Masked (absorbing-state) diffusion, MDLM: bidirectional denoiser without time conditioning.

Each token is replaced by [MASK] with probability 1 - alpha_t; the loss is the cross-entropy of
the masked tokens (the SUBS parameterization copies visible tokens, so they cost nothing):
  NELBO per token = -alpha'_t / (1 - alpha_t) * 1[z = MASK] * (-log p(x | z_t)),
which is exactly 1/t under the log-linear schedule; the "ce" objective uses weight 1 instead.
Validation is always the NELBO. Losses are summed over positions and divided by B T.

Sampling is ancestral on the time grid t_k = 1 - k/steps: from t to s each still-masked token is
revealed with probability (alpha_s - alpha_t) / (1 - alpha_t) (1 / (steps - k) here, all at the
last step) with a value drawn from the denoiser; revealed tokens are carried over unchanged.
The denoiser has no time input, so its output for a sequence in which no token changed is
reused: only rows that changed are recomputed (`nfe` counts the rows' evaluations). With exact
conditionals the samples follow the data distribution as steps grow (one reveal per step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import noise
from trainer.arms.base import Arm, forbid_mask, times_on
from trainer.losses import token_cross_entropy
from trainer.noise import RandomSource
from trainer.sampling import SampleOptions, Samples, gumbel_argmax, nucleus, time_grid, uniform
from trainer.schedule import alpha, alpha_prime


def nelbo_weight(t: Tensor) -> Tensor:
    return -alpha_prime(t) / (1 - alpha(t))


class MaskedDiffusion(Arm):
    def mask(self, x: Tensor, t: Tensor, generator: RandomSource) -> tuple[Tensor, Tensor]:
        """(z_t, masked): each token masked independently with probability 1 - alpha_t."""
        masked = noise.uniform(generator, x.shape, x.device, "mask") < (1 - alpha(t))[:, None]
        return torch.where(masked, self.mask_id, x), masked

    def denoise(self, model: nn.Module, z: Tensor, masked: Tensor, generator: RandomSource) -> Tensor:
        """Logits [B, T, V] at true positions, [MASK] forbidden."""
        return forbid_mask(model(z, mode="bidirectional"), self.mask_id)

    def nll(self, model: nn.Module, x: Tensor, z: Tensor, masked: Tensor, generator: RandomSource) -> Tensor:
        """[B, T]: -log p(x_l | z_t) at every position (the head runs on all of them)."""
        if self.chunked(model):
            return token_cross_entropy(model, z, x, self.mask_id, self.chunk_tokens, mode="bidirectional")
        logits = self.denoise(model, z, masked, generator)
        return F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view_as(x)

    def masked_nll(self, model: nn.Module, x: Tensor, t: Tensor, generator: RandomSource) -> Tensor:
        """[B, T]: -log p(x_l | z_t) on masked positions, 0 on visible ones."""
        z, masked = self.mask(x, t, generator)
        return self.nll(model, x, z, masked, generator) * masked

    def training_loss(self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource) -> Tensor:
        t = times_on(t, x)
        nll = self.masked_nll(model, x, t, generator)
        if self.info.objective == "elbo":
            nll = nelbo_weight(t)[:, None] * nll
        return nll.sum() / x.numel()

    def validation_loss(
        self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource
    ) -> Tensor:
        t = times_on(t, x)
        return (nelbo_weight(t)[:, None] * self.masked_nll(model, x, t, generator)).mean(dim=1)

    def sample(
        self, model: nn.Module, batch: int, seq_len: int, options: SampleOptions, generator: torch.Generator
    ) -> Samples:
        z = torch.full((batch, seq_len), self.mask_id, dtype=torch.long, device=generator.device)
        a = alpha(time_grid(options.steps))
        logits: Tensor | None = None
        stale, rows = torch.ones(batch, dtype=torch.bool, device=z.device), 0
        for k in range(options.steps):
            masked = z == self.mask_id
            if not options.cache:
                stale[:] = True
            n_stale = int(stale.sum())
            if n_stale == batch:
                logits = self.denoise(model, z, masked, generator)
            elif n_stale:
                assert logits is not None  # every row is stale at the first step
                logits[stale] = self.denoise(model, z[stale], masked[stale], generator)
            rows += n_stale
            p_reveal = float((a[k + 1] - a[k]) / (1 - a[k]))
            reveal = masked & (uniform(z.shape, generator) < p_reveal)
            assert logits is not None
            z[reveal] = gumbel_argmax(nucleus(logits[reveal], options.top_p), generator)
            stale = reveal.any(dim=1) & (z == self.mask_id).any(dim=1)
        return Samples(z, nfe=rows / batch)
