"""Eso-LM with alpha_0 = 1: MDLM's masking and losses, a causal denoiser over a clean-first order.

Each sequence is reordered so its clean tokens come first (random order among them) and its
masked tokens after (random order); the denoiser runs causal attention in that order with rotary
embeddings at the true positions, so a masked token sees every clean token, the masked tokens
before it in the order (which carry only their positions) and itself. This is what lets a sampler
cache keys and values. Logits are put back at the true positions before MDLM's loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainer.arms.base import forbid_mask
from trainer.arms.mdlm import MaskedDiffusion


def clean_first_order(masked: Tensor, generator: torch.Generator) -> Tensor:
    """[B, T]: order[b, r] = true position of the token at rank r (clean first, each part shuffled)."""
    keys = torch.rand(masked.shape, generator=generator, device=masked.device) + masked
    return keys.argsort(dim=1)


class Interpolating(MaskedDiffusion):
    def denoise(self, model: nn.Module, z: Tensor, masked: Tensor, generator: torch.Generator) -> Tensor:
        order = clean_first_order(masked, generator)
        logits = model(z.gather(1, order), mode="causal", positions=order)
        rank = order.argsort(dim=1)  # inverse permutation: rank of each true position
        logits = logits.gather(1, rank[..., None].expand_as(logits))
        return forbid_mask(logits, self.mask_id)
