"""bench/gpu_check.py, the one-shot GPU check: its --smoke run on the CPU goes through every section
and writes each one's row and the markdown; a section that raises is recorded while the others
run, and each section's record is on disk before the next one starts; the flash-attn comparison
(which runs only where flash_attn imports) with stand-ins for the library, one right, one wrong."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest
import torch
from fake_cuda import _flash_attn_func

import trainer.model
from scaling.arms import ARMS
from scaling.paths import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "bench" / "gpu_check.py"
ABSENT_ON_THE_GPU_MACHINE = ("hydra", "omegaconf", "submitit")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One `--smoke` run as a script, from a folder outside the repository, without the packages
    the GPU machine lacks (the check may import only the trainer and the scaling core)."""
    where = tmp_path_factory.mktemp("gpu_check")
    out = where / "out"
    absent = "; ".join(f"sys.modules[{m!r}] = None" for m in ABSENT_ON_THE_GPU_MACHINE)  # import fails
    run = f"import runpy, sys; {absent}; sys.argv[0] = {str(SCRIPT)!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    proc = subprocess.run(
        [sys.executable, "-c", run, "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=where,
        timeout=600,
    )
    lines = (out / "gpu_check.jsonl").read_text().splitlines() if (out / "gpu_check.jsonl").exists() else []
    return {
        "proc": proc,
        "records": [json.loads(line) for line in lines],
        "markdown": (out / "gpu_check.md").read_text() if (out / "gpu_check.md").exists() else "",
    }


