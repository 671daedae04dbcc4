"""Where a run computes, and what that device can do: the project's whole CUDA surface.

Every `torch.cuda` call of the project is in this module, so one test fixture (tests/fake_cuda.py)
can stand in for a GPU and drive every branch on a CPU machine:
- `device_for(local_rank)`: cuda:<local rank modulo the visible devices> when CUDA is there
  (unless SCALING_DEVICE=cpu), else the CPU; `resolve_device(name)` for commands that take --device.
- `autocast_for(precision, device)`: bf16 autocast on CUDA for precision `auto`, fp32 on the CPU.
- `peak_flops(device)`: dense peak FLOP/s of one device for MFU: SCALING_PEAK_FLOPS if set; on
  CUDA the card's datasheet bf16 peak (scaling.hardware, by name); on the CPU a measured fp32 matmul.
- `compiles(setting, device)`: torch.compile of the model, `auto` = on CUDA only (on the CPU the
  first compile costs ~30 s, more than a tiny run gains).
- `device_name`, `synchronize`, `memory_stats`, `cuda_rng_state` / `set_cuda_rng_state`.
- `placement(device)`: where the tensors of a run on `device` live: the device itself; the test
  stand-in for CUDA maps a CUDA device to the CPU so that a whole run takes the CUDA branches.
"""

from __future__ import annotations

import functools
import math
import os
import time
from contextlib import AbstractContextManager, nullcontext

import torch

from scaling.errors import UserError
from scaling.hardware import peak_bf16
from scaling.spec import COMPILE, PRECISIONS


def cuda_available() -> bool:
    return os.environ.get("SCALING_DEVICE", "") != "cpu" and torch.cuda.is_available()


def device_for(local_rank: int) -> torch.device:
    """This process's device: with CUDA, the GPU of its local rank among those visible (a cluster
    that binds one GPU per task shows each rank a single device 0); else the CPU."""
    if not cuda_available():
        return torch.device("cpu")
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
    return device


def resolve_device(name: str) -> torch.device:
    """A --device option: auto (CUDA if available), cpu, cuda or cuda:N."""
    if name == "auto":
        return device_for(0)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not cuda_available():
            raise UserError("--device cuda: no CUDA device is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device_for(device.index or 0)
    if device.type != "cpu":
        raise UserError(f"--device {name!r}: give auto, cpu, cuda or cuda:N")
    return device


def autocast_for(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast when asked, or on CUDA under `auto`; otherwise fp32 (no autocast)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision_name(precision, device) == "bf16":
        return torch.autocast(placement(device).type, dtype=torch.bfloat16)
    return nullcontext()


def placement(device: torch.device) -> torch.device:
    return device


def compiles(setting: str, device: torch.device) -> bool:
    if setting not in COMPILE:
        raise UserError(f"unknown compile setting {setting!r}: choose from {', '.join(COMPILE)}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def precision_name(precision: str, device: torch.device) -> str:
    """The arithmetic `autocast_for` gives: bf16 or fp32."""
    return "bf16" if precision == "bf16" or (precision == "auto" and device.type == "cuda") else "fp32"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of one device for MFU (see the module docstring); None for an unknown card."""
    if os.environ.get("SCALING_PEAK_FLOPS"):
        return float(os.environ["SCALING_PEAK_FLOPS"])
    if device.type == "cuda":
        return peak_bf16(device_name(device))
    return measure_matmul_flops(threads=torch.get_num_threads())  # cached per thread count


@functools.lru_cache(maxsize=8)
def measure_matmul_flops(n: int = 1024, repeats: int = 5, threads: int = 0) -> float:
    """Best-of-`repeats` FLOP/s of an n^3 fp32 matmul on the CPU."""
    a, b = torch.randn(n, n, generator=torch.Generator().manual_seed(0)), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (timing needs it on CUDA; a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_stats(device: torch.device) -> dict[str, float]:
    """Peak and current allocated memory (GB) since the last reset; empty on the CPU."""
    if device.type != "cuda":
        return {}
    return {
        "max_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9,
        "allocated_gb": torch.cuda.memory_allocated(device) / 1e9,
        "total_gb": torch.cuda.get_device_properties(device).total_memory / 1e9,
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_rng_state() -> torch.Tensor | None:
    """The current CUDA generator's state, when CUDA has been used in this process."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.get_rng_state()
    return None


def set_cuda_rng_state(state: torch.Tensor) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_rng_state(state)


def describe() -> dict[str, str]:
    """What this machine offers a run, for `scaling doctor` and the preflight jobs: versions, GPUs,
    and the precision, attention kernel and compilation a run here would use."""
    import platform

    from trainer.model import attention_backend, flash_attn_func

    device = device_for(0)
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda (torch built for)": str(torch.version.cuda or "none: a CPU build"),
        "cuda available": "yes" if cuda_available() else "no",
    }
    if device.type == "cuda":
        count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(device)
        facts["gpus"] = f"{count} x {device_name(device)}, {props.total_memory / 2**30:.0f} GiB each"
        facts["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        peak = peak_flops(device)
        facts["dense bf16 peak"] = (
            f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown card: set SCALING_PEAK_FLOPS"
        )
    else:
        facts["gpus"] = f"none: runs train on {device_name(device)}"
    facts["flash-attn"] = (
        "importable" if flash_attn_func is not None else "not installed (torch SDPA is used)"
    )
    precision = precision_name("auto", device)
    facts["precision (auto)"] = precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    facts["attention kernel"] = attention_backend(device, dtype)
    facts["torch.compile (auto)"] = "on" if compiles("auto", device) else "off"
    return facts
