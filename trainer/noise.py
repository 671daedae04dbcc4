"""The randomness of the losses (masks, replacement tokens, Eso-LM orders), keyed by sequence.

A sequence's draws depend only on (key, its global row index, stream): the rows of a batch are cut
into fixed blocks of NOISE_BLOCK rows and block b of a stream is drawn from its own generator,
seeded by (key, stream, b). So a sequence gets the same noise whether it is trained in a
micro-batch of 2 or 32, on one process or on rank 3 of 8, under DDP or FSDP: the parallel settings
the planner picks per GPU do not change a run's losses. The key is (seed, step) in training and
(eval seed,) in evaluation, where the rows are the (window, time) pairs in window order.

Arms draw through `uniform` and `integers`, which also take a plain torch.Generator (one batch on
its own: the exact tests, the samplers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

NOISE_BLOCK = 16  # rows per generator: small enough that a micro-batch draws little it does not use
STREAMS = {"mask": 1, "keep": 2, "replace": 3, "order": 4}


def mix(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass(frozen=True)
class Noise:
    key: tuple[int, ...]
    first_row: int  # global index of the batch's first row
    device: torch.device

    def uniform(self, shape: tuple[int, ...], stream: str) -> Tensor:
        return self._rows(shape, stream, lambda g, s: torch.rand(s, generator=g, device=self.device))

    def integers(self, high: int, shape: tuple[int, ...], stream: str) -> Tensor:
        return self._rows(
            shape, stream, lambda g, s: torch.randint(0, high, s, generator=g, device=self.device)
        )

    def _rows(self, shape: tuple[int, ...], stream: str, draw: Callable) -> Tensor:
        rows, rest = shape[0], tuple(shape[1:])
        first, last = self.first_row // NOISE_BLOCK, (self.first_row + rows - 1) // NOISE_BLOCK
        if self.device.type == "meta":  # shapes only (a traced step): no values, no generator
            return draw(None, (rows, *rest))
        generator = torch.Generator(device=self.device)
        blocks = [
            draw(generator.manual_seed(mix(*self.key, STREAMS[stream], b)), (NOISE_BLOCK, *rest))
            for b in range(first, last + 1)
        ]
        start = self.first_row - first * NOISE_BLOCK
        return torch.cat(blocks)[start : start + rows]


RandomSource = Noise | torch.Generator


def uniform(source: RandomSource, shape: tuple[int, ...], device: torch.device, stream: str) -> Tensor:
    """U[0, 1) draws of `shape` whose first dimension is the batch's rows."""
    if isinstance(source, Noise):
        return source.uniform(tuple(shape), stream)
    return torch.rand(shape, generator=source, device=device)


def integers(
    source: RandomSource, high: int, shape: tuple[int, ...], device: torch.device, stream: str
) -> Tensor:
    """Uniform integers in [0, high) of `shape` whose first dimension is the batch's rows."""
    if isinstance(source, Noise):
        return source.integers(high, tuple(shape), stream)
    return torch.randint(0, high, shape, generator=source, device=device)