@pytest.mark.slow
def test_the_smoke_run_goes_through_every_section(smoke, gpu_check):
    proc = smoke["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    progress = proc.stdout.splitlines()
    assert progress and all(re.match(r"\[\d\d:\d\d:\d\d \+ *\d+\.\ds\] ", line) for line in progress)
    header, *records = smoke["records"]
    assert header["section"] == "header" and header["mode"] == "smoke"
    assert [r["section"] for r in records] == list(gpu_check.NAMES)
    flash_imports = trainer.model.flash_attn_func is not None
    for r in records:
        skipped = r["section"] == "flash" and not flash_imports
        assert r["status"] == ("skipped" if skipped else "ok"), r
        assert r["error"] is None and r["tables"] and all(r["tables"].values())
        assert f"(`{r['section']}`)" in smoke["markdown"]
    assert f"{len(records)} of {len(records)} sections finished" in smoke["markdown"]
    by = {r["section"]: r["tables"] for r in records}

    arms = by["arms"]["eager training steps"]
    micro = gpu_check.SMOKE.micro_batches
    assert sorted((r["arm"], r["micro_batch"]) for r in arms) == [(a, m) for a in sorted(ARMS) for m in micro]
    assert all(r["tokens_per_s"] > 0 and r["MFU"] > 0 and r["/ matmul"] > 0 for r in arms)
    assert "| mdlm-ce | 2 |" in smoke["markdown"]

    # bf16 autocast on the CPU trains and validates within the targets on the tiny shape
    assert by["precision"]["final loss"][0]["pass"] is True
    assert [r["pass"] for r in by["precision"]["validation NELBO"]] == [True, True]
    training = by["precision"]["training"]
    assert all(r["final loss (mean of last 20)"] < r["first loss"] for r in training)  # it learns

    # the trainer resumes bitwise on the CPU: a stop that lost or repeated a step would differ here
    resume = by["resume"]["uninterrupted vs stopped and resumed"]
    assert len(resume) == 3 and all(r["bitwise equal"] is True for r in resume)

    stall = by["stall"]["data loading"]
    assert [r["global batch"] for r in stall] == [g for g, _ in gpu_check.SMOKE.stall_batches]
    assert all(r["wait per step, ms"] >= 0 and r["step_s"] > 0 for r in stall)

    compiled = by["compile"]["compiled training steps"]
    assert [r["arm"] for r in compiled] == list(gpu_check.SMOKE.compile_arms)
    assert all(r["compile_s"] > 0 and r["tokens_per_s"] > 0 and r["vs eager"] > 0 for r in compiled)


def context(gpu_check, tmp_path):
    return gpu_check.Context(torch.device("cpu"), gpu_check.SMOKE, tmp_path, lambda m: None)


def test_a_failing_section_is_recorded_and_the_others_still_run(gpu_check, tmp_path):
    out = tmp_path / "out"
    seen = {}

    def boom(ctx):
        raise RuntimeError("boom in the middle")

    def peek(ctx):  # runs after the failing section: its record must already be on disk
        seen["jsonl"] = (out / gpu_check.JSONL).read_text()
        seen["md"] = (out / gpu_check.MARKDOWN).read_text()
        return gpu_check.Outcome({"numbers": [{"x": 1.5, "y | z": "a|b"}]}, ["a note"])

    sections = [
        gpu_check.Section("boom", "A section that raises", "It raises.", boom),
        gpu_check.Section("peek", "A section after it", "It reads the report.", peek),
        gpu_check.SECTIONS[0],  # env: a real one
    ]
    header = {"device": "cpu", "mode": "smoke", "command": "test", "started": "now", "torch": "x"}
    header |= {"cuda": None, "git_sha": None}
    report = gpu_check.Report(out, header, sections)
    records = gpu_check.run_sections(sections, context(gpu_check, tmp_path), report, max_s=600)

    assert [(r["section"], r["status"]) for r in records] == [
        ("boom", "failed"),
        ("peek", "ok"),
        ("env", "ok"),
    ]
    assert records[0]["error"] == "RuntimeError: boom in the middle" and records[0]["tables"] == {}
    assert (
        '"boom"' in seen["jsonl"] and "boom in the middle" in seen["md"] and "_not run (yet)_" in seen["md"]
    )
    lines = [json.loads(line) for line in (out / gpu_check.JSONL).read_text().splitlines()]
    assert [r["section"] for r in lines] == ["header", "boom", "peek", "env"]
    md = (out / gpu_check.MARKDOWN).read_text()
    assert "_failed" in md and "`RuntimeError: boom in the middle`" in md
    assert "| x | y \\| z |" in md and "| 1.5 | a\\|b |" in md and "- a note" in md
    assert "| flash-attn |" in md and "3 of 3 sections finished" in md


def test_sections_after_the_time_limit_are_skipped(gpu_check, tmp_path):
    ran = []
    section = gpu_check.Section("s", "S", "", lambda ctx: ran.append(1) or gpu_check.Outcome())
    header = {"device": "cpu", "mode": "smoke", "command": "t", "started": "now", "torch": "x", "cuda": None}
    report = gpu_check.Report(tmp_path, header | {"git_sha": None}, [section])
    records = gpu_check.run_sections([section], context(gpu_check, tmp_path), report, max_s=-1)
    assert not ran and records[0]["status"] == "skipped" and "--max-s" in records[0]["notes"][0]


def wrong_flash(q, k, v, causal=False):
    """A flash-attn that ignores the causal mask."""
    return _flash_attn_func(q, k, v, causal=False)


@pytest.mark.parametrize("flash, right", [(_flash_attn_func, True), (wrong_flash, False)])
def test_the_flash_comparison_with_a_stand_in(gpu_check, tmp_path, monkeypatch, flash, right):
    monkeypatch.setattr(trainer.model, "flash_attn_func", flash)
    outcome = gpu_check.flash_section(context(gpu_check, tmp_path))
    rows = outcome.tables["attention outputs and gradients (bf16)"]
    assert [(r["head_dim"], r["mask"]) for r in rows] == [
        (d, m) for d in (64, 80, 128) for m in ("bidirectional", "causal")
    ]
    verdict = {r["mask"]: r["pass (flash err <= 2 x sdpa err)"] for r in rows}
    assert verdict == {"bidirectional": True, "causal": right}
    losses = outcome.tables[f"{gpu_check.SMOKE.flash_steps}-step losses"]
    assert [r["arm"] for r in losses] == ["mdlm-ce", "ar"]
    assert all(r["runs"] == "sdpa vs sdpa" for r in losses)  # on a CPU the model never takes flash-attn
    assert trainer.model.flash_attn_func is flash  # restored after the SDPA runs


def test_bad_options_are_one_line_errors(gpu_check, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--out", str(out), "--sections", "nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    monkeypatch.setenv("SCALING_DEVICE", "cpu")  # as on a machine without CUDA
    assert gpu_check.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device is available" in err and "--smoke" in err
    assert not (out / gpu_check.JSONL).exists()
