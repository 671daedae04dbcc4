"""Measuring samplers for the speed-quality frontier (`scaling pareto`; docs/methods.md).

- Throughput: generated tokens per second of `arm.sample` at a batch size and step count, timed
  after one untimed warm-up batch, with device synchronization, excluding scoring.
- Quality: generative perplexity, exp(mean NLL) of tokens 1..T-1 of every sample under an AR
  judge whose context is the sample itself.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from scaling.arms import arm_info
from trainer import accelerator
from trainer.arms import Arm
from trainer.arms.ar import Autoregressive
from trainer.model import DiT
from trainer.sampling import SampleOptions


@dataclass(frozen=True)
class Measurement:
    tokens: torch.Tensor  # [samples, T] on the CPU
    tokens_per_s: float
    seconds: float  # timed sampling (warm-up excluded)
    nfe: float  # model evaluations per sequence


def measure_sampling(
    arm: Arm,
    model: torch.nn.Module,
    seq_len: int,
    options: SampleOptions,
    batch: int,
    samples: int,
    seed: int,
    device: torch.device,
    precision: AbstractContextManager,
) -> Measurement:
    """ceil(samples / batch) timed batches after one untimed warm-up batch; throughput = generated
    tokens / timed seconds. `precision` is the autocast context the model was trained under."""
    generator = torch.Generator(device=accelerator.placement(device)).manual_seed(seed)
    n_batches = max(1, -(-samples // batch))
    outputs, seconds, nfe = [], 0.0, 0.0
    with torch.no_grad(), precision:
        arm.sample(model, batch, seq_len, options, generator)  # warm-up: allocator, kernels, caches
        for _ in range(n_batches):
            accelerator.synchronize(device)
            start = time.perf_counter()
            out = arm.sample(model, batch, seq_len, options, generator)
            accelerator.synchronize(device)
            seconds += time.perf_counter() - start
            outputs.append(out.tokens.cpu())
            nfe += out.nfe / n_batches
    tokens = torch.cat(outputs)[:samples]
    return Measurement(tokens, n_batches * batch * seq_len / seconds, seconds, nfe)


def judge_nll(
    judge: DiT,
    tokens: torch.Tensor,
    batch: int,
    device: torch.device,
    precision: AbstractContextManager,
) -> float:
    """Mean NLL (nats) of tokens 1..T-1 of every sample under the AR judge (its context: the sample)."""
    scorer = Autoregressive(arm_info("ar"), judge.shape.vocab)
    total = 0.0
    with torch.no_grad(), precision:
        for chunk in tokens.split(batch):
            total += float(scorer.token_nll(judge, chunk.to(accelerator.placement(device))).double().sum())
    return total / (tokens.shape[0] * (tokens.shape[1] - 1))
