"""train.loggers: names checked where they enter, a missing package is a one-line error, and the
trackers' own files read back offline (TensorBoard's EventAccumulator, W&B's offline run files),
also across a resumed run."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_spec

from scaling import store
from scaling.cli import main
from scaling.errors import UserError
from scaling.trackers import Tracker, parse_trackers
from trainer.loggers import TENSORBOARD_DIR, TRACKERS_FILE, TRAIN_KEYS
from trainer.loop import train

STEPS = 12


@pytest.mark.parametrize(
    "names,message",
    [
        (["foo"], "unknown logger 'foo': choose from jsonl, tensorboard, wandb"),
        (["tensorboard:x"], "only wandb takes a project"),
        (["wandb:a/b/c"], "only wandb takes a project"),
        (["wandb", "wandb:p"], "wandb is listed twice"),
    ],
)
def test_bad_names_are_one_line_errors(names, message):
    with pytest.raises(UserError, match=message) as e:
        parse_trackers(names)
    assert "\n" not in str(e.value)


def test_jsonl_is_always_on_and_projects_are_parsed():
    assert parse_trackers([]) == [Tracker("jsonl")]
    assert parse_trackers(["wandb:team/proj", "jsonl"]) == [Tracker("jsonl"), Tracker("wandb", "team/proj")]


def test_config_checks_loggers_before_planning(capsys):
    assert main(["plan", "smoke", "train.loggers=[jsonl,tensorbord]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown logger 'tensorbord'" in err


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_missing_package_names_the_extra_before_anything_is_written(kind, monkeypatch, tmp_path, byte_shards):
    """As on a machine without the package: its import fails (None in sys.modules)."""
    monkeypatch.setitem(sys.modules, kind, None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(UserError) as e:
        parse_trackers([kind])
    assert str(e.value) == (
        f"train.loggers includes {kind}, but the {kind} package is not installed: "
        f"pip install 'dllm-scaling[{kind}]'"
    )
    with pytest.raises(UserError, match=rf"pip install 'dllm-scaling\[{kind}\]'"):
        train(tiny_spec(byte_shards, loggers=(kind,)), tmp_path / "run", log=lambda m: None)
    assert not (tmp_path / "run" / "spec.yaml").exists() and not (tmp_path / "run" / "status.json").exists()


def _crashed_and_resumed(run: Path, spec) -> list[dict]:
    """Trains `spec`, then rewinds the folder to its step-8 checkpoint as a process killed after
    logging steps 9-12 but before checkpointing them leaves it, and resumes; returns the final
    metrics.jsonl rows."""
    saved = run.parent / "step-8"

    def keep_step_8(line: str) -> None:
        if f"step 9/{STEPS} loss" in line:
            shutil.copytree(run / store.CHECKPOINT_DIR, saved)

    train(spec, run, log=keep_step_8)
    (run / store.RESULT_FILE).unlink()
    shutil.rmtree(run / store.CHECKPOINT_DIR)
    shutil.copytree(saved, run / store.CHECKPOINT_DIR)
    result = train(spec, run, log=lambda m: None)
    assert result.restarts == 1 and result.steps == STEPS
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return rows


def _spec(shards, kind):
    return tiny_spec(shards, arm="ar", steps=STEPS, checkpoint_every=4, sweep="demo", loggers=(kind,))


def test_tensorboard_events_read_back(tmp_path, byte_shards):
    pytest.importorskip(
        "tensorboard", reason="TensorBoard is not installed: pip install 'dllm-scaling[tensorboard]'"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, spec = tmp_path / "run", _spec(byte_shards, "tensorboard")
    rows = _crashed_and_resumed(run, spec)
    events = EventAccumulator(str(run / TENSORBOARD_DIR))
    events.Reload()
    assert len(list((run / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2  # one per process
    for field, tag in TRAIN_KEYS.items():
        if any(r[field] is None for r in rows):  # mfu: None where the device's peak is unknown
            continue
        scalars = events.Scalars(tag)
        # steps 9-12 of the first process were purged by the resumed one, which logged them again
        assert [s.step for s in scalars] == [r["step"] for r in rows], tag
        assert [s.value for s in scalars] == pytest.approx([r[field] for r in rows], rel=1e-6), tag
    evals = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert [(s.step, s.value) for s in events.Scalars("val/loss")] == [
        (e["step"], pytest.approx(e["val_loss"], rel=1e-6)) for e in evals
    ]
    (text,) = events.Tensors("spec/text_summary")  # written once, by the first process
    assert f"run_key: {spec.run_key}".encode() in text.tensor_proto.string_val[0]


def _wandb_records(path: Path) -> list:
    """The protobuf records of a W&B offline run file: a 7-byte header (":W&B", magic, version),
    then LevelDB-style log blocks of 32 KiB holding records (CRC, length, type) in one or more
    fragments."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, payloads, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            payloads.append(chunk)
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            payloads.append(pending + chunk)
    records = []
    for p in payloads:
        r = pb.Record()
        r.ParseFromString(p)
        records.append(r)
    return records


def _finished(path: Path, timeout: float = 30.0) -> list:
    """The records of a W&B run file once its exit record is on disk: W&B's service process may
    still be writing the file when finish() has returned."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = _wandb_records(path)
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                return records
        except (DecodeError, AssertionError):  # the header or a record half written
            pass
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout:.0f} s"
        time.sleep(0.2)


def test_wandb_offline_run_read_back_and_resumed(tmp_path, byte_shards, monkeypatch):
    pytest.importorskip("wandb", reason="W&B is not installed: pip install 'dllm-scaling[wandb]'")
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)  # offline because nothing is configured
    run = tmp_path / "run"
    spec = _spec(byte_shards, "wandb")
    rows = _crashed_and_resumed(run, spec)
    run_id = json.loads((run / TRACKERS_FILE).read_text())["wandb_id"]
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{run_id}.wandb"] * 2  # the resumed process: the same W&B run
    histories = []
    for f in files:
        records = _finished(f)
        (head,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert (head.run_id, head.display_name, head.run_group) == (run_id, spec.run_key, "demo")
        assert list(head.tags) == ["ar", "1e9", "d16-l1"]
        config = {i.key: json.loads(i.value_json) for i in head.config.update}
        assert config["arm"] == "ar" and config["run_key"] == spec.run_key and config["loggers"] == ["wandb"]
        history = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                history[r.history.step.num] = items
        (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
        assert exit_record.exit_code == 0
        histories.append(history)
    first, resumed = histories
    assert sorted(first) == list(range(1, STEPS + 1)) and sorted(resumed) == list(range(9, STEPS + 1))
    for r in rows:
        logged = (resumed if r["step"] >= 9 else first)[r["step"]]
        assert logged["train/loss"] == pytest.approx(r["train_loss"], rel=1e-12)
        assert logged["train/lr"] == pytest.approx(r["lr"], rel=1e-12)
        assert logged["progress/tokens"] == r["tokens"]
        assert logged["progress/flops_attention"] == r["flops"]["attention"]
    assert "val/loss" in resumed[STEPS]
