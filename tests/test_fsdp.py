"""Full sharding (FSDP2's fully_shard, gloo on the CPU) trains the same run as DDP and as one
process, and its sharded checkpoints resume at another world size.

One run of a 2-layer model (so that the blocks and the root are separate FSDP units) is trained
three ways from scratch: one process (micro-batch 4; the model is not sharded, its checkpoints
are), 2-process DDP and 2-process FSDP (micro-batch 2: two micro-batches per process, the second
synchronising). Then it is resumed from the step-4 checkpoint of one of them at another world
size: the FSDP run's at one process, the single process's at 2-process FSDP (micro-batch 4: no
accumulation). Every one must give the uninterrupted runs' losses and gradient norms. A DDP
run's .pt checkpoint loads into a sharded model and optimizer (a run whose sharding changed
between restarts) in-process, on a 1-process gloo group."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import tiny_spec
from test_ddp import curve, train

from scaling.errors import UserError
from scaling.flops import ModelShape
from scaling.spec import RunSpec
from trainer import checkpoint

STEPS = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory, byte_shards):
    """name -> run folder: the three runs from scratch, then the three resumed ones."""
    root = tmp_path_factory.mktemp("fsdp")
    spec = tiny_spec(
        byte_shards,
        "duo",
        steps=STEPS,
        global_batch=8,
        micro_batch=2,
        checkpoint_every=4,
        sharding="fsdp",
        model=ModelShape("d16-l2", 16, 2, 2, 258, 32),
        # 7 windows in chunks of 1 at micro-batch 2: under FSDP one process has a chunk less
        **{"eval.every": 4, "eval.sequences": 7},
    )

    def spec_file(name, **changes):
        path = root / f"{name}.yaml"
        path.write_text(replace(spec, **changes).to_yaml())  # the same run key
        return path

    def run(name, spec_path, processes, resume_from=None):
        out = root / name
        if resume_from is not None:  # as if the run had stopped after its step-4 checkpoint
            shutil.copytree(root / resume_from, out)
            for gone in ("result.json", f"checkpoints/step-{STEPS}.pt", f"checkpoints/step-{STEPS}.sha256"):
                (out / gone).unlink()
        done = train(spec_path, out, processes)
        assert done.returncode == 0, done.stdout + done.stderr
        if resume_from is not None:
            assert "resumed" in done.stdout and "from step 4" in done.stdout
        return out

    return {
        "one": run("one", spec_file("one", micro_batch=4), 1),
        "ddp": run("ddp", spec_file("ddp", sharding="ddp"), 2),
        "fsdp": run("fsdp", spec_file("fsdp"), 2),
        "fsdp->one": run("fsdp->one", spec_file("whole", micro_batch=8), 1, resume_from="fsdp"),
        "one->fsdp": run("one->fsdp", spec_file("fsdp4", micro_batch=4), 2, resume_from="one"),
    }


def _result(run_dir) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def test_fsdp_ddp_and_one_process_give_the_same_losses(runs):
    reference = runs["one"]
    for name in ("ddp", "fsdp"):
        assert _result(runs[name])["world_size"] == 2
        assert _result(runs[name])["val_loss"] == pytest.approx(_result(reference)["val_loss"], rel=1e-5)
        for a, b in zip(curve(reference), curve(runs[name]), strict=True):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5), name
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), name


@pytest.mark.parametrize("name", ["fsdp->one", "one->fsdp"])
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(runs, name):
    whole, resumed = runs["fsdp"], runs[name]
    assert _result(resumed)["restarts"] == 1
    assert _result(resumed)["world_size"] == (1 if name == "fsdp->one" else 2)
    assert _result(resumed)["device"] == _result(whole)["device"]
    assert _result(resumed)["val_loss"] == pytest.approx(_result(whole)["val_loss"], rel=1e-5)
    after = [(a, b) for a, b in zip(curve(whole), curve(resumed), strict=True) if a["step"] > 4]
    assert len(after) == STEPS - 4
    for a, b in after:
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def test_sharded_checkpoints_and_full_final_weights(runs):
    folder = runs["fsdp"] / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-4", f"step-{STEPS}.pt", f"step-{STEPS}.sha256"]
    shards = folder / "step-4"
    names = {".metadata", "__0_0.distcp", "__1_0.distcp", checkpoint.STATE}
    assert {p.name for p in shards.iterdir()} == names | {checkpoint.DIGESTS}
    lines = (shards / checkpoint.DIGESTS).read_text().splitlines()
    assert {line.split("  ")[1]: line.split("  ")[0] for line in lines} == {
        n: hashlib.sha256((shards / n).read_bytes()).hexdigest() for n in names
    }  # sha256sum -c reads it
    assert "optimizer" not in checkpoint.read(folder / f"step-{STEPS}.pt")  # a done run's weights only
    # the one process wrote a sharded checkpoint too (its model is whole): it resumed at 2 processes
    assert (runs["one"] / "checkpoints" / "step-4" / checkpoint.DIGESTS).exists()

    spec, model = checkpoint.load_final_model(runs["fsdp"])
    _, alone = checkpoint.load_final_model(runs["one"])
    assert spec.sharding == "fsdp"
    for (name, a), b in zip(alone.state_dict().items(), model.state_dict().values(), strict=True):
        assert not isinstance(b, torch.distributed.tensor.DTensor), name
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


def test_a_damaged_sharded_checkpoint_is_refused(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["fsdp"], run)
    shards = run / "checkpoints" / "step-4"
    key = json.loads((run / "result.json").read_text())["run_key"]
    assert checkpoint.read(shards)["shards"] == str(shards)
    data = bytearray((shards / "__1_0.distcp").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (shards / "__1_0.distcp").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="__1_0.distcp does not match its sha256 digest"):
        checkpoint.read(shards)
    warnings: list[str] = []
    assert checkpoint.load_latest(run, key, warn=warnings.append)["step"] == STEPS  # the final one
    assert warnings == []
    (run / "checkpoints" / f"step-{STEPS}.pt").write_bytes(b"torn")
    with pytest.raises(UserError, match="no usable checkpoint"):
        checkpoint.load_latest(run, key, warn=warnings.append)
    assert len(warnings) == 2 and "does not match" in warnings[1]
    (shards / "__1_0.distcp").unlink()
    with pytest.raises(ValueError, match="__1_0.distcp is missing"):
        checkpoint.read(shards)
    (shards / checkpoint.DIGESTS).unlink()  # a write interrupted before its rename has no digests
    with pytest.raises(ValueError, match="no digests file"):
        checkpoint.read(shards)
    (run / "checkpoints" / "step-6.partial").mkdir()  # a write that did not finish: not a checkpoint
    assert [s for s, _ in checkpoint.listing(run)] == [STEPS, 4]


def test_a_ddp_checkpoint_loads_into_a_sharded_model_and_optimizer(runs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from trainer import sharding
    from trainer.distributed import DistEnv
    from trainer.loop import param_groups
    from trainer.model import DiT

    saved = checkpoint.read(runs["ddp"] / "checkpoints" / "step-4.pt")
    model = DiT(RunSpec.from_dict(saved["spec"]).model)
    model.load_state_dict(saved["model"])
    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:  # wrap shards whenever the run has several processes; a 1-process group stands in for them
        sharding.wrap(model, "fsdp", DistEnv(0, 2, 0), torch.device("cpu"), torch.float32)
        assert sharding.sharded(model)
        optimizer = torch.optim.AdamW(param_groups(model, 0.1))
        checkpoint.load_full_optimizer(model, optimizer, saved["optimizer"])
        weights, state = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    finally:
        dist.destroy_process_group()
    # the .pt numbers the parameters in the order of the param groups, which name them here
    for i, name in enumerate(n for g in state["param_groups"] for n in g["params"]):
        mine, theirs = state["state"][name], saved["optimizer"]["state"][i]
        torch.testing.assert_close(mine["exp_avg"], theirs["exp_avg"], msg=name)
        torch.testing.assert_close(mine["exp_avg_sq"], theirs["exp_avg_sq"], msg=name)
        assert float(mine["step"]) == float(theirs["step"]) == 4
    for name, value in saved["model"].items():
        torch.testing.assert_close(weights[name], value, msg=name)


def test_the_root_unit_stays_gathered_from_forward_to_backward():
    """What scaling/memory.py counts for FSDP: after the forward the blocks hold only their shards,
    the root unit (embedding, time MLP, final layer, head) its gathered weights until the backward."""
    from torch.distributed.tensor import DTensor

    from trainer import sharding
    from trainer.distributed import DistEnv
    from trainer.model import DiT

    def sharded_by_unit(model) -> dict[str, bool]:
        units: dict[str, set[bool]] = {}
        for name, p in model.named_parameters():
            units.setdefault(name.split(".")[0], set()).add(isinstance(p, DTensor))
        return {unit: all(kinds) for unit, kinds in units.items()}

    model = DiT(ModelShape("d16-l2", 16, 2, 2, 258, 32))
    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        sharding.wrap(model, "fsdp", DistEnv(0, 2, 0), torch.device("cpu"), torch.float32)
        out = model(torch.randint(0, 258, (2, 32)), torch.rand(2))
        after_forward = sharded_by_unit(model)
        out.float().sum().backward()
        after_backward = sharded_by_unit(model)
    finally:
        dist.destroy_process_group()
    assert after_forward.pop("blocks") and not any(after_forward.values()), after_forward
    assert all(after_backward.values()), after_backward
