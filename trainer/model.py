"""The DiT backbone shared by every arm, so that FLOPs and parameter counts agree across arms.

Embedding -> n_layers x (adaLN-modulated pre-LayerNorm attention with rotary + MLP 4x GELU-tanh)
-> adaLN-modulated final LayerNorm -> untied head. The time embedding (sinusoidal features of
sigma -> MLP) drives adaLN; AR and MDLM pass sigma = 0 but keep the same weights so that the
parameter count (scaling.flops.params_total) and FLOPs are one formula for all arms.

Attention has two masks, "bidirectional" and "causal". Eso-LM's permuted causal order is the
causal mask applied to a sequence the arm has permuted, with `positions` carrying each token's
true position into the rotary embedding (so flash-attn's causal kernel serves it too).
Samplers that decode in a causal order (AR, Eso-LM) pass a KVCache: the call's tokens attend to
the cached tokens and causally to each other, and its first `commit` tokens join the cache.
Backend: `attention_backend(device, dtype)`: flash-attn when it imports and the tensors are half
precision on CUDA, torch SDPA otherwise (CPU included). Rotary runs in real arithmetic in the
activations' dtype (no complex tensors, no upcast of bf16 q and k), so torch.compile traces it.
`forward` returns float32 logits [B, T, V] whatever the autocast dtype (the samplers and the test
oracles use it); `hidden` (or `forward(..., return_hidden=True)`, which goes through wrappers
such as DDP) returns the states [B, T, d] the head reads, from which trainer/losses.py computes
the training and validation losses a chunk of tokens at a time without a [B, T, V] tensor.
Initialization follows the study's DiT: adaLN layers and the head start at zero, so a fresh
model is the identity through its blocks and outputs uniform logits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scaling.flops import MLP_RATIO, ModelShape, cond_dim, time_freq_dim

try:
    from flash_attn import flash_attn_func
except ImportError:  # CPU installs, and half-installed wheels that fail on import
    flash_attn_func = None

ATTENTION_MODES = ("bidirectional", "causal")
ROTARY_BASE = 10_000.0


def attention_backend(device: torch.device, dtype: torch.dtype) -> str:
    """The kernel `attention` uses for tensors of this device and dtype: "flash" (flash-attn) when
    it imported and they are fp16/bf16 on CUDA, else "sdpa" (torch's scaled_dot_product_attention)."""
    if flash_attn_func is not None and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return "flash"
    return "sdpa"


def attention(q: Tensor, k: Tensor, v: Tensor, mode: str) -> Tensor:
    """Multi-head attention on [B, T, H, hd] tensors (the layout flash-attn wants); returns [B, T, H, hd]."""
    causal = mode == "causal"
    if attention_backend(q.device, q.dtype) == "flash":
        return flash_attn_func(q, k, v, causal=causal)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
    )
    return out.transpose(1, 2)


class KVCache:
    """Keys and values of the tokens a sampler has committed, per block, in decoding order.

    A forward pass with the cache writes the keys and values of all its tokens after the committed
    ones, attends over both (causally: query i sees the committed tokens and new tokens <= i), then
    keeps its first `commit` tokens: Eso-LM's still-masked queries are recomputed once revealed.
    """

    def __init__(self, seq_len: int, batch: int) -> None:
        self.seq_len, self.batch = seq_len, batch
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.length = 0  # committed tokens

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of the new tokens' q, k, v [B, n, H, hd] over the cache; returns [B, n, H, hd]."""
        if layer == len(self.keys):  # first pass: buffers in the dtype autocast gives k and v
            size = (self.batch, self.seq_len, *k.shape[2:])
            self.keys.append(k.new_empty(size))
            self.values.append(v.new_empty(size))
        past, n = self.length, q.shape[1]
        keys, values = self.keys[layer][:, : past + n], self.values[layer][:, : past + n]
        keys[:, past:], values[:, past:] = k, v
        mask = None if n == 1 else torch.ones(n, past + n, dtype=torch.bool, device=q.device).tril(past)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask
        )
        return out.transpose(1, 2)


def rotary_tables(seq_len: int, head_dim: int) -> Tensor:
    """Rotary tables [seq_len, 2, head_dim] (float32), indexed by position: row 0 holds cos(a_i) at
    channels 2i and 2i+1, row 1 the signed sine (-sin(a_i) at 2i, +sin(a_i) at 2i+1), where
    a_i = position * ROTARY_BASE^(-2i / head_dim), computed in float64."""
    inv_freq = ROTARY_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = torch.stack([-angles.sin(), angles.sin()], dim=-1).flatten(-2)
    return torch.stack([cos, sin], dim=-2).float()


