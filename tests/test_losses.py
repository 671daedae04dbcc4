"""The chunked losses (trainer/losses.py) give the full-logits path's numbers and gradients on a
real DiT in float32, for any chunk size, and never keep more than a chunk of logits for backward."""

from __future__ import annotations

import pytest
import torch

from scaling.arms import ARMS
from scaling.flops import ModelShape
from trainer.arms import get_arm
from trainer.losses import CHUNK_TOKENS, backbone, map_chunks
from trainer.model import DiT

V, T, B = 23, 20, 3
SHAPE = ModelShape("t", 32, 2, 2, V, T)


def randomized_dit(seed: int = 0, scale: float = 0.3) -> DiT:
    torch.manual_seed(seed)
    model = DiT(SHAPE)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)
    return model


def batch(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.randint(0, V - 1, (B, T), generator=torch.Generator().manual_seed(1))
    return x, get_arm(name, V).sample_t(B, 0.3)


def loss_and_grads(name: str, chunk: int, model: DiT, x, t) -> tuple[torch.Tensor, list[torch.Tensor]]:
    arm = get_arm(name, V)
    arm.chunk_tokens = chunk
    model.zero_grad(set_to_none=True)
    loss = arm.training_loss(model, x, t, torch.Generator().manual_seed(2))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def validation(name: str, chunk: int, model: DiT, x, t) -> torch.Tensor:
    arm = get_arm(name, V)
    arm.chunk_tokens = chunk
    with torch.no_grad():
        return arm.validation_loss(model, x, t, torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", ARMS)
def test_chunked_losses_and_gradients_equal_the_full_logits_path(name):
    model = randomized_dit()
    x, t = batch(name)
    ref_loss, ref_grads = loss_and_grads(name, 0, model, x, t)  # 0: the full-logits path
    ref_val = validation(name, 0, model, x, t)
    assert ref_loss > 0 and (ref_val > 0).all()
    # one token per chunk, chunks that do not divide the B T (or B (T - 1)) tokens, one chunk
    for chunk in (1, 7, 16, CHUNK_TOKENS):
        loss, grads = loss_and_grads(name, chunk, model, x, t)
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6), chunk
        for got, want in zip(grads, ref_grads, strict=True):
            # measured: at most 2e-6 of the gradient's largest entry (the head's gradient sums chunks)
            assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()), chunk
        torch.testing.assert_close(validation(name, chunk, model, x, t), ref_val, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["mdlm-elbo", "eso"])
def test_rows_fully_masked_or_fully_visible(name):
    model = randomized_dit(seed=4)
    arm = get_arm(name, V)
    x, _ = batch(name)
    masked = torch.zeros(B, T, dtype=torch.bool)
    masked[0] = True  # every token masked: Eso-LM's order is then one random permutation
    masked[2, ::3] = True  # row 1 stays fully visible
    z = torch.where(masked, arm.mask_id, x)
    out = {}
    for chunk in (0, 1, 13):
        arm.chunk_tokens = chunk
        model.zero_grad(set_to_none=True)
        nll = arm.nll(model, x, z, masked, torch.Generator().manual_seed(5)) * masked
        nll.sum().backward()
        out[chunk] = nll.detach(), model.embed.weight.grad.clone()
    assert (out[0][0][0] > 0).all() and (out[0][0][1] == 0).all()
    for chunk in (1, 13):
        torch.testing.assert_close(out[chunk][0], out[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(out[chunk][1], out[0][1], rtol=1e-5, atol=1e-7)


def largest_saved_logits(name: str, chunk: int) -> int:
    """Elements of the largest logits-shaped tensor ([..., V] or [..., V - 1], at least 2-d, not
    a view of a parameter such as the head's weight) that autograd saves for backward during one
    training loss."""
    model = randomized_dit(seed=6)
    x, t = batch(name)
    arm = get_arm(name, V)
    arm.chunk_tokens = chunk
    sizes = [0]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(tensor):
        logits_shaped = tensor.dim() >= 2 and tensor.shape[-1] in (V - 1, V)
        if logits_shaped and tensor.untyped_storage().data_ptr() not in params:
            sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = arm.training_loss(model, x, t, torch.Generator().manual_seed(7))
    loss.backward()
    return max(sizes)


@pytest.mark.parametrize("name", ARMS)
def test_backward_keeps_at_most_one_chunk_of_logits(name):
    chunk = 8
    assert largest_saved_logits(name, 0) >= B * (T - 1) * (V - 1)  # the full path: [B, T, V]
    # the chunked path: the last chunk's logits (the others are recomputed in backward)
    assert 0 < largest_saved_logits(name, chunk) <= chunk * V


def test_map_chunks_keeps_token_order_and_shapes():
    head = torch.nn.Linear(4, 6)
    h = torch.randn(2, 5, 4)
    target = torch.arange(10).view(2, 5) % 5
    want = torch.nn.functional.cross_entropy(
        head(h)[..., :5].flatten(0, 1), target.flatten(), reduction="none"
    )
    for chunk in (1, 3, 10, 11):

        def fn(logits, tgt):
            return torch.nn.functional.cross_entropy(logits, tgt, reduction="none")

        torch.testing.assert_close(map_chunks(fn, h, head, 5, (target,), chunk), want)
    with pytest.raises(ValueError, match="chunk_tokens"):
        map_chunks(fn, h, head, 5, (target,), 0)


def test_bf16_autocast_chunked_loss_is_close_to_fp32_and_trains():
    model = randomized_dit(seed=8, scale=0.1)
    for name in ("mdlm-ce", "duo"):
        x, t = batch(name)
        ref, _ = loss_and_grads(name, 0, model, x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            arm = get_arm(name, V)
            arm.chunk_tokens = 7
            loss = arm.training_loss(model, x, t, torch.Generator().manual_seed(2))
        assert loss.dtype == torch.float32
        assert float(loss.detach()) == pytest.approx(float(ref), rel=2e-2)
        model.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_path_is_chosen_by_the_model():
    model = randomized_dit()
    arm = get_arm("mdlm-ce", V)
    assert backbone(model) is model and arm.chunked(model)
    assert backbone(torch.nn.Linear(2, 2)) is None  # an oracle: the full-logits path
    arm.chunk_tokens = 0
    assert not arm.chunked(model)
    with pytest.raises(ValueError, match="head"):
        get_arm("mdlm-ce", V + 1).chunked(model)


def test_bf16_head_gradient_of_many_chunks_adds_up_in_float32():
    """The head's weight is cast to bf16 once; each chunk's gradient goes back to the float32
    weight, so 57-60 one-token chunks are as accurate as the full path (measured: 6.3e-3 against
    5.6e-3 for mdlm-ce, 3.9e-3 against 3.8e-3 for duo; summing the chunks in bf16 gave 2.2e-2, 8.6e-3)."""
    model = randomized_dit(seed=8, scale=0.1)

    def head_grad(name: str, chunk: int, bf16: bool) -> torch.Tensor:
        x, t = batch(name)
        arm = get_arm(name, V)
        arm.chunk_tokens = chunk
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = arm.training_loss(model, x, t, torch.Generator().manual_seed(2))
        loss.backward()
        return model.head.weight.grad.clone()

    for name in ("mdlm-ce", "duo"):
        exact = head_grad(name, 0, bf16=False)
        full, chunked = (float((head_grad(name, c, True) - exact).norm() / exact.norm()) for c in (0, 1))
        assert chunked < 1.5 * full, (name, chunked, full)
