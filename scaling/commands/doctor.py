"""`scaling doctor`: what this machine offers a run (torch, CUDA, NCCL, GPUs, flash-attn, the
precision, attention kernel and compilation a run here would use). Run it on a compute node after
installing (README, "On a GPU cluster"); `--require-gpu` makes a machine without a usable GPU an
error that says why."""

from __future__ import annotations

import argparse
import json
import sys

from scaling import __version__
from scaling.paths import git_sha
from trainer.accelerator import describe


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    p.add_argument(
        "--require-gpu",
        action="store_true",
        help="exit 1 unless torch sees a GPU (run it on a compute node: srun --gpus=1 ...)",
    )


def run(args: argparse.Namespace) -> int:
    facts = {"dllm-scaling": f"{__version__} ({git_sha() or 'not a git checkout'})", **describe()}
    if args.json:
        print(json.dumps(facts, indent=1))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    if args.require_gpu and facts["cuda available"] != "yes":
        if facts["cuda (torch built for)"].startswith("none"):
            why = (
                f"torch {facts['torch']} is a CPU build: install a CUDA build (`make setup-gpu`, "
                "TORCH_GPU=... for another CUDA version)"
            )
        else:
            why = (
                f"torch {facts['torch']} is built for CUDA {facts['cuda (torch built for)']} but sees no GPU: "
                "run this on a GPU node (srun --gpus=1 ...); if nvidia-smi lists GPUs there, the driver is "
                "older than this CUDA: pick an older build with TORCH_GPU"
            )
        print(f"scaling doctor: error: {why}", file=sys.stderr)
        return 1
    return 0