def apply_rotary(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [B, T, ..., hd] by rotation [B or 1, T, 2, hd] (rotary_tables):
    (x_2i, x_2i+1) -> (x_2i cos - x_2i+1 sin, x_2i+1 cos + x_2i sin) = x * cos + swap(x) * signed sin.

    Real arithmetic in x's dtype: the tables are cast to it, bf16 activations are not upcast (and no
    complex tensors, so torch.compile fuses it into one kernel). Eager on a CPU this is 2-3 passes
    over q and k where the complex multiply it replaces was about one.
    """
    cos, sin = rotation.to(x.dtype).unbind(-2)
    shape = (*cos.shape[:2], *([1] * (x.dim() - 3)), cos.shape[-1])
    swapped = x.unflatten(-1, (-1, 2)).roll(1, dims=-1).flatten(-2)  # (x_2i+1, x_2i)
    return torch.addcmul(x * cos.view(shape), swapped, sin.view(shape))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, x, 1 + scale)


class TimeEmbedding(nn.Module):
    """sigma -> 2c sinusoidal features -> Linear -> SiLU -> Linear (c-d, c = cond_dim(d) = min(128, d))."""

    freqs: Tensor  # a buffer

    def __init__(self, freq_dim: int, cond: int) -> None:
        super().__init__()
        half = freq_dim // 2
        self.register_buffer(
            "freqs", torch.exp(-math.log(10_000.0) * torch.arange(half) / half), persistent=False
        )
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond), nn.SiLU(), nn.Linear(cond, cond))

    def forward(self, sigma: Tensor) -> Tensor:
        args = sigma.float()[:, None] * self.freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, cond: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = nn.LayerNorm(d, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(d, MLP_RATIO * d), nn.GELU(approximate="tanh"), nn.Linear(MLP_RATIO * d, d)
        )
        # adaLN-Zero: shift, scale and gate start at 0, so every block starts as the identity
        self.adaln = nn.Linear(cond, 6 * d)
        nn.init.zeros_(self.adaln.weight)
        nn.init.zeros_(self.adaln.bias)

    def forward(
        self, x: Tensor, c: Tensor, rotation: Tensor, mode: str, attend: Callable | None = None
    ) -> Tensor:
        B, T, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(c)[:, None].chunk(6, dim=-1)
        qkv = self.qkv(modulate(self.norm1(x), shift1, scale1)).view(B, T, 3, self.n_heads, -1)
        q, k = apply_rotary(qkv[:, :, :2], rotation).unbind(2)
        h = attention(q, k, qkv[:, :, 2], mode) if attend is None else attend(q, k, qkv[:, :, 2])
        x = torch.addcmul(x, gate1, self.attn_out(h.reshape(B, T, d)))
        return torch.addcmul(x, gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))


class DiT(nn.Module):
    rotation: Tensor  # a buffer: the rotary tables

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.checkpoint_blocks = False  # activation checkpointing (spec.activation_checkpointing)
        self.shape = shape
        d = shape.d_model
        self.embed = nn.Embedding(shape.vocab, d)
        nn.init.kaiming_uniform_(self.embed.weight, a=math.sqrt(5))  # ~U(+-1/sqrt(d)), as the study's DiT
        cond = cond_dim(d)
        self.time = TimeEmbedding(time_freq_dim(d), cond)
        self.blocks = nn.ModuleList(Block(d, shape.n_heads, cond) for _ in range(shape.n_layers))
        self.norm_final = nn.LayerNorm(d, bias=False)
        self.adaln_final = nn.Linear(cond, 2 * d)
        self.head = nn.Linear(d, shape.vocab)
        # zero final modulation and head: uniform logits at init, as the study's DiT
        for p in (*self.adaln_final.parameters(), *self.head.parameters()):
            nn.init.zeros_(p)
        self.register_buffer("rotation", rotary_tables(shape.seq_len, shape.head_dim), persistent=False)

    def forward(
        self,
        tokens: Tensor,
        sigma: Tensor | None = None,
        mode: str = "bidirectional",
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        commit: int = 0,
        return_hidden: bool = False,
    ) -> Tensor:
        """tokens [B, T] -> float32 logits [B, T, V] (see `hidden` for the arguments).

        return_hidden: return `hidden(...)` [B, T, d] instead, without applying the head (the
        chunked losses of trainer/losses.py apply it themselves); through this flag a wrapper
        such as DistributedDataParallel sees the forward pass.
        """
        h = self.hidden(tokens, sigma, mode, positions, cache, commit)
        return h if return_hidden else self.head(h).float()

    def hidden(
        self,
        tokens: Tensor,
        sigma: Tensor | None = None,
        mode: str = "bidirectional",
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        commit: int = 0,
    ) -> Tensor:
        """tokens [B, T] -> [B, T, d]: the adaLN-modulated final LayerNorm output, the head's input.

        sigma [B]: noise level fed to adaLN (None = 0). positions [B, T]: true position of each
        token for rotary (None = 0..T-1, after the cached tokens with a cache); pass it with a
        permuted `tokens` for Eso-LM's order. cache (causal mode only): attend to its tokens too,
        then add the first `commit` tokens of this call to it.
        """
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}: choose from {', '.join(ATTENTION_MODES)}")
        B, T = tokens.shape
        past = 0 if cache is None else cache.length
        if past + T > self.shape.seq_len:
            raise ValueError(
                f"sequence of {past + T} tokens exceeds the model's seq_len {self.shape.seq_len}"
            )
        if cache is not None and mode != "causal":
            raise ValueError(
                "a KV cache needs causal attention: bidirectional outputs change with every token"
            )
        if sigma is None:
            sigma = torch.zeros(B, device=tokens.device)
        if positions is None:
            rotation = self.rotation[None, past : past + T]
        else:
            rotation = self.rotation[positions]
        c = F.silu(self.time(sigma))
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            if self.checkpoint_blocks and torch.is_grad_enabled() and cache is None:
                # keep only the block's input; its activations are recomputed in the backward
                x = checkpoint(block, x, c, rotation, mode, use_reentrant=False)
            else:
                x = block(x, c, rotation, mode, None if cache is None else functools.partial(cache.attend, i))
        if cache is not None:
            cache.length += commit
        shift, scale = self.adaln_final(c)[:, None].chunk(2, dim=-1)
        return modulate(self.norm_final(x), shift, scale)
