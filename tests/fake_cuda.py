"""A stand-in for the CUDA surface of the project, so that every CUDA branch runs on a CPU machine.

`FakeCuda.install(monkeypatch)` replaces the torch.cuda functions the project calls (all of them
in trainer/accelerator.py) with recording stand-ins that answer as one H100 80GB would, offers a
flash-attn stand-in (`flash=True`), and maps a CUDA device's tensors to the CPU
(trainer.accelerator.placement): a run then takes every CUDA branch (device choice, bf16 autocast,
peak FLOPs by card name, fused AdamW, memory statistics, CUDA RNG state) while computing on the
CPU. A call of a torch.cuda function the stand-in lacks fails as it would on a GPU if it did not
exist (AttributeError), and `called` records which stand-ins ran.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import torch
import torch.nn.functional as F

H100 = "NVIDIA H100 80GB HBM3"


class FakeCuda:
    def __init__(self, device_count: int = 1, flash: bool = True) -> None:
        self.count = device_count
        self.flash = flash
        self.called: Counter[str] = Counter()
        self.current: int | None = None
        self.rng_state = torch.ByteTensor([7] * 16)
        self.memory_resets = 0

    # --- the stand-ins, by the name of the torch.cuda function they replace ----------------------

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def _index(self, device) -> int:
        index = torch.device(device).index if device is not None else self.current
        index = 0 if index is None else index
        if not 0 <= index < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        return index

    def set_device(self, device) -> None:
        self.current = self._index(device)

    def is_initialized(self) -> bool:
        return self.current is not None

    def get_device_name(self, device=None) -> str:
        self._index(device)
        return H100

    def get_device_properties(self, device=None):
        self._index(device)
        return SimpleNamespace(
            name=H100, total_memory=80 * 2**30, major=9, minor=0, multi_processor_count=132
        )

    def synchronize(self, device=None) -> None:
        self._index(device)

    def max_memory_allocated(self, device=None) -> int:
        self._index(device)
        return 3 * 2**30

    def memory_allocated(self, device=None) -> int:
        self._index(device)
        return 2**30

    def reset_peak_memory_stats(self, device=None) -> None:
        self._index(device)
        self.memory_resets += 1

    def nccl_version(self) -> tuple[int, int, int]:
        return (2, 21, 5)

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.rng_state.clone()

    def set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        self.rng_state = state.clone()

    STANDS_IN_FOR = (
        "is_available",
        "device_count",
        "set_device",
        "is_initialized",
        "get_device_name",
        "get_device_properties",
        "synchronize",
        "max_memory_allocated",
        "memory_allocated",
        "reset_peak_memory_stats",
        "get_rng_state",
        "set_rng_state",
        "nccl",  # torch.cuda.nccl.version
    )

    def install(self, monkeypatch) -> FakeCuda:
        import trainer.accelerator
        import trainer.model

        for name in self.STANDS_IN_FOR:
            if name != "nccl":
                monkeypatch.setattr(torch.cuda, name, self._recording(name))
        monkeypatch.setattr(
            torch.cuda, "nccl", SimpleNamespace(version=self._recording("nccl", self.nccl_version))
        )
        monkeypatch.delenv("SCALING_DEVICE", raising=False)
        monkeypatch.delenv("SCALING_PEAK_FLOPS", raising=False)
        # a CUDA device's tensors live on the CPU; every decision still sees the CUDA device
        monkeypatch.setattr(
            trainer.accelerator,
            "placement",
            lambda device: torch.device("cpu") if device.type == "cuda" else device,
        )
        monkeypatch.setattr(trainer.model, "flash_attn_func", _flash_attn_func if self.flash else None)
        # device_for sets TF32 for what autocast leaves in fp32: a process-wide setting to restore
        monkeypatch.setattr(
            torch, "set_float32_matmul_precision", self._recording("set_float32_matmul_precision")
        )
        return self

    def _recording(self, name: str, impl=None):
        impl = impl or getattr(self, name, lambda *a, **k: None)

        def stand_in(*args, **kwargs):
            self.called[name] += 1
            return impl(*args, **kwargs)

        return stand_in


def _flash_attn_func(q, k, v, causal: bool = False):
    """flash-attn's signature on [B, T, H, hd] tensors, computed by SDPA (on CUDA it would be the kernel)."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
    )
    return out.transpose(1, 2)
