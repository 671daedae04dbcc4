"""How a run's model is spread over its processes: DDP or full sharding (FSDP2's `fully_shard`).

    forward = wrap(model, spec.sharding, env, place, compute_dtype)   # before the optimizer is made
    with (nullcontext() if last else no_gradient_sync(forward)): loss.backward()

- One process: the model itself, whatever spec.sharding says (there is nothing to shard).
- `ddp`: DistributedDataParallel around the model; every process holds all the states.
- `fsdp`: every transformer block, then the root (embeddings, time MLP, final norm, head), becomes
  an FSDP unit; `model` is sharded in place, its parameters become DTensors holding 1/world of each
  tensor, so the optimizer must be made over them after `wrap`. Under bf16 the blocks are gathered
  in bf16 and their gradients reduced in fp32; the root stays fp32 and autocast casts it as under
  DDP, so the head's gradient, summed over loss chunks (trainer/losses.py), adds up in fp32.
- Gradient accumulation: `no_gradient_sync` is DDP's no_sync. FSDP reduce-scatters after every
  micro-batch instead: without that sync it would keep every parameter's unsharded fp32 gradient
  (4 bytes per parameter) until the last one, the memory a run is sharded to save and which
  scaling/memory.py does not count.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from trainer.distributed import DistEnv
from trainer.model import DiT


def wrap(
    model: DiT, sharding: str, env: DistEnv, place: torch.device, compute_dtype: torch.dtype
) -> nn.Module:
    """The module that runs the training forward (module docstring); FSDP shards `model` in place."""
    if not env.enabled:
        return model
    if sharding == "fsdp":
        blocks = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
        for block in model.blocks:
            fully_shard(block, mp_policy=blocks)
        fully_shard(model)
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[place.index] if place.type == "cuda" else None,
        gradient_as_bucket_view=True,  # gradients live in the buckets: no copy per step
        broadcast_buffers=False,  # the model's buffers (rotary tables) are constants
    )


def _unwrapped(module: nn.Module) -> nn.Module:
    inner = getattr(module, "_orig_mod", module)  # under torch.compile's wrapper
    return inner if isinstance(inner, nn.Module) else module


def sharded(module: nn.Module) -> bool:
    """Whether `module` (or the module under its torch.compile wrapper) is fully sharded: then every
    process must run every forward pass, whose all-gathers need them all."""
    return isinstance(_unwrapped(module), FSDPModule)


def no_gradient_sync(module: nn.Module) -> AbstractContextManager:
    """A backward inside this context accumulates gradients locally, without communication (DDP;
    FSDP syncs every micro-batch: module docstring)."""
    inner = _unwrapped(module)
    if isinstance(inner, nn.parallel.DistributedDataParallel):
        return inner.no_sync()
    return nullcontext()


def full(x: Tensor) -> Tensor:
    """A plain tensor: the whole of a DTensor (clip_grad_norm_ over sharded gradients returns a
    replicated one), other tensors unchanged."""
    return x.full_tensor() if isinstance(x, DTensor) else x
