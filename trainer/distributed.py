"""torch.distributed from torchrun or SLURM environment variables (one process per device).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Under SLURM (srun with
ntasks > 1, e.g. submitit with tasks_per_node = GPUs) the ranks come from SLURM_PROCID,
SLURM_STEP_NUM_TASKS and SLURM_LOCALID, the rendezvous host is the job's first node and the port is
derived from the job id, so concurrent jobs on one node do not collide. Backend: nccl on CUDA,
gloo on CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def detect() -> DistEnv:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    # SLURM_STEP_NUM_TASKS is set by srun for its tasks; a batch script itself sees SLURM_NTASKS
    # of the whole allocation and is one process
    if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return DistEnv(
            int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]), int(env.get("SLURM_LOCALID", 0))
        )
    return DistEnv()


def is_main() -> bool:
    return detect().is_main


PORT_BASE, PORT_SPAN = 20000, 10000  # rendezvous ports 20000-29999: below Linux's ephemeral range


def _slurm_rendezvous() -> None:
    env = os.environ
    if "MASTER_ADDR" not in env:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "localhost")
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodes],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            env["MASTER_ADDR"] = out.stdout.split()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            env["MASTER_ADDR"] = first_host(nodes)
    # one port per job: jobs sharing a node do not collide
    env.setdefault("MASTER_PORT", str(PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % PORT_SPAN))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[003-005,9],cpu1' -> 'gpu003' (for want of scontrol)."""
    head = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodelist.strip())
    if head is None or not head.group(1) and not head.group(2):
        return "localhost"
    prefix, ranges = head.group(1), head.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]  # zero padding is kept as written


def init(env: DistEnv, device: torch.device, timeout_s: float = 1800) -> None:
    """The process group; `timeout_s` bounds every collective (set above the longest checkpoint
    write, during which the other ranks wait for rank 0)."""
    if not env.enabled or dist.is_initialized():
        return
    if "RANK" not in os.environ:
        _slurm_rendezvous()
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=max(1800, timeout_s))
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, timeout=timeout)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the size of its process group ((0, 1) without one)."""
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def all_gather_objects(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
