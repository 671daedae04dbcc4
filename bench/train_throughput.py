"""Training throughput per arm: tokens/s and achieved model FLOP/s of one training step (forward,
backward, AdamW update) on random tokens, against a matmul peak measured in the same process.

    .venv/bin/python bench/train_throughput.py                 # CPU: d 256, 6 layers, T 128
    .venv/bin/python bench/train_throughput.py --device cuda   # CUDA: the 113M paper shape, bf16, T 2048
    .venv/bin/python bench/train_throughput.py --compare-rotary --arms mdlm-ce

--compare-rotary prints the error of the rotary embedding against a float64 rotation (fp32 and
bf16 inputs) and times every arm with the rotary of trainer/model.py (real arithmetic in the
activations' dtype) and with the complex-number version it replaced (float32 complex multiply,
kept below as `complex_rotary` for this comparison), the two models taking turns step by step.

Model FLOPs count the `attention` convention of scaling.flops (every matmul of the real model:
weights, attention products, conditioning), times 3 for training. The CPU target is a ratio of
at least 0.6 to the fp32 matmul peak at d 256, 6 layers, T 128. On CUDA the table also gives MFU
against the card's dense bf16 datasheet peak (scaling.hardware).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

import trainer.model
from scaling.arms import ARMS
from scaling.flops import ModelShape, train_flops_per_seq
from scaling.hardware import peak_bf16
from trainer.arms import get_arm
from trainer.loop import param_groups
from trainer.model import DiT, apply_rotary, rotary_tables

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


def complex_rotary_tables(seq_len: int, head_dim: int) -> Tensor:
    """The earlier tables: (cos, sin) per channel pair, [seq_len, head_dim / 2, 2] float32."""
    inv_freq = 10_000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).float()


def complex_rotary(x: Tensor, rotation: Tensor) -> Tensor:
    """The earlier apply_rotary: one float32 complex multiply, then back to x's dtype."""
    z = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    r = torch.view_as_complex(rotation)
    r = r.view(r.shape[0], r.shape[1], *([1] * (x.dim() - 3)), r.shape[-1])
    return torch.view_as_real(z * r).flatten(-2).to(x.dtype)


def rotary_errors(seq_len: int = 2048, head_dim: int = 64) -> None:
    """Max abs and norm-wise relative error of both versions against a float64 rotation of the
    same (dtype-rounded) inputs, x ~ N(0, 1) [seq_len, head_dim] at positions 0 .. seq_len - 1."""
    x = torch.randn(seq_len, head_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    angles = torch.outer(
        torch.arange(seq_len, dtype=torch.float64),
        10_000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim),
    )
    real, cplx = rotary_tables(seq_len, head_dim)[None], complex_rotary_tables(seq_len, head_dim)[None]
    print(f"rotary error against float64, x ~ N(0, 1) [{seq_len}, {head_dim}], max |x| {x.abs().max():.2f}")
    print(f"{'input':<10}{'version':<22}{'max abs':>10}{'rel (norm)':>12}")
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        z = torch.view_as_complex(xd.double().unflatten(-1, (-1, 2)).contiguous())
        want = torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).flatten(-2)
        for name, fn, table in [
            ("complex, fp32 upcast", complex_rotary, cplx),
            ("real, input dtype", apply_rotary, real),
        ]:
            err = fn(xd[None, :, None], table)[0, :, 0].double() - want
            rel = err.norm() / want.norm()
            print(f"{str(dtype).removeprefix('torch.'):<10}{name:<22}{err.abs().max():>10.2e}{rel:>12.2e}")


