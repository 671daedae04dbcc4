"""The checks one task of a preflight job runs on a compute node (`scaling preflight`):

    python -m trainer.preflight --report FILE --results DIR [--data FOLDER] [--gpus N]

- import: the project and torch import (this script runs);
- gpus: what accelerator.describe() sees; with --gpus N > 0, CUDA must be there and a bf16 matmul
  must run on this task's GPU;
- collective: the tasks of the job form one process group from SLURM's variables and an
  all-reduce across every rank gives the world size (NCCL on GPUs, gloo on CPUs);
- data: the prepared data's manifest reads and its shards open;
- results: a file is written to and deleted from the results folder.

Each check writes one JSON line ({"rank", "host", "check", "ok", "detail"}) to FILE.rank<N> as soon
as it has run; the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainer import accelerator, data
from trainer import distributed as dist


def _checks(args: argparse.Namespace, env: dist.DistEnv) -> list[tuple[str, Callable[[], str]]]:
    def gpus() -> str:
        facts = accelerator.describe()
        if args.gpus <= 0:
            return facts["gpus"]
        if not accelerator.cuda_available():
            raise RuntimeError(f"no CUDA device, {args.gpus} expected ({facts['cuda (torch built for)']})")
        device = accelerator.device_for(env.local_rank)
        x = torch.ones(1024, 1024, device=device, dtype=torch.bfloat16)
        (x @ x).sum().item()
        return f"{facts['gpus']}; this task on {device}"

    def collective() -> str:
        device = accelerator.device_for(env.local_rank)
        dist.init(env, accelerator.placement(device), timeout_s=300)
        total = dist.all_reduce_sum(torch.ones(1, device=accelerator.placement(device)))
        if int(total.item()) != env.world_size:
            raise RuntimeError(f"all-reduce gave {int(total.item())}, expected {env.world_size}")
        return f"all-reduce over {env.world_size} rank(s) ok"

    def prepared() -> str:
        if not args.data:
            return "no prepared data named (nothing to read)"
        shards = data.open_shards(args.data)
        return f"{args.data}: {len(shards.train):,} training tokens"

    def results() -> str:
        folder = Path(args.results)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".preflight-{socket.gethostname()}-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
        return f"{folder} writable"

    return [("gpus", gpus), ("collective", collective), ("data", prepared), ("results", results)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.preflight")
    p.add_argument("--report", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--data", default="")
    p.add_argument("--gpus", type=int, default=0)
    args = p.parse_args(argv)
    env = dist.detect()
    report = Path(f"{args.report}.rank{env.rank}")
    report.parent.mkdir(parents=True, exist_ok=True)
    failed = 0

    def write(check: str, ok: bool, detail: str) -> None:
        row = {"rank": env.rank, "host": socket.gethostname(), "check": check, "ok": ok, "detail": detail}
        with open(report, "a") as f:
            f.write(json.dumps(row) + "\n")

    write("import", True, f"python {sys.version.split()[0]}, torch {torch.__version__}")
    for name, check in _checks(args, env):
        t0 = time.monotonic()
        try:
            detail = check()
            write(name, True, f"{detail} ({time.monotonic() - t0:.1f}s)")
        except Exception as e:  # every failure is a finding to report, whatever its kind
            failed += 1
            write(name, False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    dist.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
