"""The training loop in-process: the run-folder contract, schedule, validation, divergence, bad input."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec

from scaling import cli, store
from scaling.arms import ARMS
from scaling.flops import CONVENTIONS, train_flops_per_seq
from trainer import checkpoint, data
from trainer.arms import get_arm
from trainer.loop import check_spec, evaluate, lr_at, param_groups, train
from trainer.model import DiT


def _quiet(_msg: str) -> None:
    pass


def tree(folder: Path) -> dict[str, str]:
    """Every file under folder (hidden ones included) with a digest of its content."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_lr_schedule_warmup_then_cosine_to_min():
    from scaling.flops import ModelShape
    from scaling.spec import DataSpec, EvalSpec, OptimSpec, RunSpec

    spec = RunSpec(
        "ar",
        ModelShape("m", 16, 1, 2, 257, 32),
        1e9,
        "attention",
        12,
        4,
        OptimSpec(lr=1.0, min_lr=0.1, warmup_steps=2),
        DataSpec("c", "bytes", 256, 32),
        EvalSpec(1, 1),
    )
    lrs = [lr_at(spec, s) for s in range(12)]
    assert lrs[:2] == [0.5, 1.0]
    assert lrs[2] == 1.0  # cosine starts at the peak
    progress = [(s - 2) / 10 for s in range(2, 12)]
    assert lrs[2:] == pytest.approx([0.1 + 0.45 * (1 + math.cos(math.pi * p)) for p in progress], abs=1e-15)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_weight_decay_only_on_linear_weights(byte_shards):
    model = DiT(tiny_spec(byte_shards).model)
    decay, rest = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) for n in [f"{n}.weight"]
    }
    assert "embed.weight" in {names[id(p)] for p in rest["params"]}
    assert sum(p.numel() for g in (decay, rest) for p in g["params"]) == sum(
        p.numel() for p in model.parameters()
    )
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0


def test_run_folder_contract(tmp_path, byte_shards):
    spec = tiny_spec(byte_shards, steps=6, checkpoint_every=2)
    result = train(spec, tmp_path, log=_quiet)
    assert asdict(result) == json.loads((tmp_path / "result.json").read_text())
    assert store.read_status(tmp_path).state == "done"
    assert store.load_run_spec(tmp_path).run_key == spec.run_key
    per_seq = {c: train_flops_per_seq(spec.model, c, spec.arm) for c in CONVENTIONS}
    assert result.flops == {c: 6 * 4 * f for c, f in per_seq.items()}
    assert result.tokens == 6 * 4 * 32 and result.steps == 6 and result.status == "done"
    assert result.val_ppl == pytest.approx(math.exp(result.val_loss))
    assert result.restarts == 0 and result.diverged_step is None and result.world_size == 1
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert {
        "step",
        "tokens",
        "flops",
        "train_loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "mfu",
        "wall_s",
    } <= set(metrics[0])
    assert metrics[2]["flops"]["attention"] == 3 * 4 * per_seq["attention"]
    assert [m["lr"] for m in metrics] == [lr_at(spec, s) for s in range(6)]
    evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [3, 6]
    assert evals[-1]["val_loss"] == result.val_loss and evals[-1]["val_loss_stderr"] == result.val_loss_stderr
    assert [s for s, _ in checkpoint.listing(tmp_path)] == [6, 4]  # the last two kept
    # idempotent: a finished run returns its result and changes nothing
    before = tree(tmp_path)
    assert train(spec, tmp_path, log=_quiet) == result
    assert tree(tmp_path) == before


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_every_arm_trains_and_learns(tmp_path, byte_shards, arm):
    spec = tiny_spec(byte_shards, arm, steps=8, **{"optim.lr": 1e-2, "eval.every": 1})
    result = train(spec, tmp_path, log=_quiet)
    evals = [json.loads(line)["val_loss"] for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert result.status == "done" and len(evals) == 8
    assert evals[-1] < evals[0] - 0.1  # 8 steps at lr 1e-2 leave the uniform start (ln 256 = 5.5)


def test_validation_is_a_fixed_number_for_fixed_weights(byte_shards):
    spec = tiny_spec(byte_shards, "mdlm-elbo")
    plan = check_spec(spec, 1)
    shards = data.open_shards(byte_shards)
    windows = data.validation_windows(shards.val, 32, spec.eval.sequences)
    torch.manual_seed(0)
    model = DiT(spec.model)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a non-uniform model, so masks matter
    arm = get_arm(spec.arm, spec.model.vocab)
    from trainer.distributed import DistEnv

    first = evaluate(model, arm, windows, spec, plan, DistEnv(), torch.device("cpu"))
    torch.rand(10)  # global RNG use in between changes nothing
    assert evaluate(model, arm, windows, spec, plan, DistEnv(), torch.device("cpu")) == first
    other = replace(spec, eval=replace(spec.eval, seed=99))
    assert evaluate(model, arm, windows, other, plan, DistEnv(), torch.device("cpu")) != first
    # the standard error is that of the per-window means
    ar = get_arm("ar", spec.model.vocab)
    mean, err = evaluate(model, ar, windows, spec, plan, DistEnv(), torch.device("cpu"))
    with torch.no_grad():
        per = ar.validation_loss(model, torch.from_numpy(windows), None, torch.Generator()).double()
    assert mean == pytest.approx(per.mean().item(), rel=1e-12)
    assert err == pytest.approx(per.std().item() / math.sqrt(len(per)), rel=1e-9)


def test_divergence_stops_with_the_step(tmp_path, byte_shards):
    spec = tiny_spec(
        byte_shards,
        "ar",
        steps=30,
        **{
            "optim.lr": 1e6,
            "optim.warmup_steps": 0,
            "optim.min_lr": 1e6,
            "optim.grad_clip": 0.0,
            "eval.every": 0,
        },
    )
    result = train(spec, tmp_path, log=_quiet)
    assert result.status == "diverged" and 1 <= result.diverged_step <= 30
    assert result.steps == result.diverged_step - 1 and result.val_loss is None
    status = store.read_status(tmp_path)
    assert status.state == "diverged" and str(result.diverged_step) in status.reason
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, result.diverged_step))
    assert all(math.isfinite(m["train_loss"]) for m in metrics)


