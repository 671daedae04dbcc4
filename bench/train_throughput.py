"""Training throughput per arm: tokens/s and achieved model FLOP/s of one training step (forward,
backward, AdamW update) on random tokens, against a matmul peak measured in the same process.

    .venv/bin/python bench/train_throughput.py                 # CPU: d 256, 6 layers, T 128
    .venv/bin/python bench/train_throughput.py --device cuda   # CUDA: the 113M paper shape, bf16, T 2048

Model FLOPs count the `attention` convention of scaling.flops (every matmul of the real model:
weights, attention products, conditioning), times 3 for training. The CPU target is a ratio of
at least 0.6 to the fp32 matmul peak at d 256, 6 layers, T 128. On CUDA the table also gives MFU
against the card's dense bf16 datasheet peak (trainer.loop.PEAK_BF16).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from scaling.arms import ARMS
from scaling.flops import ModelShape, train_flops_per_seq
from trainer.arms import get_arm
from trainer.loop import PEAK_BF16, param_groups
from trainer.model import DiT

PRESETS = {  # name: (d_model, n_layers, n_heads, vocab, seq_len, batch)
    "cpu": (256, 6, 4, 257, 128, 16),
    "cuda": (768, 12, 12, 32001, 2048, 16),  # "113M" of the paper ladder, Llama-2 vocabulary + [MASK]
}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_time(
    arm_name: str, shape: ModelShape, batch: int, device: torch.device, bf16: bool, steps: int
) -> float:
    """Fastest of `steps` training steps after warm-up (best-of, like the matmul peak: on a shared
    machine the fastest step is the one least disturbed by other work)."""
    torch.manual_seed(0)
    model = DiT(shape).to(device)
    arm = get_arm(arm_name, shape.vocab)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=device.type == "cuda")
    x = torch.randint(0, shape.vocab - 1, (batch, shape.seq_len), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for i in range(steps + 2):
        _sync(device)
        t0 = time.perf_counter()
        t = arm.sample_t(batch, 0.5)
        with autocast:
            loss = arm.training_loss(model, x, t, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:  # warm-up: allocator, kernel selection
            times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--d-model", type=int)
    p.add_argument("--n-layers", type=int)
    p.add_argument("--n-heads", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int, default=5, help="timed steps per arm (the fastest is reported)")
    p.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = dict(zip(("d_model", "n_layers", "n_heads", "vocab", "seq_len", "batch"), PRESETS[args.device]))
    cfg = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    batch = cfg.pop("batch")
    shape = ModelShape(f"d{cfg['d_model']}-l{cfg['n_layers']}", **cfg)
    bf16 = device.type == "cuda"
    if bf16:
        n, dtype, name = 8192, torch.bfloat16, torch.cuda.get_device_name(device)
        datasheet = next((v for k, v in PEAK_BF16.items() if k in name), None)
        where = f"{name}, bf16 autocast; matmul peak: {n}^3 bf16"
    else:
        n, dtype, datasheet = 1024, torch.float32, None
        where = f"CPU, {torch.get_num_threads()} threads, fp32; matmul peak: {n}^3 fp32"
    print(
        f"{shape.name} (d {shape.d_model}, {shape.n_layers} layers, {shape.n_heads} heads, vocab {shape.vocab}, "
        f"T {shape.seq_len}), batch {batch}; {where}, measured next to each arm (load on a shared machine varies)"
    )
    header = f"{'arm':<10} {'step s':>8} {'tokens/s':>12} {'GFLOP/s':>10} {'peak GF/s':>10} {'/peak':>6}"
    print(header + (f" {'MFU':>6}" if datasheet else ""))
    for arm in args.arms:
        before = matmul_peak(device, dtype, n)
        dt = step_time(arm, shape, batch, device, bf16, args.steps)
        peak = max(before, matmul_peak(device, dtype, n))
        flops = batch * train_flops_per_seq(shape, "attention", arm) / dt
        line = (
            f"{arm:<10} {dt:>8.3f} {batch * shape.seq_len / dt:>12,.0f} {flops / 1e9:>10,.1f} "
            f"{peak / 1e9:>10,.1f} {flops / peak:>6.2f}"
        )
        print(line + (f" {flops / datasheet:>6.2f}" if datasheet else ""), flush=True)


if __name__ == "__main__":
    main()
