"""The interface every arm implements, and the [MASK] rule every denoiser follows
(the noise schedule lives in trainer/schedule.py).

    arm = get_arm(name, vocab)                       # trainer.arms
    t = arm.sample_t(n_global, u)                    # [n_global] float32 on the CPU, or None (AR)
    loss = arm.training_loss(model, x, t, generator)     # scalar, the training objective per token
    nelbo = arm.validation_loss(model, x, t, generator)  # [B], nats per token, the common metric
    out = arm.sample(model, batch, seq_len, options, generator)  # trainer.sampling.Samples

x: LongTensor [B, T] of real-token ids in [0, vocab - 1); the last id of the model's vocabulary
is [MASK] (`mask_id`), which never occurs in data. t: this rank's slice of `sample_t` (moved to
x.device here). generator: a torch.Generator on x.device; all of an arm's randomness (masks,
noise, Eso-LM orders) comes from it, so a loss is deterministic given (x, t, generator state).
model: anything with DiT's forward signature (tests pass oracle denoisers). When it is a DiT
(maybe wrapped in DDP or torch.compile) and `arm.chunk_tokens` > 0, the losses are computed from
its hidden states a chunk of tokens at a time (trainer/losses.py: no [B, T, V] logits; the same
numbers up to float rounding); otherwise from the full logits of model(...). chunk_tokens
defaults to trainer.losses.CHUNK_TOKENS (2048); 0 selects the full-logits path for any model.

Every arm's denoiser puts no mass on [MASK] (its logit is -inf): data never contains it, and the
uniform-state arm's K real tokens exclude it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from scaling.arms import ArmInfo
from trainer.losses import CHUNK_TOKENS, backbone
from trainer.noise import RandomSource
from trainer.sampling import SampleOptions, Samples
from trainer.schedule import stratified_t


def forbid_mask(logits: Tensor, mask_id: int) -> Tensor:
    """Set the [MASK] logit to -inf in place (the head's output is not saved for backward)."""
    logits[..., mask_id] = float("-inf")
    return logits


def times_on(t: Tensor | None, x: Tensor) -> Tensor:
    """A diffusion arm's times on the batch's device (every diffusion arm gets them from sample_t)."""
    if t is None:
        raise ValueError("a diffusion arm needs the diffusion times t (arm.sample_t)")
    return t.to(x.device)


class Arm(ABC):
    def __init__(self, info: ArmInfo, vocab: int) -> None:
        if vocab < 3:
            raise ValueError(f"vocab {vocab} must hold at least two real tokens and [MASK]")
        self.info = info
        self.vocab = vocab
        self.mask_id = vocab - 1
        self.chunk_tokens = CHUNK_TOKENS  # tokens per chunk of the loss; 0: full logits

    def chunked(self, model: nn.Module) -> bool:
        """Whether this model's losses go through its hidden states in chunks (module docstring)."""
        core = backbone(model) if self.chunk_tokens > 0 else None
        if core is None:
            return False
        if core.head.out_features != self.vocab:
            raise ValueError(
                f"the model's head has {core.head.out_features} outputs, the arm's vocab is {self.vocab}"
            )
        return True

    def sample_t(self, n_global: int, u: float) -> Tensor | None:
        return stratified_t(n_global, u)

    @abstractmethod
    def training_loss(self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource) -> Tensor:
        """Scalar: sum of per-token training losses / number of predicted tokens."""

    @abstractmethod
    def validation_loss(
        self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource
    ) -> Tensor:
        """[B]: per-sequence NELBO (diffusion) or exact NLL (AR), in nats per token."""

    @abstractmethod
    def sample(
        self, model: nn.Module, batch: int, seq_len: int, options: SampleOptions, generator: torch.Generator
    ) -> Samples:
        """`batch` sequences of `seq_len` real tokens, drawn on generator.device (see trainer/sampling.py)."""
