"""Autoregressive arm: causal attention, next-token cross-entropy, exact NLL.

Token 0 has no prediction: the model reads x[:, :-1] and predicts x[:, 1:], and losses are
normalized by the T - 1 predicted tokens (training: B (T - 1); validation: T - 1 per sequence).

Sampling is ancestral, left to right, one forward pass per token over a KV cache (or, without
the cache, over the whole prefix: the reference the cache is tested against). Token 0 is drawn
from `options.first_token` (the corpus unigram is its distribution: training windows start
anywhere), uniform over the real tokens when not given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.arms.base import Arm, forbid_mask
from trainer.losses import token_cross_entropy
from trainer.model import KVCache
from trainer.noise import RandomSource
from trainer.sampling import SampleOptions, Samples, gumbel_argmax, nucleus


class Autoregressive(Arm):
    def sample_t(self, n_global: int, u: float) -> None:
        return None

    def token_nll(self, model: nn.Module, x: Tensor) -> Tensor:
        """[B, T - 1]: -log p(x_i | x_<i) for i = 1 .. T-1."""
        if self.chunked(model):
            return token_cross_entropy(
                model, x[:, :-1], x[:, 1:], self.mask_id, self.chunk_tokens, mode="causal"
            )
        logits = forbid_mask(model(x[:, :-1], mode="causal"), self.mask_id)
        return F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(
            x.shape[0], -1
        )

    def training_loss(self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource) -> Tensor:
        return self.token_nll(model, x).mean()

    def validation_loss(
        self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource
    ) -> Tensor:
        return self.token_nll(model, x).mean(dim=1)

    def sample(
        self, model: nn.Module, batch: int, seq_len: int, options: SampleOptions, generator: torch.Generator
    ) -> Samples:
        device = generator.device
        first = options.first_token
        if first is None:
            first = torch.ones(self.vocab).index_fill_(0, torch.tensor([self.mask_id]), 0)
        x = torch.empty(batch, seq_len, dtype=torch.long, device=device)
        x[:, 0] = gumbel_argmax(first.to(device).double().log().expand(batch, -1), generator)
        cache = KVCache(seq_len, batch) if options.cache else None
        for i in range(seq_len - 1):
            if cache is None:
                logits = model(x[:, : i + 1], mode="causal")[:, -1]
            else:
                logits = model(x[:, i : i + 1], mode="causal", cache=cache, commit=1)[:, -1]
            x[:, i + 1] = gumbel_argmax(nucleus(forbid_mask(logits, self.mask_id), options.top_p), generator)
        return Samples(x, nfe=seq_len - 1)
