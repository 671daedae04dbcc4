"""What the samplers of trainer/arms/*.py share: options, the time grid, float64 Gumbel-max and
nucleus filtering.

    out = arm.sample(model, batch, seq_len, SampleOptions(steps=32), generator)   # Samples

Categorical draws are Gumbel-max with float64 noise: float32 uniforms truncate the Gumbel tail
(no noise above ~16.6), which lowers the temperature of the draws and, in masked diffusion,
flatters generative perplexity (Zheng et al. 2024). All randomness comes from `generator`, so a
sampler's output is a function of (weights, options, generator seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.schedule import alpha


@dataclass(frozen=True)
class SampleOptions:
    steps: int  # denoiser calls at most (diffusion arms); AR always makes seq_len - 1
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens holding this mass
    cache: bool = True  # KV cache (AR, Eso-LM), reuse of unchanged denoiser outputs (MDLM)
    first_token: Tensor | None = None  # AR: probabilities [V] of token 0, which AR never predicts

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Samples:
    tokens: Tensor  # [B, T] real-token ids
    nfe: float  # model evaluations per sequence (mean over the batch)


def time_grid(steps: int) -> Tensor:
    """t_k = 1 - k / steps, k = 0 .. steps (float64): step k goes from t_k to t_{k+1}, ending at t = 0."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def reveal_bounds(seq_len: int, steps: int) -> list[int]:
    """Tokens revealed by the end of each step when the schedule's expected fractions are rounded:
    b_k = round(T (alpha(t_k) - alpha(1)) / (1 - alpha(1))), b_0 = 0, b_steps = T."""
    a = alpha(time_grid(steps))
    frac = (a - a[0]) / (a[-1] - a[0])
    return torch.round(frac * seq_len).long().tolist()


def uniform(shape, generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)


def gumbel_argmax(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One draw per row of softmax(logits) [..., V] (-inf allowed): argmax of logits + Gumbel noise."""
    u = uniform(logits.shape, generator)
    return (logits.double() - torch.log(-torch.log(u))).argmax(dim=-1)


def nucleus(logits: Tensor, top_p: float) -> Tensor:
    """Logits with every token outside the nucleus set to -inf: per row, the most likely tokens
    whose mass first reaches top_p (the most likely token always stays). top_p = 1: unchanged."""
    if top_p >= 1:
        return logits
    probs, idx = logits.softmax(dim=-1).sort(dim=-1, descending=True)
    before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    drop = torch.empty_like(before, dtype=torch.bool).scatter_(-1, idx, before >= top_p)
    return logits.masked_fill(drop, float("-inf"))
