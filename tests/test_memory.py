"""The memory model (scaling/memory.py) against what autograd really keeps: saved-tensor hooks on
the real model and arms, on the CPU, for 4 shapes x 5 arms x 2 precisions; the planner's choices."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

from scaling.arms import ARMS
from scaling.flops import ModelShape, block_params, params_total
from scaling.ladder import load_ladder
from scaling.memory import activation_bytes, choose, estimate
from trainer.arms import get_arm
from trainer.model import DiT
from trainer.noise import Noise

SHAPES = [  # d, layers, heads, vocab (with [MASK]), seq_len, micro-batch
    (
        128,
        2,
        4,
        257,
        128,
        5,
    ),  # tokens per micro-batch must not equal a weight dimension (hooks tell them apart by shape)
    (256, 3, 4, 2049, 128, 4),
    (192, 2, 3, 1025, 64, 8),
    (384, 2, 6, 513, 128, 2),
]


def saved_bytes(model: torch.nn.Module, arm_name: str, micro: int, precision: str) -> int:
    """Bytes of the tensors autograd saves for the backward of one training loss, each storage
    counted once; the parameters and the bf16 copies autocast makes of them are states, not
    activations (the model counts those apart)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {tuple(p.shape) for p in model.parameters()} | {
        tuple(p.shape[::-1]) for p in model.parameters()
    }
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        weight_copy = t.dtype == torch.bfloat16 and tuple(t.shape) in weight_shapes
        if ptr not in params and not weight_copy:
            saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    shape = model.shape
    arm = get_arm(arm_name, shape.vocab)
    x = torch.randint(0, shape.vocab - 1, (micro, shape.seq_len), generator=torch.Generator().manual_seed(0))
    t = arm.sample_t(micro, 0.3)
    with (
        saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"),
    ):
        arm.training_loss(model, x, t, Noise((0, 0), 0, torch.device("cpu")))
    return sum(saved.values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("d, layers, heads, vocab, seq_len, micro", SHAPES)
def test_activation_estimate_is_within_10_percent_of_the_saved_tensors(
    d, layers, heads, vocab, seq_len, micro, precision
):
    shape = ModelShape(f"d{d}", d, layers, heads, vocab, seq_len)
    model = DiT(shape)
    for arm in ARMS:
        measured = saved_bytes(model, arm, micro, precision)
        estimated = activation_bytes(shape, arm, micro, precision)
        assert estimated == pytest.approx(measured, rel=0.10), (arm, measured, estimated)


def test_checkpointing_keeps_only_the_blocks_inputs():
    shape = ModelShape("d256", 256, 4, 4, 513, 128)
    model = DiT(shape)
    full = saved_bytes(model, "mdlm-ce", 4, "fp32")
    model.checkpoint_blocks = True
    kept = saved_bytes(model, "mdlm-ce", 4, "fp32")
    one_block = activation_bytes(shape, "mdlm-ce", 4, "fp32", checkpointing=True) - activation_bytes(
        ModelShape("d256", 256, 0 + 1, 4, 513, 128), "mdlm-ce", 4, "fp32", checkpointing=True
    )  # the estimate of the kept part: L x the fp32 residual stream
    assert kept < full / 3
    estimated = (
        activation_bytes(shape, "mdlm-ce", 4, "fp32", checkpointing=True) - (88.5 * 256 + 4 * 4) * 4 * 128
    )  # less the one block alive in its own backward, which hooks do not see at once
    assert estimated == pytest.approx(kept, rel=0.10) and one_block > 0


def test_states_and_sharding():
    shape = ModelShape("x", 1024, 16, 16, 32001, 2048)
    P = params_total(shape)
    ddp = estimate(shape, "mdlm-ce", 1, "bf16", world=8, sharding="ddp")
    fsdp = estimate(shape, "mdlm-ce", 1, "bf16", world=8, sharding="fsdp")
    assert ddp.states == pytest.approx(18 * P)  # 16 bytes of fp32 states + the bf16 copy
    root = P - 16 * block_params(
        1024
    )  # embedding, time MLP, final layer: gathered in fp32, and their gradient
    assert fsdp.states == pytest.approx(
        16 * P / 8 + 8 * root + 2 * 2 * block_params(1024)
    )  # + two blocks in bf16
    assert estimate(shape, "mdlm-ce", 8, "bf16").activations == pytest.approx(
        8 * estimate(shape, "mdlm-ce", 1, "bf16").activations, rel=0.15
    )


def test_every_paper_run_fits_an_80_gb_card_with_the_largest_micro_batch_that_does():
    for spec in load_ladder("paper"):
        shape = spec.with_data(32001, 2048)
        gpus = 1 if params_total(shape) <= 1e8 else 4 if params_total(shape) <= 5e8 else 8
        for arm in ARMS:
            p = choose(shape, arm, 256, gpus, 80.0)
            assert p.fits and p.gb_per_gpu <= 0.9 * 80, (spec.name, arm, p)
            assert p.micro * p.accum * gpus == 256
            if p.micro < 256 // gpus:  # the next larger divisor would not fit
                bigger = next(m for m in range(p.micro + 1, 256 // gpus + 1) if (256 // gpus) % m == 0)
                assert estimate(shape, arm, bigger, "bf16", gpus, p.sharding, p.checkpointing).gb > 72


def test_sharding_only_when_ddp_states_do_not_fit_and_checkpointing_to_reach_a_useful_micro_batch():
    shape = ModelShape("big", 2176, 30, 17, 32001, 2048)  # 2.2e9 parameters: 40 GB of DDP states
    roomy, tight, small = (choose(shape, "duo", 256, 8, gb) for gb in (80.0, 40.0, 8.0))
    assert roomy.sharding == "ddp" and roomy.fits and roomy.micro >= 4
    plain = choose(shape, "duo", 256, 8, 80.0)
    assert plain.checkpointing  # without it the micro-batch would be 1: the GPU would idle
    assert tight.sharding == "fsdp" and tight.fits  # DDP's 18 bytes per parameter alone exceed 36 GB
    assert not small.fits
    mid = ModelShape("113M", 768, 12, 12, 32001, 2048)
    assert choose(mid, "mdlm-ce", 256, 1, 80.0) == choose(mid, "mdlm-ce", 256, 1, 80.0)
    assert not choose(mid, "mdlm-ce", 256, 1, 80.0).checkpointing  # fits at micro 32 without it
