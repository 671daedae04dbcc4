"""Bytes per GPU of a training run: what the planner sizes micro-batches, activation checkpointing
and sharding by (docs/methods.md, "Memory per GPU").

    estimate(shape, arm, micro=16, precision="bf16", world=8, sharding="ddp", checkpointing=False)

- States: fp32 weights, fp32 gradients and AdamW's two fp32 moments, 16 bytes per parameter, all of
  it on every GPU under DDP and 1/world of it under full sharding (FSDP); under bf16 autocast a
  bf16 copy of the weights (2 bytes per parameter) lives from the forward to the backward (FSDP:
  the gathered copy of the blocks in flight, two blocks'). FSDP2 does not reshard its root unit
  (embedding, time MLP, final layer and head, in fp32) after the forward, and reduces its
  gradient only when the whole backward is done: 8 bytes per root parameter on every GPU.
- Activations: what autograd keeps for the backward of one micro-batch, in bytes per token,
  measured with saved-tensor hooks on these DiT blocks (tests/test_memory.py measures them again):
  per block ACT_PER_LAYER[precision] x d (+ 4 bytes per head for attention's log-sum-exp), plus
  ACT_OUTSIDE[precision] x d for the embedding, the final norm and the hidden states kept by the
  chunked loss, plus the loss chunk the backward starts from: min(tokens, chunk) x V x
  LOSS_PER_VOCAB[arm family] (Duo's closed form keeps about twice MDLM's), plus under bf16 the
  head's bf16 copy (2 d V bytes). With activation checkpointing a block keeps only its input (the
  fp32 residual stream, 4 d bytes per token) and one block's activations are alive in its backward.
- Transients: the backward's gradient of the largest activation and a loss chunk's fp32 logits,
  their gradient and softmax (3 x 4 x chunk x V bytes), plus ALLOCATOR_SLACK of everything for the
  caching allocator's fragmentation, plus CUDA_CONTEXT_GB for the context, cuBLAS and NCCL.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.arms import arm_info
from scaling.flops import ModelShape, block_params, params_total
from scaling.spec import SHARDINGS

GB = 1e9
STATE_BYTES_PER_PARAM = 16  # fp32 weight + fp32 gradient + AdamW exp_avg + exp_avg_sq
BF16_COPY_BYTES_PER_PARAM = 2
FSDP_ROOT_BYTES_PER_PARAM = 8  # the root unit's gathered fp32 weight and unsharded fp32 gradient
ACT_PER_LAYER = {"fp32": 88.5, "bf16": 52.5}  # x d bytes per token per block (saved-tensor hooks)
ACT_OUTSIDE = {"fp32": 16.0, "bf16": 14.0}  # x d bytes per token outside the blocks
LOSS_PER_VOCAB = {  # bytes per token per vocabulary id of the loss chunk kept for the backward
    ("fp32", "duo"): 7.8,
    ("bf16", "duo"): 8.2,
    ("fp32", "other"): 3.8,
    ("bf16", "other"): 4.2,
}
CHUNK_TOKENS = 2048  # trainer/losses.py's chunk: the loss keeps one chunk's logits
ALLOCATOR_SLACK = 0.10
CUDA_CONTEXT_GB = 1.5


@dataclass(frozen=True)
class MemoryEstimate:
    states: float  # bytes: weights, gradients, optimizer state, bf16 weight copies
    activations: float
    transients: float
    context: float

    @property
    def total(self) -> float:
        return (self.states + self.activations + self.transients) * (1 + ALLOCATOR_SLACK) + self.context

    @property
    def gb(self) -> float:
        return self.total / GB


def activation_bytes(
    shape: ModelShape,
    arm: str,
    micro: int,
    precision: str,
    checkpointing: bool = False,
    chunk_tokens: int = CHUNK_TOKENS,
) -> float:
    """Bytes autograd keeps for the backward of one micro-batch of `micro` sequences."""
    d, L, V = shape.d_model, shape.n_layers, shape.vocab
    tokens = micro * shape.seq_len
    layer = ACT_PER_LAYER[precision] * d + 4 * shape.n_heads
    blocks = L * 4 * d * tokens + layer * tokens if checkpointing else L * layer * tokens
    family = "duo" if arm_info(arm).family == "duo" else "other"
    loss = min(tokens, chunk_tokens) * V * LOSS_PER_VOCAB[(precision, family)]
    head_copy = 2 * d * V if precision == "bf16" else 0
    return blocks + ACT_OUTSIDE[precision] * d * tokens + loss + head_copy


def estimate(
    shape: ModelShape,
    arm: str,
    micro: int,
    precision: str = "bf16",
    world: int = 1,
    sharding: str = "ddp",
    checkpointing: bool = False,
) -> MemoryEstimate:
    """Peak bytes on one GPU of a rank training micro-batches of `micro` sequences (module doc)."""
    if sharding not in SHARDINGS:
        raise ValueError(f"unknown sharding {sharding!r}")
    P = params_total(shape)
    fsdp = sharding == "fsdp"
    states = STATE_BYTES_PER_PARAM * P / (world if fsdp else 1)
    if fsdp:
        states += FSDP_ROOT_BYTES_PER_PARAM * (P - shape.n_layers * block_params(shape.d_model))
    if precision == "bf16":
        states += BF16_COPY_BYTES_PER_PARAM * (2 * block_params(shape.d_model) if fsdp else P)
    tokens = micro * shape.seq_len
    chunk = min(tokens, CHUNK_TOKENS)
    transients = 3 * 4 * chunk * shape.vocab + 4 * tokens * 4 * shape.d_model  # logits; an MLP grad
    activations = activation_bytes(shape, arm, micro, precision, checkpointing)
    return MemoryEstimate(states, activations, transients, CUDA_CONTEXT_GB * GB)


@dataclass(frozen=True)
class Parallel:
    """How one run trains on its GPUs: chosen by `choose`, outside the run key."""

    micro: int  # sequences per forward pass
    accum: int  # micro-batches per rank per step
    checkpointing: bool
    sharding: str
    gb_per_gpu: float
    fits: bool


def choose(
    shape: ModelShape,
    arm: str,
    global_batch: int,
    world: int,
    gpu_mem_gb: float,
    precision: str = "bf16",
    headroom: float = 0.9,
) -> Parallel:
    """The largest micro-batch (a divisor of the rank's sequences) that fits `headroom` of the GPU,
    without activation checkpointing if that fits at some micro-batch of at least MIN_MICRO, with it
    otherwise; full sharding only when DDP's states alone do not fit. `fits` is False when nothing
    does (the plan flags the run)."""
    per_rank = max(1, global_batch // world)
    budget = headroom * gpu_mem_gb * GB
    divisors = [m for m in range(per_rank, 0, -1) if per_rank % m == 0]
    options = []
    for sharding in SHARDINGS:
        for checkpointing in (False, True):
            for micro in divisors:
                e = estimate(shape, arm, micro, precision, world, sharding, checkpointing)
                if e.total <= budget:
                    options.append((sharding, checkpointing, micro, e))
                    break
    # prefer DDP, then no checkpointing unless it buys a micro-batch MIN_MICRO times larger
    for sharding in SHARDINGS:
        plain = next((o for o in options if o[0] == sharding and not o[1]), None)
        ckpt = next((o for o in options if o[0] == sharding and o[1]), None)
        pick = (
            plain
            if plain and (plain[2] >= MIN_MICRO or ckpt is None or ckpt[2] < MIN_MICRO * plain[2])
            else ckpt
        )
        if pick is not None:
            s, c, m, e = pick
            return Parallel(m, per_rank // m, c, s, e.gb, True)
    e = estimate(shape, arm, 1, precision, world, "fsdp", True)
    return Parallel(1, per_rank, True, "fsdp", e.gb, False)


MIN_MICRO = 4  # below this a GPU idles between kernels: checkpointing to reach it pays off
