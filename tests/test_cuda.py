"""The CUDA path on a CPU machine: whole runs and `scaling pareto --device cuda` through the CUDA
stand-in of tests/fake_cuda.py, one training step of every arm traced with its tensors on another
device than the CPU, and a check that every torch.cuda call of the project is one the stand-in
provides and these tests exercise (a misspelt `torch.cuda.getdevice_name` fails here)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import tiny_spec
from fake_cuda import H100, FakeCuda

from scaling import cli, store
from scaling.arms import ARMS
from scaling.errors import UserError
from scaling.flops import train_flops_per_seq
from scaling.paths import PROJECT_ROOT
from trainer import accelerator, checkpoint
from trainer.arms import get_arm
from trainer.distributed import DistEnv
from trainer.loop import TrainStep, check_spec, param_groups, train
from trainer.model import DiT, attention_backend

PEAK_H100 = 989e12


@pytest.fixture(scope="module")
def fake(tmp_path_factory, byte_shards):
    """Runs everything CUDA once, with the stand-in installed: a run that checkpoints, its resume
    from the middle, two runs of a sweep and `scaling pareto --device cuda` on them. (torch.compile
    cannot run under the stand-in: inductor asks the real CUDA library; test_compiled_run covers
    the compiled path on the CPU.)"""
    root = tmp_path_factory.mktemp("cuda")
    with pytest.MonkeyPatch.context() as mp:
        cuda = FakeCuda().install(mp)
        mp.setenv("SCALING_RESULTS", str(root / "results"))
        spec = tiny_spec(byte_shards, "mdlm-ce", steps=6, checkpoint_every=3, precision="auto", compile="off")
        run = root / "run"
        first = train(spec, run, log=lambda m: None)
        (run / "result.json").unlink()
        (run / "checkpoints" / "step-6.pt").unlink()  # resume from step 3, with the CUDA RNG state
        resumed = train(spec, run, log=lambda m: None)
        store.init_layout(root / "results" / "fk")
        runs = root / "results" / "fk" / "runs"
        for arm in ("ar", "mdlm-ce"):
            s = tiny_spec(byte_shards, arm, steps=6, compile="off")
            train(s, runs / s.run_key, log=lambda m: None)
        pareto = cli.main(
            ["pareto", "fk", "--device", "cuda", "--steps", "2", "--batch", "2", "--samples", "2"]
        )
    # the stand-in is gone before any test runs: it must not leak into the tests of this module
    return {"cuda": cuda, "spec": spec, "first": first, "resumed": resumed, "pareto": pareto, "root": root}


def test_a_run_takes_the_cuda_branches_and_writes_its_result(fake):
    result, spec = fake["first"], fake["spec"]
    assert result.status == "done" and result.device == H100
    assert result.precision == "bf16" and result.attention == "flash"
    assert result.compile_s is None
    assert result.max_memory_gb == pytest.approx(3 * 2**30 / 1e9)
    per_token = train_flops_per_seq(spec.model, "causal", spec.arm) / spec.model.seq_len
    assert result.mfu == pytest.approx(result.tokens_per_s * per_token / PEAK_H100, rel=1e-9)
    assert fake["cuda"].called["set_device"] >= 1 and fake["cuda"].called["reset_peak_memory_stats"] >= 1


def test_a_resumed_cuda_run_restores_the_cuda_rng_and_ends_the_same(fake):
    first, resumed = fake["first"], fake["resumed"]
    assert resumed.restarts == 1 and resumed.val_loss == first.val_loss
    state = checkpoint.read(fake["root"] / "run" / "checkpoints" / "step-3.pt")
    assert torch.equal(state["rng"][0]["cuda"], torch.ByteTensor([7] * 16))
    assert fake["cuda"].called["get_rng_state"] >= 1 and fake["cuda"].called["set_rng_state"] >= 1


def test_pareto_samples_on_the_cuda_device(fake):
    import pyarrow.parquet as pq

    assert fake["pareto"] == 0
    table = pq.read_table(fake["root"] / "results" / "fk" / "pareto.parquet").to_pydict()
    assert set(table["device"]) == {H100} and sorted(set(table["arm"])) == ["ar", "mdlm-ce"]
    assert fake["cuda"].called["synchronize"] >= 2  # around every timed batch


@pytest.mark.slow
def test_compiled_run_times_the_compiling_step_apart(tmp_path, byte_shards):
    """compile=on on the CPU (auto turns it on for CUDA): the first step, which compiles, is
    reported as compile_s and left out of tokens_per_s; the losses match an eager run's."""
    eager = train(
        tiny_spec(byte_shards, "ar", steps=4, compile="off"), tmp_path / "eager", log=lambda m: None
    )
    lines = []
    compiled = train(
        tiny_spec(byte_shards, "ar", steps=4, compile="on"), tmp_path / "compiled", log=lines.append
    )
    assert compiled.compile_s is not None and compiled.compile_s > 0
    assert any("torch.compile and the first step took" in line for line in lines)
    rows = [json.loads(line) for line in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and rows[0]["tokens_per_s"] is None  # the compiling step is not timed
    assert all(r["tokens_per_s"] > 0 for r in rows[1:]) and compiled.tokens_per_s > 0
    assert compiled.val_loss == pytest.approx(eager.val_loss, rel=1e-4)


def test_device_choice_precision_and_backends(monkeypatch):
    exercise_device_choice(FakeCuda(device_count=2).install(monkeypatch), monkeypatch)


def exercise_device_choice(cuda: FakeCuda, monkeypatch) -> None:
    assert accelerator.device_for(1) == torch.device("cuda", 1) and cuda.current == 1
    cuda.count = 1  # a cluster that shows each task only its own GPU
    assert accelerator.device_for(3) == torch.device("cuda", 0)
    assert accelerator.resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(UserError, match="has 1 CUDA device"):
        accelerator.resolve_device("cuda:3")
    gpu = torch.device("cuda", 0)
    assert (
        accelerator.precision_name("auto", gpu) == "bf16"
        and accelerator.precision_name("fp32", gpu) == "fp32"
    )
    assert accelerator.compiles("auto", gpu) and not accelerator.compiles("auto", torch.device("cpu"))
    assert (
        attention_backend(gpu, torch.bfloat16) == "flash" and attention_backend(gpu, torch.float32) == "sdpa"
    )
    assert accelerator.peak_flops(gpu) == PEAK_H100
    assert accelerator.memory_stats(gpu)["total_gb"] == pytest.approx(80 * 2**30 / 1e9)
    assert accelerator.memory_stats(torch.device("cpu")) == {}
    facts = accelerator.describe()  # what `scaling doctor` prints
    assert facts["gpus"].startswith(f"{cuda.count} x {H100}") and facts["nccl"] == "2.21.5"
    assert (facts["precision (auto)"], facts["attention kernel"], facts["torch.compile (auto)"]) == (
        "bf16",
        "flash",
        "on",
    )
    monkeypatch.setenv("SCALING_DEVICE", "cpu")
    assert accelerator.device_for(0) == torch.device("cpu")


def test_without_flash_attn_the_backend_is_sdpa(monkeypatch):
    FakeCuda(flash=False).install(monkeypatch)
    assert attention_backend(torch.device("cuda", 0), torch.bfloat16) == "sdpa"


def test_no_cuda_device_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="no CUDA device is available; use --device cpu"):
        accelerator.resolve_device("cuda")


