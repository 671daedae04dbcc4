"""The DiT backbone: parameter count, adaLN-Zero, attention masks and backend, rotary, dtypes,
hidden states, torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaling.flops import ModelShape, params_total
from trainer import model as model_module
from trainer.arms import get_arm
from trainer.model import DiT, apply_rotary, attention, attention_backend, flash_attn_func, rotary_tables

TINY = ModelShape("d16-l1", 16, 1, 2, 257, 32)
SMALL = ModelShape("d64-l2", 64, 2, 4, 101, 48)


def randomized(shape: ModelShape, seed: int, skip: str = "") -> DiT:
    """A DiT with random parameters (except those whose name contains `skip`, if given)."""
    torch.manual_seed(seed)
    model = DiT(shape)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not (skip and skip in name):
                p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize(
    "shape",
    [
        TINY,
        SMALL,
        ModelShape("odd", 48, 3, 3, 7, 8),
        ModelShape("wide-cond", 256, 1, 4, 300, 16),
    ],
    ids=lambda s: s.name,
)
def test_parameter_count_matches_the_flops_accounting(shape):
    assert sum(p.numel() for p in DiT(shape).parameters()) == params_total(shape)


@pytest.mark.parametrize(
    "shape",
    [ModelShape("6M", 256, 6, 4, 32001, 2048), ModelShape("2121M", 2176, 28, 17, 32001, 2048)],
    ids=lambda s: s.name,
)
def test_parameter_count_of_paper_shapes_on_the_meta_device(shape):
    with torch.device("meta"):
        model = DiT(shape)
    assert sum(p.numel() for p in model.parameters()) == params_total(shape)


def test_only_parameters_are_saved_with_the_model():
    # rotary tables and time frequencies are rebuilt, not checkpointed
    model = DiT(TINY)
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}


def test_fresh_model_gives_uniform_logits_and_adaln_zero_makes_it_time_independent():
    tokens = torch.randint(0, TINY.vocab, (3, TINY.seq_len))
    fresh = DiT(TINY)
    assert torch.equal(fresh(tokens), torch.zeros(3, TINY.seq_len, TINY.vocab))
    # everything random but the zero-initialized adaLN layers: sigma cannot reach the output
    model = randomized(TINY, seed=1, skip="adaln")
    a, b = model(tokens, sigma=torch.zeros(3)), model(tokens, sigma=torch.tensor([0.5, 2.0, 7.0]))
    assert a.abs().max() > 0.1
    assert torch.equal(a, b)
    # once adaLN is trained, it does
    model = randomized(TINY, seed=1)
    assert not torch.allclose(model(tokens, sigma=torch.zeros(3)), model(tokens, sigma=torch.full((3,), 2.0)))


def test_causal_mode_is_causal_and_bidirectional_mode_is_not():
    model = randomized(SMALL, seed=2)
    T = 12
    tokens = torch.randint(0, SMALL.vocab, (1, T))
    for mode in ("causal", "bidirectional"):
        base = model(tokens, mode=mode)
        for j in range(T):
            changed = tokens.clone()
            changed[0, j] = (tokens[0, j] + 1) % SMALL.vocab
            moved = (model(changed, mode=mode) - base).abs().amax(dim=-1)[0] > 1e-5
            expected = torch.arange(T) >= j if mode == "causal" else torch.ones(T, dtype=torch.bool)
            assert torch.equal(moved, expected), (mode, j)


def test_attention_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(3)
    B, T, H, hd = 2, 7, 3, 8
    q, k, v = (torch.randn(B, T, H, hd, generator=g, dtype=torch.float64) for _ in range(3))
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(hd)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for mode, masked in [("bidirectional", None), ("causal", future)]:
        s = scores if masked is None else scores.masked_fill(masked, float("-inf"))
        want = torch.einsum("bhij,bjhd->bihd", s.softmax(-1), v)
        assert torch.allclose(attention(q, k, v, mode), want, atol=1e-12)


def test_rotary_scores_depend_only_on_relative_position():
    hd, T = 8, 20
    rotation = rotary_tables(T, hd)
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(hd, generator=g), torch.randn(hd, generator=g)

    def score(i, j):
        qi = apply_rotary(q.view(1, 1, 1, hd), rotation[None, [i]])
        kj = apply_rotary(k.view(1, 1, 1, hd), rotation[None, [j]])
        return float((qi * kj).sum())

    assert score(3, 1) == pytest.approx(score(15, 13), abs=1e-5)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def rotate_reference(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """float64: pairs (2i, 2i+1) of x [T, hd] as complex numbers times exp(i pos base^(-2i/hd))."""
    hd = x.shape[-1]
    angles = positions.double()[:, None] * 10_000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def test_rotary_rotates_channel_pairs_as_checkpoints_expect_in_the_input_dtype():
    T, hd = 2048, 64
    rotation = rotary_tables(T, hd)
    x = torch.randn(T, hd, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    want = rotate_reference(x, torch.arange(T))
    # measured max errors for |x| up to 4.8: 1.4e-7 (fp64 input, fp32 tables), 3.4e-7 (fp32), 0.020
    # (bf16, whose spacing at 4 is 0.031; rotating in fp32 and rounding once gave 0.015)
    for dtype, tol in [(torch.float64, 1e-6), (torch.float32, 3e-6), (torch.bfloat16, 0.04)]:
        got = apply_rotary(x.to(dtype)[None, :, None], rotation[None])[0, :, 0]
        assert got.dtype == dtype
        assert (got.double() - rotate_reference(x.to(dtype), torch.arange(T))).abs().max() < tol, dtype
    assert (apply_rotary(x.float()[None], rotation[None]).double() - want).abs().max() < 3e-6


def test_bf16_rotary_never_makes_a_float32_copy_of_the_activations():
    x = torch.randn(2, 16, 2, 3, 8).to(torch.bfloat16)
    made = []

    class Record(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                made.append((func, out.dtype, out.numel()))
            return out

    with Record():
        out = apply_rotary(x, rotary_tables(16, 8)[None])
    assert out.dtype == torch.bfloat16
    assert not [m for m in made if m[1] != torch.bfloat16 and m[2] >= x.numel()], made


def test_attention_backend_is_flash_only_for_half_precision_on_cuda_with_flash_attn(monkeypatch):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr(model_module, "flash_attn_func", lambda q, k, v, causal: None)
    assert attention_backend(cuda, torch.bfloat16) == "flash"
    assert attention_backend(cuda, torch.float16) == "flash"
    assert attention_backend(cuda, torch.float32) == "sdpa"
    assert attention_backend(cpu, torch.bfloat16) == "sdpa"
    monkeypatch.setattr(model_module, "flash_attn_func", None)  # flash-attn did not import
    assert attention_backend(cuda, torch.bfloat16) == "sdpa"


def test_hidden_states_are_what_the_head_reads():
    model = randomized(SMALL, seed=9)
    tokens = torch.randint(0, SMALL.vocab, (2, 10))
    sigma = torch.tensor([0.3, 2.0])
    h = model.hidden(tokens, sigma, mode="causal")
    assert h.shape == (2, 10, SMALL.d_model)
    assert torch.equal(model(tokens, sigma, mode="causal", return_hidden=True), h)
    assert torch.equal(model(tokens, sigma, mode="causal"), model.head(h).float())


def test_forward_compiles_without_graph_breaks_and_arms_see_through_the_wrapper():
    torch._dynamo.reset()
    model = randomized(TINY, seed=10)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a break raises
    tokens = torch.randint(0, TINY.vocab - 1, (2, TINY.seq_len))
    order = torch.rand(2, TINY.seq_len).argsort(dim=1)
    for kwargs in [
        {},
        {"mode": "causal", "positions": order},
        {"sigma": torch.ones(2), "return_hidden": True},
    ]:
        assert torch.equal(compiled(tokens, **kwargs), model(tokens, **kwargs))
    arm = get_arm("eso", TINY.vocab)
    assert arm.chunked(compiled)
    t = arm.sample_t(2, 0.3)
    losses = [arm.training_loss(m, tokens, t, torch.Generator().manual_seed(11)) for m in (compiled, model)]
    assert torch.equal(losses[0], losses[1])


def test_default_positions_are_the_identity_and_sequences_shorter_than_seq_len_work():
    model = randomized(SMALL, seed=5)
    tokens = torch.randint(0, SMALL.vocab, (2, 10))
    out = model(tokens)
    assert out.shape == (2, 10, SMALL.vocab) and out.dtype == torch.float32
    assert torch.allclose(out, model(tokens, positions=torch.arange(10).expand(2, -1)))
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, SMALL.seq_len + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="attention mode"):
        model(tokens, mode="permuted")


def test_bf16_autocast_on_cpu_returns_float32_logits_close_to_fp32():
    model = randomized(SMALL, seed=6)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.3)  # keep logits O(1) so that bf16 rounding is comparable
    tokens = torch.randint(0, SMALL.vocab, (2, 16))
    ref = model(tokens, sigma=torch.ones(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens, sigma=torch.ones(2))
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    loss = F.cross_entropy(out.flatten(0, 1), tokens.flatten())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.skipif(
    flash_attn_func is None or not torch.cuda.is_available(), reason="flash-attn and CUDA not available"
)
def test_flash_attention_agrees_with_sdpa_on_cuda():
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v = (torch.randn(2, 64, 4, 32, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    for mode in ("bidirectional", "causal"):
        flash = attention(q, k, v, mode)
        sdpa = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=mode == "causal"
        ).transpose(1, 2)
        assert torch.allclose(flash.float(), sdpa.float(), atol=2e-2)