def test_corrupted_newest_checkpoint_falls_back_to_the_previous(tmp_path, byte_shards, capsys):
    spec = tiny_spec(byte_shards, "eso", steps=6, checkpoint_every=2)
    reference = train(spec, tmp_path / "ref", log=_quiet)
    run = tmp_path / "run"
    train(replace(spec, steps=6), run, log=_quiet)
    (run / "result.json").unlink()
    newest = run / "checkpoints" / "step-6.pt"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside tensor data: torch.load alone would not notice
    newest.write_bytes(bytes(raw))
    warnings = []
    result = train(spec, run, log=warnings.append)
    assert any("step-6.pt is unusable" in w for w in warnings)
    assert any("resumed" in w and "step 4" in w for w in warnings)
    assert result.val_loss == reference.val_loss and result.restarts == 1


def _cli(*args: str) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["train", *args])
    return code, err.getvalue()


def _write_spec(path: Path, spec, drop: str | None = None, **edits) -> Path:
    d = spec.to_dict()
    d.pop("run_key")
    if drop:
        d.pop(drop)
    d.update(edits)
    path.write_text(json.dumps(d))  # JSON is YAML
    return path


def test_bad_input_exits_2_and_leaves_the_run_folder_alone(tmp_path, byte_shards):
    spec = tiny_spec(byte_shards, steps=4, checkpoint_every=2)
    other = tiny_spec(byte_shards, steps=5, checkpoint_every=2)
    foreign = tmp_path / "foreign"
    train(other, foreign, log=_quiet)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    model = spec.model.to_dict()
    cases = {
        "unknown arm": (_write_spec(tmp_path / "a.yaml", spec, arm="mdlm-foo"), "unknown arm"),
        "missing field": (_write_spec(tmp_path / "b.yaml", spec, drop="steps"), "missing field 'steps'"),
        "small model vocab": (
            _write_spec(tmp_path / "c.yaml", spec, model={**model, "vocab": 200}),
            "vocabulary",
        ),
        "seq_len beyond data": (
            _write_spec(
                tmp_path / "d.yaml",
                spec,
                model={**model, "seq_len": 40_000},
                data={**spec.to_dict()["data"], "seq_len": 40_000},
            ),
            "longer than",
        ),
    }
    for name, (path, message) in cases.items():
        before = tree(run)
        code, err = _cli(str(path), "--out", str(run))
        assert code == 2 and message in err and err.count("\n") == 1, (name, err)
        assert tree(run) == before, name
    spec_file = _write_spec(tmp_path / "ok.yaml", spec)
    # a checkpoint of another run
    (run / "checkpoints").mkdir()
    for p in (foreign / "checkpoints").iterdir():
        (run / "checkpoints" / p.name).write_bytes(p.read_bytes())
    before = tree(run)
    code, err = _cli(str(spec_file), "--out", str(run))
    assert code == 2 and "belongs to run" in err and tree(run) == before
    # an unreadable one
    for p in (run / "checkpoints").iterdir():
        p.write_bytes(b"garbage")
    before = tree(run)
    code, err = _cli(str(spec_file), "--out", str(run))
    assert code == 2 and "no usable checkpoint" in err and tree(run) == before
    # a folder holding another run's spec
    code, err = _cli(str(spec_file), "--out", str(foreign))
    assert code == 2 and "holds run" in err


def test_checkpoints_by_the_clock_and_their_time_is_recorded(tmp_path, byte_shards):
    spec = tiny_spec(byte_shards, steps=8, checkpoint_minutes=1e-7)  # due at every read of the losses
    result = train(spec, tmp_path / "clock", log=_quiet)
    assert [s for s, _ in checkpoint.listing(tmp_path / "clock")] == [8, 7]
    assert result.checkpoint_s is not None and result.checkpoint_s >= 0
    plain = train(tiny_spec(byte_shards, steps=8), tmp_path / "plain", log=_quiet)
    assert [s for s, _ in checkpoint.listing(tmp_path / "plain")] == [8]
    assert plain.val_loss == result.val_loss  # checkpoints change nothing
    assert "optimizer" not in checkpoint.read(checkpoint.listing(tmp_path / "plain")[0][1])  # a done run
    (tmp_path / "plain" / "result.json").unlink()  # its result deleted: it ends again from that checkpoint
    assert train(tiny_spec(byte_shards, steps=8), tmp_path / "plain", log=_quiet).val_loss == plain.val_loss
