"""Eso-LM with alpha_0 = 1: MDLM's masking and losses, a causal denoiser over a clean-first order.

Each sequence is reordered so its clean tokens come first (random order among them) and its
masked tokens after (random order); the denoiser runs causal attention in that order with rotary
embeddings at the true positions, so a masked token sees every clean token, the masked tokens
before it in the order (which carry only their positions) and itself. This is what lets a sampler
cache keys and values. Logits (or, on the chunked path of trainer/losses.py, the per-token losses)
are put back at the true positions before MDLM's loss.

Sampling (the diffusion part of Eso-LM) draws one random decoding order per sequence and reveals
it in chunks, chunk k holding ranks b_k .. b_{k+1} - 1 (reveal_bounds: the schedule's expected
counts, shared by the batch so that the cache stays rectangular). That order is clean-first at
every step, so the chunk's logits come from one causal pass in which each masked token sees the
revealed tokens and the earlier masked tokens of its chunk, as in training. With the KV cache a
step runs only the previous chunk (now clean, committed to the cache) and the current chunk;
without it, the whole sequence in decoding order (the reference the cache is tested against).
Empty chunks (steps > seq_len) cost no call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainer import noise
from trainer.arms.base import forbid_mask
from trainer.arms.mdlm import MaskedDiffusion
from trainer.losses import token_cross_entropy
from trainer.model import KVCache
from trainer.noise import RandomSource
from trainer.sampling import SampleOptions, Samples, gumbel_argmax, nucleus, reveal_bounds, uniform


def clean_first_order(masked: Tensor, generator: RandomSource) -> Tensor:
    """[B, T]: order[b, r] = true position of the token at rank r (clean first, each part shuffled)."""
    keys = noise.uniform(generator, masked.shape, masked.device, "order") + masked
    return keys.argsort(dim=1)


class Interpolating(MaskedDiffusion):
    def denoise(self, model: nn.Module, z: Tensor, masked: Tensor, generator: RandomSource) -> Tensor:
        order = clean_first_order(masked, generator)
        logits = model(z.gather(1, order), mode="causal", positions=order)
        rank = order.argsort(dim=1)  # inverse permutation: rank of each true position
        logits = logits.gather(1, rank[..., None].expand_as(logits))
        return forbid_mask(logits, self.mask_id)

    def nll(self, model: nn.Module, x: Tensor, z: Tensor, masked: Tensor, generator: RandomSource) -> Tensor:
        """[B, T] at true positions; the chunked path scores the permuted sequence against the
        permuted targets and puts the per-token values back (not the [B, T, V] logits)."""
        if not self.chunked(model):
            return super().nll(model, x, z, masked, generator)
        order = clean_first_order(masked, generator)  # the same draw as `denoise`
        nll = token_cross_entropy(
            model,
            z.gather(1, order),
            x.gather(1, order),
            self.mask_id,
            self.chunk_tokens,
            mode="causal",
            positions=order,
        )
        return nll.gather(1, order.argsort(dim=1))

    def sample(
        self, model: nn.Module, batch: int, seq_len: int, options: SampleOptions, generator: torch.Generator
    ) -> Samples:
        z = torch.full((batch, seq_len), self.mask_id, dtype=torch.long, device=generator.device)
        order = uniform(z.shape, generator).argsort(dim=1)  # order[b, r]: position decoded r-th
        cache = KVCache(seq_len, batch) if options.cache else None
        bounds = reveal_bounds(seq_len, options.steps)
        prev, calls = 0, 0  # prev: first rank of the chunk revealed last (not yet in the cache)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi == lo:
                continue
            if cache is None:
                logits = model(z.gather(1, order), mode="causal", positions=order)[:, lo:hi]
            else:
                ranks = order[:, prev:hi]
                logits = model(
                    z.gather(1, ranks), mode="causal", positions=ranks, cache=cache, commit=lo - prev
                )
                logits = logits[:, lo - prev :]
            calls += 1
            draw = gumbel_argmax(nucleus(forbid_mask(logits, self.mask_id), options.top_p), generator)
            z.scatter_(1, order[:, lo:hi], draw)
            prev = lo
        return Samples(z, nfe=calls)
