"""Peak memory of one training-loss forward + backward per arm at a 32k vocabulary, on the CPU:
the full-logits path (the model returns float32 logits [B, T, V]) against the chunked losses of
trainer/losses.py, measured in the same run.

    .venv/bin/python bench/loss_memory.py                  # B 16 x T 256 = 4096 tokens, d 256, V 32001
    .venv/bin/python bench/loss_memory.py --bf16 --arms duo

Each case runs in a fresh subprocess: it builds the model, the arm and the batch, runs one short
no-grad forward (libraries loaded, thread pools up), reads ru_maxrss (the process's peak resident
memory so far) as its baseline, then runs `arm.training_loss(...).backward()` once and reads
ru_maxrss again. The difference is the step's peak memory above the setup (parameters and
inputs excluded): the backbone's activations, the loss's tensors and the gradients. The children
run with MALLOC_MMAP_THRESHOLD_=65536, so that glibc mmaps every tensor above 64 KiB and returns it
on free and the resident peak follows the live tensors: with glibc's default (a threshold that
rises to the largest block freed so far, up to 32 MiB) the chunks' freed buffers stay in the heap
and the chunked cases read 0.5-0.7 GB higher.
Cases: `full` (arm.chunk_tokens = 0), and each --chunks size; the default adds 256, which splits
4096 tokens into as many chunks (16) as the default 2048 splits the study's 16 x 2048 batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from scaling.arms import ARMS
from scaling.flops import ModelShape
from trainer.arms import get_arm
from trainer.losses import CHUNK_TOKENS
from trainer.model import DiT

ROOT = Path(__file__).resolve().parents[1]


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(args: argparse.Namespace) -> None:
    """One case: print {"baseline", "peak", "loss"} as JSON (ru_maxrss in bytes)."""
    torch.set_num_threads(args.threads)
    shape = ModelShape("bench", args.d_model, args.n_layers, args.n_heads, args.vocab, args.seq_len)
    torch.manual_seed(0)
    model = DiT(shape)
    with torch.no_grad():  # a trained-looking model: the zero-initialized head gives uniform logits
        for p in model.parameters():
            p.normal_(0, 0.02)
    arm = get_arm(args.arm, shape.vocab)
    arm.chunk_tokens = args.chunk
    x = torch.randint(
        0, shape.vocab - 1, (args.batch, shape.seq_len), generator=torch.Generator().manual_seed(1)
    )
    t = arm.sample_t(args.batch, 0.5)
    gen = torch.Generator().manual_seed(2)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    with torch.no_grad(), autocast:
        model(x[:1, :8])
    baseline = max_rss_bytes()
    with autocast:
        loss = arm.training_loss(model, x, t, gen)
    loss.backward()
    print(json.dumps({"baseline": baseline, "peak": max_rss_bytes(), "loss": loss.item()}))


def run_case(args: argparse.Namespace, arm: str, chunk: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--arm", arm, "--chunk", str(chunk)]
    for name in ("batch", "seq_len", "d_model", "n_layers", "n_heads", "vocab", "threads"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.bf16:
        cmd.append("--bf16")
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}  # an explicit setting wins
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{arm} chunk {chunk} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--chunks", nargs="+", type=int, default=[CHUNK_TOKENS, 256], help="chunk sizes (tokens)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32001)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (the GPU recipe) instead of fp32")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    tokens = args.batch * args.seq_len
    gb = 1e9
    print(
        f"one training loss forward + backward, B {args.batch} x T {args.seq_len} = {tokens} tokens, "
        f"d {args.d_model}, {args.n_layers} layers, V {args.vocab}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}, CPU, {args.threads} threads, one subprocess per case"
    )
    print(
        f"peak resident memory above the setup, GB (one float32 [B*T, V] tensor: {tokens * args.vocab * 4 / gb:.2f} GB)"
    )
    cases = [("full", 0)] + [(f"chunk {c}", c) for c in args.chunks]
    header = f"{'arm':<10}" + "".join(f"{name:>12}" for name, _ in cases)
    header += "".join(f"{'full/' + str(c):>12}" for c in args.chunks) + f"{'loss':>10}"
    print(header)
    for arm in args.arms:
        got = [run_case(args, arm, chunk) for _, chunk in cases]
        peaks = [g["peak"] - g["baseline"] for g in got]
        line = f"{arm:<10}" + "".join(f"{m / gb:>12.2f}" for m in peaks)
        line += "".join(f"{peaks[0] / m:>12.1f}" for m in peaks[1:]) + f"{got[0]['loss']:>10.4f}"
        print(line, flush=True)
        losses = [g["loss"] for g in got]
        if max(losses) - min(losses) > 1e-4 * abs(losses[0]):
            print(f"  note: the cases' losses differ: {losses}")


if __name__ == "__main__":
    main()
