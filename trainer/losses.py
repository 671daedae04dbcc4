"""Per-token losses from the backbone's hidden states, a chunk of tokens at a time.

The study's head maps d = 768 to V = 32,001 logits: one float32 [B, T, V] tensor of a 16 x 2048
batch is 4.2 GB, and the loss on full logits keeps several (the head's output, its float32 copy,
log-softmax, gradients; Duo's closed form a few more). Here the backbone stops at the hidden
states h [B, T, d] (DiT.forward(..., return_hidden=True)) and `map_chunks` walks the flattened
tokens in chunks of `chunk_tokens`:

- a chunk's logits are the head applied to its hidden states in the autocast dtype (bf16 on GPU;
  the head's weight is cast once for all chunks, and each chunk's weight gradient is handed back
  in float32, so that they add up in float32), over the real tokens only: the head's last row, [MASK]'s, is left out of the matmul, which
  gives the softmax exactly what the -inf [MASK] logit of the full path gives (no mass), with one
  row fewer to compute. The head runs on every position (masked or not), as the FLOP count has it;
- the softmax algebra of the chunk runs in float32 and returns a few numbers per token
  (`cross_entropy`: the NLL of the target; Duo: the sum over the vocabulary and two log-probs);
- every chunk but the last runs under torch.utils.checkpoint, so backward recomputes its logits
  instead of keeping them: at most one chunk's [n, V] tensors are alive at a time. The last
  chunk is not recomputed: its tensors are the first the backward pass uses (a loss that fits in
  one chunk, as on every CPU sweep, costs no recomputation at all).

Chunks are independent and their outputs are concatenated in token order, so the per-token values
do not depend on the chunk size except through the rounding of the head's matmul. CHUNK_TOKENS =
2048 makes a chunk's float32 logits 262 MB at V = 32,001 (2048 x 32,000 x 4 bytes), a few of them
alive at the peak: large enough that the chunk's matmul (2048 x 768 x 32,000) keeps a GPU busy,
small next to the backbone's activations. An arm's `chunk_tokens` sets it (0: the full-logits path).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

CHUNK_TOKENS = 2048  # tokens per chunk: float32 logits of 2048 x 32,000 real tokens = 262 MB


class Backbone(Protocol):
    """What the chunked losses need of a model: hidden states and the head that maps them."""

    head: nn.Linear

    def hidden(self, *args: Any, **kwargs: Any) -> Tensor: ...


def backbone(model: nn.Module) -> Backbone | None:
    """The module under `model` (through DistributedDataParallel and torch.compile wrappers) when it
    gives hidden states (`hidden`, `head`, and forward's `return_hidden`), else None (oracles)."""
    core: Any = model
    while True:
        if isinstance(core, nn.parallel.DistributedDataParallel):
            core = core.module
        elif isinstance(getattr(core, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            core = core._orig_mod
        else:
            break
    if callable(getattr(core, "hidden", None)) and isinstance(getattr(core, "head", None), nn.Linear):
        return core
    return None


def head_of(model: nn.Module) -> nn.Linear:
    core = backbone(model)
    if core is None:
        raise TypeError(f"{type(model).__name__} gives no hidden states: the chunked loss needs a DiT")
    return core.head


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """[n]: -log softmax(logits)[target] for logits [n, K] (float32) and target [n]."""
    return F.cross_entropy(logits, target, reduction="none")


class _Lowered(torch.autograd.Function):
    """A chunk's use of `low`, the head's weight cast once to the autocast dtype: the forward is `low`
    itself (no copy per chunk), the backward hands the chunk's gradient to the float32 weight, so
    the chunks' gradients add up in float32 (used directly, `low` would collect them in bf16)."""

    @staticmethod
    def forward(ctx, weight: Tensor, low: Tensor) -> Tensor:
        ctx.dtype = weight.dtype
        return low.view_as(low)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.to(ctx.dtype), None


def _chunk(
    fn: Callable[..., Tensor],
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    low_weight: Tensor | None,
    low_bias: Tensor | None,
    *per_token: Tensor,
) -> Tensor:
    if low_weight is not None:  # autocast: the head in its dtype, cast once for all chunks
        weight = _Lowered.apply(weight, low_weight)
        bias = None if bias is None else _Lowered.apply(bias, low_bias)
    logits = F.linear(h, weight, bias).float()
    return fn(logits, *per_token)


def map_chunks(
    fn: Callable[..., Tensor],
    h: Tensor,
    head: nn.Linear,
    n_real: int,
    per_token: tuple[Tensor, ...],
    chunk_tokens: int = CHUNK_TOKENS,
) -> Tensor:
    """fn(logits, *per_token) over chunks of tokens, concatenated: [N, ...] for N = h[..., 0].numel().

    h [..., d]: hidden states; head: the model's head, whose first n_real rows give the logits
    [n, n_real] (float32) of a chunk of n tokens; per_token: tensors of h's leading shape (targets,
    noisy tokens, per-token constants), chunked alongside. See the module docstring.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    weight = head.weight[:n_real]
    bias = None if head.bias is None else head.bias[:n_real]
    low_weight = low_bias = None
    device = h.device.type
    if (
        torch.amp.is_autocast_available(device)
        and torch.is_autocast_enabled(device)
        and torch.get_autocast_dtype(device) != weight.dtype
    ):
        with torch.no_grad():
            low_weight = weight.to(torch.get_autocast_dtype(device))
            low_bias = None if bias is None else bias.to(low_weight.dtype)
    hs = h.reshape(-1, h.shape[-1]).split(chunk_tokens)
    rest = [p.reshape(-1).split(chunk_tokens) for p in per_token]
    recompute = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    step = functools.partial(_chunk, fn)
    outs = []
    for i, hc in enumerate(hs):
        args = (hc, weight, bias, low_weight, low_bias, *(r[i] for r in rest))
        if recompute and i < len(hs) - 1:
            outs.append(checkpoint(step, *args, use_reentrant=False, preserve_rng_state=False))
        else:
            outs.append(step(*args))
    return torch.cat(outs)


def token_cross_entropy(
    model: nn.Module, tokens: Tensor, target: Tensor, n_real: int, chunk_tokens: int, **forward
) -> Tensor:
    """[B, T]: -log p(target | tokens) over the first n_real ids, from `model`'s hidden states.

    model: a module `backbone` accepts (maybe wrapped: the forward pass goes through the wrapper);
    forward: DiT.forward's keyword arguments (sigma, mode, positions)."""
    h = model(tokens, return_hidden=True, **forward)
    head = head_of(model)
    return map_chunks(cross_entropy, h, head, n_real, (target,), chunk_tokens).view(target.shape)
