"""Accelerators by name: the datasheet numbers that planning (GPU-hours, time limits), prediction and
the trainer's MFU share."""

from __future__ import annotations

from dataclasses import dataclass

from scaling.errors import UserError

# Dense bf16 peak FLOP/s per device by name (datasheet figures without sparsity); the first name
# that occurs in a device's name wins, so the more specific names come first.
PEAK_BF16 = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "V100": 125e12,
}


@dataclass(frozen=True)
class Hardware:
    """The GPUs of a cluster config: the card, its memory, its peak and the MFU to assume."""

    gpu: str
    memory_gb: float
    peak_flops: float  # dense bf16 FLOP/s per GPU
    mfu: float = 0.35


def peak_bf16(device_name: str) -> float | None:
    """The dense bf16 peak of a card from its name (torch.cuda.get_device_name or a config's
    `gpu: H100`); None for a card not in the table."""
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def require_peak(device_name: str) -> float:
    peak = peak_bf16(device_name)
    if peak is None:
        raise UserError(
            f"unknown accelerator {device_name!r}: choose from {', '.join(PEAK_BF16)} (dense bf16 peak by name)"
        )
    return peak
