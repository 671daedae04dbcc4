"""The Makefile's install paths, read with `make -n` (what would run, nothing installed): the GPU
setup installs the chosen torch build and flash-attn on request, checks with `scaling doctor`,
and marks the venv so that later `make` targets keep its torch instead of the CPU pin. (The whole
`make setup-gpu` was run on a CPU machine for the README's GPU section; it takes minutes.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scaling.paths import PROJECT_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def dry_make(*args: str) -> str:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(PROJECT_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_setup_gpu_installs_the_chosen_torch_then_runs_the_doctor(tmp_path):
    venv = tmp_path / "venv"
    build = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
    out = dry_make("setup-gpu", f"VENV={venv}", f"TORCH_GPU={build}", "FLASH_ATTN=1")
    lines = out.splitlines()
    assert f"{venv}/bin/python -m pip install {build}" in lines
    assert any("flash-attn" in line and "--no-build-isolation" in line for line in lines)
    assert not any("constraints/cpu.txt" in line for line in lines)  # no CPU pin on the GPU path
    assert lines[-1] == f"{venv}/bin/scaling doctor"
    assert f"touch {venv}/.gpu {venv}/.installed" in lines
    assert not any("flash-attn" in line for line in dry_make("setup-gpu", f"VENV={venv}").splitlines())


def test_a_gpu_venv_keeps_its_torch_a_fresh_one_gets_the_cpu_pin(tmp_path):
    venv = tmp_path / "venv"
    assert "-r constraints/cpu.txt" in dry_make("setup", f"VENV={venv}")
    venv.mkdir()
    (venv / ".gpu").touch()  # what setup-gpu leaves
    out = dry_make("setup", f"VENV={venv}")
    assert (
        "constraints/cpu.txt" not in out and f"{venv}/bin/python -m pip install --quiet  -e '.[dev]'" in out
    )
