"""`scaling doctor`: what this machine offers a run (torch, CUDA, NCCL, GPUs, flash-attn, the
precision, attention kernel and compilation a run here would use). Run it on a compute node after
installing (README, "On a GPU cluster")."""

from __future__ import annotations

import argparse
import json

from scaling import __version__
from scaling.paths import git_sha
from trainer.accelerator import describe


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the facts as one JSON object")


def run(args: argparse.Namespace) -> int:
    facts = {"dllm-scaling": f"{__version__} ({git_sha() or 'not a git checkout'})", **describe()}
    if args.json:
        print(json.dumps(facts, indent=1))
        return 0
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0