class Stepper:
    """One arm's model, optimizer and batch; step() runs one training step (forward, backward,
    AdamW update) and returns its seconds. rotary "complex": the model uses the earlier rotary."""

    def __init__(
        self, arm_name: str, shape: ModelShape, batch: int, device: torch.device, bf16: bool, rotary: str
    ) -> None:
        torch.manual_seed(0)
        self.model = DiT(shape).to(device)
        self.rotary = complex_rotary if rotary == "complex" else apply_rotary
        if rotary == "complex":
            self.model.rotation = complex_rotary_tables(shape.seq_len, shape.head_dim).to(device)
        self.arm = get_arm(arm_name, shape.vocab)
        self.opt = torch.optim.AdamW(param_groups(self.model, 0.1), lr=1e-4, fused=device.type == "cuda")
        self.x = torch.randint(0, shape.vocab - 1, (batch, shape.seq_len), device=device)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.device, self.batch, self.bf16 = device, batch, bf16

    def step(self) -> float:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        trainer.model.apply_rotary = self.rotary  # Block.forward looks it up at call time
        try:
            _sync(self.device)
            t0 = time.perf_counter()
            t = self.arm.sample_t(self.batch, 0.5)
            with autocast:
                loss = self.arm.training_loss(self.model, self.x, t, self.gen)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            _sync(self.device)
            return time.perf_counter() - t0
        finally:
            trainer.model.apply_rotary = apply_rotary


def step_times(steppers: list[Stepper], steps: int) -> list[float]:
    """Fastest of `steps` training steps of each stepper after two warm-up steps (allocator, kernel
    selection), the steppers taking turns step by step (in alternating order), so that each sees
    the same load; best-of, like the matmul peak: on a shared machine the fastest step is the one
    least disturbed by other work."""
    for s in steppers * 2:
        s.step()
    best = [float("inf")] * len(steppers)
    for i in range(steps):
        for j in range(len(steppers))[:: 1 - 2 * (i % 2)]:
            best[j] = min(best[j], steppers[j].step())
    return best


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
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU too (always on CUDA)")
    p.add_argument(
        "--compare-rotary",
        action="store_true",
        help="rotary error table, and each arm timed with the complex rotary it replaced too",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    preset = dict(zip(("d_model", "n_layers", "n_heads", "vocab", "seq_len", "batch"), PRESETS[args.device]))
    cfg = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    batch = cfg.pop("batch")
    shape = ModelShape(f"d{cfg['d_model']}-l{cfg['n_layers']}", **cfg)
    bf16 = device.type == "cuda" or args.bf16
    if device.type == "cuda":
        n, dtype, name = 8192, torch.bfloat16, torch.cuda.get_device_name(device)
        datasheet = peak_bf16(name)
        where = f"{name}, bf16 autocast; matmul peak: {n}^3 bf16"
    else:
        n, dtype, datasheet = 1024, torch.float32, None
        precision = "bf16 autocast" if bf16 else "fp32"
        where = f"CPU, {torch.get_num_threads()} threads, {precision}; matmul peak: {n}^3 fp32"
    print(
        f"{shape.name} (d {shape.d_model}, {shape.n_layers} layers, {shape.n_heads} heads, vocab {shape.vocab}, "
        f"T {shape.seq_len}), batch {batch}; {where}, measured next to each arm (load on a shared machine varies)"
    )
    versions = ("complex", "real") if args.compare_rotary else ("real",)
    width = 20 if args.compare_rotary else 10
    if args.compare_rotary:
        rotary_errors()
        print("training steps of the two rotary versions, taking turns step by step; the fastest of each")
    header = f"{'arm':<{width}} {'step s':>8} {'tokens/s':>12} {'GFLOP/s':>10} {'peak GF/s':>10} {'/peak':>6}"
    print(header + (f" {'MFU':>6}" if datasheet else ""))
    for arm in args.arms:
        before = matmul_peak(device, dtype, n)
        steppers = [Stepper(arm, shape, batch, device, bf16, v) for v in versions]
        times = step_times(steppers, args.steps)
        peak = max(before, matmul_peak(device, dtype, n))
        for version, dt in zip(versions, times):
            flops = batch * train_flops_per_seq(shape, "attention", arm) / dt
            name = f"{arm} ({version})" if args.compare_rotary else arm
            line = (
                f"{name:<{width}} {dt:>8.3f} {batch * shape.seq_len / dt:>12,.0f} {flops / 1e9:>10,.1f} "
                f"{peak / 1e9:>10,.1f} {flops / peak:>6.2f}"
            )
            print(line + (f" {flops / datasheet:>6.2f}" if datasheet else ""), flush=True)
        if args.compare_rotary:
            print(f"{'':<{width}} real / complex tokens/s: {times[0] / times[1]:.3f}")


if __name__ == "__main__":
    main()
