"""The analytic FLOPs of scaling/flops.py against torch.utils.flop_counter on the real DiT.

On CPU, SDPA's default kernel (_scaled_dot_product_flash_attention_for_cpu) is not in the
counter's registry, so the attention products go uncounted; the math backend decomposes
attention into bmm, which is counted. It computes the full T x T square even for causal masks,
which is the `attention` convention (the `causal` one halves it by assumption).
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling.flops import ModelShape, attention_flops_per_seq, fwd_flops_per_seq
from trainer.model import DiT

SHAPES = [
    ModelShape("d64-l2", 64, 2, 4, 257, 64),
    ModelShape("d32-l1", 32, 1, 2, 101, 128),
    ModelShape("d128-l3", 128, 3, 4, 1000, 96),
    ModelShape("d256-l2", 256, 2, 4, 300, 32),
]
B = 2


def counted(shape: ModelShape, backward: bool = False, backend: SDPBackend | None = SDPBackend.MATH) -> int:
    torch.manual_seed(0)
    model = DiT(shape)
    tokens = torch.randint(0, shape.vocab, (B, shape.seq_len))
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(backend) if backend is not None else nullcontext(), counter:
        out = model(tokens, sigma=torch.ones(B))
        if backward:
            out.square().mean().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_forward_flops_match_the_attention_convention(shape):
    assert counted(shape) == pytest.approx(B * fwd_flops_per_seq(shape, "attention"), rel=0.02)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: s.name)
def test_backward_is_twice_the_forward(shape):
    assert counted(shape, backward=True) == pytest.approx(
        3 * B * fwd_flops_per_seq(shape, "attention"), rel=0.02
    )


def test_default_cpu_attention_kernel_is_invisible_to_the_counter():
    shape = SHAPES[0]
    missing = B * attention_flops_per_seq(shape)
    assert counted(shape, backend=None) == pytest.approx(
        B * fwd_flops_per_seq(shape, "attention") - missing, rel=1e-9
    )