# --- one training step of every arm with its tensors off the CPU -------------------------------


def traced_step(spec, arm_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """TrainStep of the arm on the meta device (shapes and devices only, no data): a tensor that
    an arm or the step leaves on the CPU meets the model's meta tensors and fails, as it would meet
    CUDA tensors on a GPU. FakeTensorMode with device='cuda' cannot trace this code on a CPU-only
    torch (its Python indexing of CUDA fakes needs the CUDA library), so meta is the stand-in."""
    meta = torch.device("meta")
    model = DiT(spec.model).to(meta)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), foreach=False)  # fused/foreach: no meta kernels
    step = TrainStep(
        spec,
        check_spec(spec, 1),
        DistEnv(),
        get_arm(arm_name, spec.model.vocab),
        model,
        model,
        optimizer,
        meta,
    )
    batch = torch.empty(spec.global_batch, spec.model.seq_len, dtype=torch.long, device=meta)
    return step(0, 1e-3, batch)


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_a_training_step_of_every_arm_keeps_its_tensors_on_the_device(byte_shards, arm):
    spec = tiny_spec(byte_shards, arm, precision="fp32", micro_batch=2)  # two micro batches
    loss, norm = traced_step(spec, arm)
    assert loss.device.type == "meta" and norm.device.type == "meta" and loss.shape == ()


def test_the_trace_catches_a_tensor_left_on_the_cpu(byte_shards, monkeypatch):
    import trainer.arms.mdlm

    monkeypatch.setattr(trainer.arms.mdlm, "nelbo_weight", lambda t: torch.ones(len(t)))  # forgot the device
    with pytest.raises(RuntimeError, match="device"):
        traced_step(tiny_spec(byte_shards, "mdlm-elbo", precision="fp32"), "mdlm-elbo")


# --- every torch.cuda call of the project is stood in for and exercised -------------------------


def test_every_torch_cuda_call_is_exercised_by_the_stand_in(fake, monkeypatch):
    cuda = FakeCuda(device_count=2).install(monkeypatch)
    exercise_device_choice(cuda, monkeypatch)
    used = set()
    for folder in ("scaling", "trainer", "analysis", "bench"):
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"torch\.cuda\.(\w+)", path.read_text()))
    assert used, "the project calls torch.cuda somewhere (trainer/accelerator.py)"
    missing = sorted(used - set(FakeCuda.STANDS_IN_FOR))
    assert not missing, f"torch.cuda functions without a stand-in in tests/fake_cuda.py: {missing}"
    exercised = fake["cuda"].called + cuda.called
    idle = sorted(name for name in used if not exercised[name])
    assert not idle, f"torch.cuda functions no test drives: {idle}"


def test_doctor_prints_what_a_run_here_would_use(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["torch"] == torch.__version__ and facts["attention kernel"] in ("flash", "sdpa")
    assert cli.main(["doctor"]) == 0
    assert "precision (auto)" in capsys.readouterr().out


def test_doctor_require_gpu_says_why_a_machine_has_none(monkeypatch, capsys):
    """`scaling doctor --require-gpu` (README, "On a GPU cluster"): a CPU build of torch and a CUDA
    build without a visible GPU are errors that say what to do; a GPU passes."""
    if torch.version.cuda is None:
        assert cli.main(["doctor", "--require-gpu"]) == 1
        assert "is a CPU build: install a CUDA build (`make setup-gpu`" in capsys.readouterr().err
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["doctor", "--require-gpu"]) == 1
    assert "built for CUDA 12.8 but sees no GPU: run this on a GPU node" in capsys.readouterr().err
    FakeCuda().install(monkeypatch)
    assert cli.main(["doctor", "--require-gpu"]) == 0
    assert "cuda available          yes" in capsys.readouterr().out
