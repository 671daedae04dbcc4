"""The CUDA-only lines of the trainer's device facts, driven on a CPU machine.

torch.cuda's query functions are replaced by stand-ins that answer as an H100 would; the code
under test calls them by name, so a misspelt attribute (`torch.cuda.getdevice_name`) fails here
with AttributeError, as it would on every GPU run.
"""

from __future__ import annotations

import torch

from trainer.accelerator import device_name, peak_flops

H100 = "NVIDIA H100 80GB HBM3"


def _fake_cuda(monkeypatch) -> None:
    monkeypatch.delenv("SCALING_PEAK_FLOPS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: H100)


def test_peak_flops_of_a_cuda_device_comes_from_its_name(monkeypatch):
    _fake_cuda(monkeypatch)
    assert peak_flops(torch.device("cuda", 0)) == 989e12


def test_device_name_of_a_cuda_device(monkeypatch):
    _fake_cuda(monkeypatch)
    assert device_name(torch.device("cuda", 0)) == H100
