"""The one-shot GPU check (issue 12): what the trainer does on one GPU, measured in one unattended run.

    python3 bench/gpu_check.py --out $OUT/gpu                    # on the GPU machine, at most ~5 minutes
    python3 bench/gpu_check.py --out /tmp/gpu --sections env arms
    python3 bench/gpu_check.py --out /tmp/smoke --smoke          # tiny shapes on the CPU (the test suite)
    python3 bench/gpu_check.py --out $OUT/gpu --sections resume --deterministic

Sections, in the order they run (docs/gpu.md says what each one measures and how to read it):
  env        device, torch and CUDA versions, flash-attn importable or not, the card's datasheet
             bf16 peak and a large bf16 matmul measured on it (the second reference for MFU)
  arms       every arm at the study's 113M shape (d 768, 12 layers, T 2048, V 32001), eager: tokens/s,
             MFU and peak memory at micro-batch 8, 16, 32 (out of memory is a row saying so)
  precision  bf16 vs fp32 on the 34M shape: 200 steps each on a learnable synthetic stream; final
             training loss within 1%, validation NELBO of the same weights within 0.005 nats
  flash      flash-attn vs SDPA (outputs and gradients, both masks, head dims 64/80/128, a 20-step
             loss match), only where flash_attn imports
  resume     trainer.loop.train N steps uninterrupted vs stopped by SIGUSR2 halfway and resumed
  stall      data-loading stall per step at the 6M shape (BatchLoader.wait_s vs the step time)
  compile    torch.compile of mdlm-ce and ar at the 113M shape: compile time apart, then tokens/s
             and MFU (last: the slowest section, so a run cut short loses only it)

Every section runs the trainer's own pieces (TrainStep, evaluate, train, BatchLoader,
trainer.accelerator) on synthetic in-memory tokens, except `resume`, which prepares a small
synthetic text corpus through trainer.data. Each section's result is appended to gpu_check.jsonl
and gpu_check.md is rewritten as soon as it finishes, so a run cut off by a time limit still
reports what it did; a section that raises is recorded with its error and the others run.
Exit status: 0 when no section failed (targets missed are results, not failures), 1 otherwise,
2 for bad options.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# the repository root, so that the script runs without the project installed (the GPU machine)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

import trainer.model
from bench.train_throughput import matmul_peak
from scaling import atomic, paths
from scaling.arms import ARMS
from scaling.errors import UserError
from scaling.flops import ModelShape, params_total, train_flops_per_seq
from scaling.hardware import peak_bf16
from scaling.spec import DataSpec, EvalSpec, OptimSpec, RunSpec
from trainer import accelerator, data
from trainer.arms import get_arm
from trainer.distributed import DistEnv
from trainer.loader import BatchLoader
from trainer.loop import SYNC_EVERY, Preempted, TrainStep, check_spec, evaluate, lr_at, param_groups, train
from trainer.model import DiT, attention_backend

JSONL, MARKDOWN = "gpu_check.jsonl", "gpu_check.md"
MFU_TARGET = 0.40  # of the datasheet bf16 peak, for the arms below (issue 12)
MFU_TARGET_ARMS = ("mdlm-ce", "ar")
LOSS_REL_TARGET = 0.01  # bf16 vs fp32 final training loss
NELBO_TARGET = 0.005  # nats: validation NELBO of the same weights, bf16 vs fp32 arithmetic
RECENT = 20  # steps averaged into a "final" training loss (as result.json's train_loss)


# --- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """The shapes and step counts of one mode: `full` for the GPU, `smoke` for the CPU test."""

    name: str
    big: ModelShape  # the study's 113M shape (arms, compile)
    micro_batches: tuple[int, ...]
    warmup: int  # steps before timing (allocator, kernel selection)
    timed: int
    compile_arms: tuple[str, ...]
    compile_micro: int
    compile_backend: str  # inductor on the GPU; eager in the smoke (dynamo traces, nothing compiles)
    matmul_n: int
    small: ModelShape  # the 34M shape (precision)
    precision_steps: int
    precision_batch: int
    val_windows: int
    flash_seq: int
    flash_steps: int
    resume: ModelShape  # byte-level vocabulary: 257 ids + [MASK]
    resume_steps: int
    resume_batch: int
    stall: ModelShape  # the study's 6M shape
    stall_batches: tuple[tuple[int, int], ...]  # (global batch, micro batch)
    stall_steps: int


FULL = Sizes(
    name="full",
    big=ModelShape("113M", 768, 12, 12, 32001, 2048),
    micro_batches=(8, 16, 32),
    warmup=2,
    timed=5,
    compile_arms=MFU_TARGET_ARMS,
    compile_micro=32,  # the paper sweep's micro_batch
    compile_backend="inductor",
    matmul_n=8192,
    small=ModelShape("34M", 512, 8, 8, 32001, 512),
    precision_steps=200,
    precision_batch=16,
    val_windows=64,
    flash_seq=1024,
    flash_steps=20,
    resume=ModelShape("resume", 256, 4, 4, 258, 256),
    resume_steps=40,
    resume_batch=16,
    stall=ModelShape("6M", 256, 6, 4, 32001, 2048),
    stall_batches=((32, 32), (256, 32)),  # one pass; the paper's global batch in micro batches of 32
    stall_steps=6,
)

SMOKE = Sizes(
    name="smoke",
    big=ModelShape("d32", 32, 2, 2, 257, 64),
    micro_batches=(2, 4, 8),
    warmup=1,
    timed=2,
    compile_arms=MFU_TARGET_ARMS,
    compile_micro=4,
    compile_backend="eager",
    matmul_n=256,
    small=ModelShape("d32", 32, 2, 2, 257, 64),
    precision_steps=30,
    precision_batch=4,
    val_windows=8,
    flash_seq=16,
    flash_steps=4,
    resume=ModelShape("resume", 16, 1, 2, 258, 32),
    resume_steps=8,
    resume_batch=4,
    stall=ModelShape("d32", 32, 2, 2, 257, 64),
    stall_batches=((4, 4), (8, 4)),
    stall_steps=3,
)


# --- the run's context and its report -----------------------------------------------------------


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    tmp: Path  # scratch space, removed at the end
    say: Callable[[str], None]
    deterministic: bool = False
    facts: dict[Any, Any] = field(default_factory=dict)  # what later sections reuse

    @property
    def place(self) -> torch.device:
        return accelerator.placement(self.device)

    def peak(self) -> float | None:
        """The peak the trainer's MFU divides by (trainer.accelerator.peak_flops)."""
        if "peak" not in self.facts:
            self.facts["peak"] = accelerator.peak_flops(self.device)
        return self.facts["peak"]

    def matmul_flops(self) -> float:
        """A large matmul measured here: bf16 on CUDA, fp32 on the CPU (best of 10 after warm-up)."""
        if "matmul" not in self.facts:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            self.facts["matmul"] = matmul_peak(self.place, dtype, self.sizes.matmul_n)
        return self.facts["matmul"]


@dataclass
class Outcome:
    """A section's result: named tables of rows (dicts with the same keys), notes, ok or skipped."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "ok"


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    measures: str  # one paragraph for the markdown: what the numbers are, honestly
    run: Callable[[Context], Outcome]


class Report:
    """gpu_check.jsonl (one line per finished section) and gpu_check.md (rewritten each time)."""

    def __init__(self, out: Path, header: dict[str, Any], sections: Sequence[Section]) -> None:
        self.out, self.header, self.sections = out, header, {s.name: s for s in sections}
        self.records: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / JSONL, json.dumps({"section": "header", **header}) + "\n")
        atomic.write_text(out / MARKDOWN, render(header, [], self.sections))

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        atomic.append_jsonl(self.out / JSONL, record)
        atomic.write_text(self.out / MARKDOWN, render(self.header, self.records, self.sections))


def run_sections(sections: Sequence[Section], ctx: Context, report: Report, max_s: float) -> list[dict]:
    """Runs the sections in order; each one's record goes to the report as soon as it ends."""
    start = time.perf_counter()
    for section in sections:
        record: dict[str, Any] = {"section": section.name, "title": section.title}
        if time.perf_counter() - start > max_s:
            record |= {"status": "skipped", "seconds": 0.0, "tables": {}, "error": None}
            record["notes"] = [f"not started: the check had run for more than --max-s {max_s:.0f} s"]
            ctx.say(f"{section.name}: skipped (time limit)")
            report.add(record)
            continue
        ctx.say(f"{section.name}: {section.title}")
        t0 = time.perf_counter()
        try:
            outcome = section.run(ctx)
            record |= {"status": outcome.status, "tables": outcome.tables, "notes": outcome.notes}
            record["error"] = None
        except Exception as e:  # recorded in its row; the other sections still run
            record |= {"status": "failed", "tables": {}, "notes": [], "error": f"{type(e).__name__}: {e}"}
            ctx.say(f"{section.name}: FAILED\n{traceback.format_exc().rstrip()}")
        record["seconds"] = round(time.perf_counter() - t0, 2)
        gc.collect()
        ctx.say(f"{section.name}: {record['status']} in {record['seconds']:.1f} s")
        report.add(record)
    return report.records


# --- markdown ----------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return cell(str(value))


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def render(header: dict[str, Any], records: list[dict[str, Any]], sections: dict[str, Section]) -> str:
    lines = [
        f"# GPU check: {header['device']}",
        "",
        f"`{header['command']}` ({header['mode']} sizes), started {header['started']}, "
        f"torch {header['torch']}, CUDA {header['cuda'] or '-'}, git {header['git_sha'] or '-'}. "
        f"{len(records)} of {len(sections)} sections finished.",
        "",
    ]
    if header["mode"] == "smoke":
        lines += [
            "Smoke sizes: tiny shapes stand in for the ones the titles name, to run every section's code; "
            "their numbers measure nothing.",
            "",
        ]
    done = {r["section"]: r for r in records}
    for i, (name, section) in enumerate(sections.items(), 1):
        lines += [f"## {i}. {section.title} (`{name}`)", "", section.measures, ""]
        record = done.get(name)
        if record is None:
            lines += ["_not run (yet)_", ""]
            continue
        status = f"_{record['status']}, {record['seconds']:.1f} s_"
        if record.get("error"):
            status += f": `{fmt(record['error'])}`"
        lines += [status, ""]
        for caption, rows in record["tables"].items():
            if rows:
                lines += [f"{caption}:", "", *table(rows), ""]
        lines += [f"- {note}" for note in record["notes"]]
        if record["notes"]:
            lines.append("")
    return "\n".join(lines)


# --- the trainer's pieces on synthetic data -----------------------------------------------------


def make_spec(
    shape: ModelShape,
    arm: str,
    global_batch: int,
    micro_batch: int = 0,
    steps: int = 100,
    precision: str = "auto",
    lr: float = 3e-4,
    **changes: Any,
) -> RunSpec:
    """A RunSpec for in-memory tokens (its data fields name no corpus: nothing is prepared)."""
    spec = RunSpec(
        arm=arm,
        model=shape,
        budget_flops=0.0,
        flops_convention="causal",
        steps=steps,
        global_batch=global_batch,
        optim=OptimSpec(lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 10)),
        data=DataSpec("synthetic", "none", shape.vocab - 1, shape.seq_len),
        eval=EvalSpec(every=0, sequences=1, t_per_seq=4),
        micro_batch=micro_batch,
        precision=precision,
        compile="off",
    )
    return replace(spec, **changes)


@dataclass
class Trainee:
    """A model, its AdamW (as trainer.loop builds them) and the trainer's step over them."""

    model: DiT
    optimizer: torch.optim.Optimizer
    step: TrainStep


def trainee(spec: RunSpec, device: torch.device, backend: str | None = None) -> Trainee:
    place = accelerator.placement(device)
    torch.manual_seed(spec.seed)
    model = DiT(spec.model).to(place)
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        param_groups(model, spec.optim.weight_decay),
        lr=spec.optim.lr,
        betas=spec.optim.betas,
        eps=spec.optim.eps,
        fused=cuda or None,
        foreach=None if cuda else True,
    )
    wrapped = torch.compile(model, backend=backend) if backend else model
    return Trainee(model, optimizer, step_of(spec, device, model, optimizer, wrapped))


def step_of(spec: RunSpec, device: torch.device, model: DiT, optimizer, wrapped=None) -> TrainStep:
    return TrainStep(
        spec=spec,
        plan=check_spec(spec, 1),
        env=DistEnv(),
        arm=get_arm(spec.arm, spec.model.vocab),
        model=model,
        wrapped=model if wrapped is None else wrapped,
        optimizer=optimizer,
        device=device,
    )


def random_batch(shape: ModelShape, rows: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, shape.vocab - 1, (rows, shape.seq_len), generator=gen).to(device)


def time_steps(step: TrainStep, batch: torch.Tensor, device: torch.device, warmup: int, timed: int):
    """Seconds per step over `timed` steps after `warmup` (one synchronisation at each end, none
    between: the host queues steps as the trainer does), and the last loss."""
    for s in range(warmup):
        step(s, lr_at(step.spec, s), batch)
    accelerator.synchronize(device)
    t0 = time.perf_counter()
    for s in range(warmup, warmup + timed):
        loss, _ = step(s, lr_at(step.spec, s), batch)
    accelerator.synchronize(device)
    return (time.perf_counter() - t0) / timed, float(loss)


def throughput_row(ctx: Context, arm: str, shape: ModelShape, batch: int, step_s: float) -> dict[str, Any]:
    """tokens/s and MFU: FLOPs of the `causal` convention (attention halved for causal arms: the
    work done), over the peak the trainer uses and over the matmul measured here."""
    flops = batch * train_flops_per_seq(shape, "causal", arm) / step_s
    peak = ctx.peak()
    mfu = flops / peak if peak else None
    return {
        "arm": arm,
        "micro_batch": batch,
        "step_s": step_s,
        "tokens_per_s": batch * shape.seq_len / step_s,
        "TFLOP/s": flops / 1e12,
        "MFU": mfu,
        "/ matmul": flops / ctx.matmul_flops(),
        "target": meets(arm, mfu),
    }


def meets(arm: str, mfu: float | None) -> str:
    if arm not in MFU_TARGET_ARMS:
        return "-"
    if mfu is None:
        return "no peak"
    return f"{'yes' if mfu >= MFU_TARGET else 'no'} (>= {MFU_TARGET})"


def peak_gb(device: torch.device) -> float | None:
    return accelerator.memory_stats(device).get("max_allocated_gb")


class MarkovChain:
    """A learnable synthetic token stream: each of `vocab` states moves to one of 8 fixed random
    successors with Zipf weights (entropy 1.6 nats), so the loss falls well below log(vocab)."""

    def __init__(self, vocab: int, seed: int = 0, successors: int = 8) -> None:
        rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.next = rng.integers(0, vocab, (vocab, successors))
        weights = 1.0 / np.arange(1, successors + 1)
        self.cumulative = np.cumsum(weights / weights.sum())

    def sample(self, rows: int, length: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((rows, length), dtype=np.int64)
        out[:, 0] = rng.integers(0, self.vocab, rows)
        for i in range(1, length):
            pick = np.minimum(np.searchsorted(self.cumulative, rng.random(rows)), len(self.cumulative) - 1)
            out[:, i] = self.next[out[:, i - 1], pick]
        return out


# --- the sections -------------------------------------------------------------------------------


def env_section(ctx: Context) -> Outcome:
    device = ctx.device
    name = accelerator.device_name(device)
    flash = trainer.model.flash_attn_func
    flash_version = None
    if flash is not None:
        import flash_attn

        flash_version = getattr(flash_attn, "__version__", "?")
    matmul = ctx.matmul_flops()
    datasheet = peak_bf16(name) if device.type == "cuda" else None
    dtype = torch.bfloat16 if accelerator.precision_name("auto", device) == "bf16" else torch.float32
    rows: list[dict[str, Any]] = [
        {"item": "device", "value": name},
        {"item": "torch", "value": torch.__version__},
        {"item": "CUDA (torch build)", "value": torch.version.cuda},
        {"item": "python", "value": platform.python_version()},
        {"item": "flash-attn", "value": f"imports ({flash_version})" if flash else "not importable"},
        {"item": "attention backend of a run (precision auto)", "value": attention_backend(device, dtype)},
        {"item": "datasheet dense bf16 peak, TFLOP/s", "value": datasheet / 1e12 if datasheet else None},
        {"item": "peak for MFU (trainer.accelerator), TFLOP/s", "value": (ctx.peak() or 0) / 1e12 or None},
        {"item": "SCALING_PEAK_FLOPS", "value": os.environ.get("SCALING_PEAK_FLOPS")},
        {
            "item": f"measured matmul {ctx.sizes.matmul_n}^3 {'bf16' if device.type == 'cuda' else 'fp32'}, TFLOP/s",
            "value": matmul / 1e12,
        },
        {"item": "measured matmul / datasheet", "value": matmul / datasheet if datasheet else None},
        {"item": "memory, GB", "value": accelerator.memory_stats(device).get("total_gb")},
        {"item": "deterministic algorithms (resume)", "value": ctx.deterministic},
    ]
    ctx.say(f"env: {name}, matmul {matmul / 1e12:.1f} TFLOP/s, flash-attn {'yes' if flash else 'no'}")
    return Outcome({"environment": rows})


def arms_section(ctx: Context) -> Outcome:
    sz, device = ctx.sizes, ctx.device
    shape, rows = sz.big, []
    notes = [
        f"{shape.name}: d {shape.d_model}, {shape.n_layers} layers, {shape.n_heads} heads, T {shape.seq_len}, "
        f"V {shape.vocab}, {params_total(shape) / 1e6:.3g}M parameters; precision auto "
        f"({accelerator.precision_name('auto', device)}), eager; {sz.warmup} warm-up + {sz.timed} timed steps"
    ]
    for arm in sorted(ARMS):
        t = trainee(make_spec(shape, arm, sz.micro_batches[0]), device)
        for micro in sz.micro_batches:
            step = step_of(make_spec(shape, arm, micro, micro), device, t.model, t.optimizer)
            accelerator.reset_peak_memory(device)
            try:
                step_s, loss = time_steps(
                    step, random_batch(shape, micro, ctx.place), device, sz.warmup, sz.timed
                )
            except torch.OutOfMemoryError as e:
                t.optimizer.zero_grad(set_to_none=True)
                rows.append(
                    {"arm": arm, "micro_batch": micro, "step_s": None, "note": f"out of memory: {e}"[:120]}
                )
                ctx.say(f"arms: {arm} micro {micro}: out of memory")
                continue
            row = throughput_row(ctx, arm, shape, micro, step_s) | {"peak_GB": peak_gb(device), "loss": loss}
            rows.append(row)
            ctx.facts[("eager", arm, micro)] = row["tokens_per_s"]
            ctx.say(
                f"arms: {arm} micro {micro}: {row['tokens_per_s']:,.0f} tok/s, MFU {fmt(row['MFU'])}, "
                f"/matmul {row['/ matmul']:.2f}, peak {fmt(row['peak_GB'])} GB"
            )
        del t, step
        gc.collect()
    return Outcome({"eager training steps": rows}, notes)


def precision_section(ctx: Context) -> Outcome:
    sz, device, arm = ctx.sizes, ctx.device, "mdlm-ce"
    shape, batch, steps = sz.small, sz.precision_batch, sz.precision_steps
    chain = MarkovChain(shape.vocab - 1)
    stream = chain.sample(steps * batch, shape.seq_len, seed=1)
    windows = chain.sample(sz.val_windows, shape.seq_len, seed=2)
    trained, train_rows, finals = {}, [], {}
    for precision in ("fp32", "bf16"):
        spec = make_spec(shape, arm, batch, steps=steps, precision=precision, lr=1e-3)
        t = trainee(spec, device)
        losses = []
        t0 = time.perf_counter()
        for s in range(steps):
            x = torch.from_numpy(stream[s * batch : (s + 1) * batch]).to(ctx.place)
            losses.append(t.step(s, lr_at(spec, s), x)[0])
        host = torch.stack(losses).tolist()  # one read of the device at the end
        seconds = time.perf_counter() - t0
        finals[precision] = float(np.mean(host[-RECENT:]))
        train_rows.append(
            {
                "training arithmetic": precision,
                "first loss": host[0],
                f"final loss (mean of last {min(RECENT, steps)})": finals[precision],
                "last loss": host[-1],
                "seconds": seconds,
            }
        )
        trained[precision] = (t.model, spec)
        ctx.say(f"precision: {precision} {steps} steps, loss {host[0]:.3f} -> {finals[precision]:.4f}")
    rel = abs(finals["bf16"] - finals["fp32"]) / abs(finals["fp32"])
    compare = [
        {
            "check": "final training loss, |bf16 - fp32| / fp32",
            "value": rel,
            "target": f"<= {LOSS_REL_TARGET}",
            "pass": rel <= LOSS_REL_TARGET,
        }
    ]
    val_rows = []
    for weights, (model, spec) in trained.items():
        spec = replace(spec, eval=EvalSpec(every=0, sequences=len(windows), t_per_seq=4))
        plan = check_spec(spec, 1)
        nelbo = {
            p: evaluate(
                model, get_arm(arm, shape.vocab), windows, replace(spec, precision=p), plan, DistEnv(), device
            )[0]
            for p in ("fp32", "bf16")
        }
        diff = abs(nelbo["bf16"] - nelbo["fp32"])
        val_rows.append(
            {
                "weights trained in": weights,
                "val NELBO, fp32 eval": nelbo["fp32"],
                "val NELBO, bf16 eval": nelbo["bf16"],
                "|diff| nats": diff,
                "target": f"<= {NELBO_TARGET}",
                "pass": diff <= NELBO_TARGET,
            }
        )
        ctx.say(f"precision: {weights} weights: NELBO fp32 {nelbo['fp32']:.4f} bf16 {nelbo['bf16']:.4f}")
    notes = [
        f"{arm} on {shape.name} (d {shape.d_model}, {shape.n_layers} layers, T {shape.seq_len}, V {shape.vocab}, "
        f"{params_total(shape) / 1e6:.3g}M parameters), batch {batch}, {steps} steps, lr 1e-3 cosine; the same "
        "tokens, times and masks in both runs; fp32 on CUDA is the trainer's (TF32 matmuls)",
        f"validation: {len(windows)} held-out windows of the same chain x 4 diffusion times, trainer.loop.evaluate",
    ]
    return Outcome({"training": train_rows, "final loss": compare, "validation NELBO": val_rows}, notes)


class sdpa_only:
    """Within the block the model's attention takes the SDPA path (as without flash-attn)."""

    def __enter__(self) -> None:
        self.saved = trainer.model.flash_attn_func
        trainer.model.flash_attn_func = None

    def __exit__(self, *exc: object) -> None:
        trainer.model.flash_attn_func = self.saved


def flash_section(ctx: Context) -> Outcome:
    flash = trainer.model.flash_attn_func
    if flash is None:
        return Outcome(
            {
                "flash-attn": [
                    {"check": "flash-attn vs SDPA", "result": "flash_attn does not import: skipped"}
                ]
            },
            ["SDPA (torch.nn.functional.scaled_dot_product_attention) is the attention of every run here"],
            status="skipped",
        )
    sz, device = ctx.sizes, ctx.device
    rows = []
    gen = torch.Generator().manual_seed(0)
    for head_dim in (64, 80, 128):
        for mode in ("bidirectional", "causal"):
            q, k, v, g = (
                torch.randn(2, sz.flash_seq, 4, head_dim, generator=gen).to(ctx.place) for _ in range(4)
            )
            results = {}
            for name, dtype in (("flash", torch.bfloat16), ("sdpa", torch.bfloat16), ("fp32", torch.float32)):
                inputs = [x.to(dtype).requires_grad_() for x in (q, k, v)]
                if name == "flash":
                    out = flash(*inputs, causal=mode == "causal")
                else:
                    with sdpa_only():
                        out = trainer.model.attention(inputs[0], inputs[1], inputs[2], mode)
                grads = torch.autograd.grad(out, inputs, g.to(dtype))
                results[name] = [t.float() for t in (out, *grads)]
            err = {
                name: max((a - b).abs().max().item() for a, b in zip(results[name], results["fp32"]))
                for name in ("flash", "sdpa")
            }
            diff = max((a - b).abs().max().item() for a, b in zip(results["flash"], results["sdpa"]))
            rows.append(
                {
                    "head_dim": head_dim,
                    "mask": mode,
                    "max |flash - sdpa| (out, dq, dk, dv)": diff,
                    "flash err vs fp32": err["flash"],
                    "sdpa err vs fp32": err["sdpa"],
                    "pass (flash err <= 2 x sdpa err)": err["flash"] <= 2 * err["sdpa"] + 1e-6,
                }
            )
    shape = replace(sz.resume, name="flash", vocab=sz.small.vocab)
    loss_rows = []
    for arm in ("mdlm-ce", "ar"):
        batch = random_batch(shape, sz.resume_batch, ctx.place)
        spec = make_spec(shape, arm, sz.resume_batch, steps=sz.flash_steps, lr=1e-3)
        curves = {}
        for backend in ("flash", "sdpa"):
            with sdpa_only() if backend == "sdpa" else nullcontext():
                t = trainee(spec, device)  # the same initialization for both
                losses = [t.step(s, lr_at(spec, s), batch)[0] for s in range(spec.steps)]
                # the backend the model's attention took (on a CPU both are SDPA)
                used = attention_backend(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
                curves[backend] = (used, torch.stack(losses).tolist())
        (a_used, a), (b_used, b) = curves["flash"], curves["sdpa"]
        rel = max(abs(x - y) / abs(y) for x, y in zip(a, b))
        loss_rows.append(
            {
                "arm": arm,
                "runs": f"{a_used} vs {b_used}",
                "steps": len(a),
                "max relative loss difference": rel,
                "last losses": f"{a[-1]:.4f} / {b[-1]:.4f}",
            }
        )
    return Outcome(
        {"attention outputs and gradients (bf16)": rows, f"{sz.flash_steps}-step losses": loss_rows}
    )


WORDS = "the of and to a in that is was he for it with as his on be at by this had not are but from".split()


def write_corpus(folder: Path, documents: int, lines: int, seed: int = 0) -> Path:
    """Pseudo-English .txt documents (a fixed seed), for trainer.data to prepare."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        text = "\n".join(
            " ".join(rng.choice(WORDS, size=int(rng.integers(4, 13)))).capitalize() + "."
            for _ in range(lines)
        )
        (folder / f"doc{i:03d}.txt").write_text(text + "\n")
    return folder


def resume_section(ctx: Context) -> Outcome:
    sz, shape = ctx.sizes, ctx.sizes.resume
    steps, batch = sz.resume_steps, sz.resume_batch
    # enough text for the steps' windows (one epoch is fine: windows wrap) and 16 validation windows
    corpus = write_corpus(ctx.tmp / "resume-corpus", documents=40, lines=max(40, shape.seq_len // 4))
    data_spec = DataSpec(
        str(corpus),
        "bytes",
        shape.vocab - 1,
        shape.seq_len,
        val_fraction=0.2,
        shards=str(ctx.tmp / "resume-shards"),
    )
    data.prepare_data(data_spec, log=lambda m: None, workers=1)
    spec = make_spec(shape, "mdlm-ce", batch, steps=steps, lr=1e-3, precision="auto")
    spec = replace(spec, data=data_spec, eval=EvalSpec(every=0, sequences=16, t_per_seq=2), compile="off")
    stop_after = steps // 2
    sent: list[int] = []

    def stop_halfway(line: str) -> None:  # the trainer's progress line "[key] step k/N ..."
        m = re.search(r"\bstep (\d+)/", line)
        if m and int(m.group(1)) >= stop_after and not sent:
            sent.append(int(m.group(1)))
            os.kill(os.getpid(), signal.SIGUSR2)  # what SLURM sends before a preemption

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if ctx.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        first = train(spec, ctx.tmp / "uninterrupted", log=lambda m: None)
        try:
            train(spec, ctx.tmp / "resumed", log=stop_halfway)
            raise RuntimeError(
                f"the run was not stopped: no progress line 'step k/{steps}' with k >= {stop_after} "
                "reached the log (the trainer's progress format changed?)"
            )
        except Preempted as e:
            stopped = e.step
        ctx.say(f"resume: stopped at step {stopped} (SIGUSR2 after step {sent[0]}), resuming")
        second = train(spec, ctx.tmp / "resumed", log=lambda m: None)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    losses = {
        name: {r["step"]: r["train_loss"] for r in atomic.read_jsonl(ctx.tmp / name / "metrics.jsonl")}
        for name in ("uninterrupted", "resumed")
    }
    a, b = losses["uninterrupted"], losses["resumed"]
    if sorted(a) != sorted(b):
        raise RuntimeError(f"the runs logged different steps: {sorted(set(a) ^ set(b))}")
    before = [abs(a[s] - b[s]) for s in a if s <= stopped]
    after = [abs(a[s] - b[s]) for s in a if s > stopped]
    val_diff = abs((first.val_loss or math.nan) - (second.val_loss or math.nan))
    rows = [
        {
            "compared": f"train loss, steps 1-{stopped} (both runs from the same start: run-to-run noise)",
            "max |diff|": max(before, default=0.0),
            "bitwise equal": not any(before),
        },
        {
            "compared": f"train loss, steps {stopped + 1}-{steps} (after the resume)",
            "max |diff|": max(after, default=0.0),
            "bitwise equal": not any(after),
        },
        {
            "compared": f"final val_loss ({first.val_loss!r} / {second.val_loss!r})",
            "max |diff|": val_diff,
            "bitwise equal": first.val_loss == second.val_loss,
        },
    ]
    notes = [
        f"trainer.loop.train of mdlm-ce on {shape.name} (d {shape.d_model}, {shape.n_layers} layers, T {shape.seq_len}, "
        f"bytes), batch {batch}, {steps} steps, precision auto ({second.precision}), compile off; the second "
        f"run got SIGUSR2 after step {sent[0]}, checkpointed at step {stopped}, raised Preempted and was "
        f"resumed by a second train() (restarts {second.restarts})",
        "deterministic algorithms: "
        + (
            "on (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG)" if ctx.deterministic else "off"
        ),
    ]
    if any(before) and not ctx.deterministic:
        notes.append(
            "the runs differ before the stop: GPU kernels are not deterministic here; rerun with --deterministic"
        )
    return Outcome({"uninterrupted vs stopped and resumed": rows}, notes)


def stall_section(ctx: Context) -> Outcome:
    sz, device, shape = ctx.sizes, ctx.device, ctx.sizes.stall
    steps = sz.warmup + sz.stall_steps
    need = max(g for g, _ in sz.stall_batches) * steps * shape.seq_len
    # a token file, memory-mapped as the trainer maps its shards (no data preparation involved)
    tokens_path = ctx.tmp / "stall.bin"
    rng = np.random.default_rng(0)
    rng.integers(0, shape.vocab - 1, need + shape.seq_len, dtype=np.uint16).tofile(tokens_path)
    tokens = np.memmap(tokens_path, dtype=np.uint16, mode="r")
    rows = []
    for global_batch, micro in sz.stall_batches:
        spec = make_spec(shape, "mdlm-ce", global_batch, micro, steps=steps)
        t = trainee(spec, device)
        sampler = data.WindowSampler(tokens, shape.seq_len, seed=0)
        t0 = time.perf_counter()
        for i in range(3):  # what the loader's thread does per batch, timed on its own
            batch = torch.from_numpy(sampler.windows(i * global_batch, global_batch))
            if device.type == "cuda":
                batch = batch.pin_memory()
        prepare_s = (time.perf_counter() - t0) / 3
        loader = BatchLoader(sampler, global_batch, (0, global_batch), 0, steps, ctx.place)
        try:
            for s in range(sz.warmup):
                t.step(s, lr_at(spec, s), loader.get(s))
            accelerator.synchronize(device)
            loader.wait_s = 0.0
            pending = []
            t0 = time.perf_counter()
            for s in range(sz.warmup, steps):
                pending.append(t.step(s, lr_at(spec, s), loader.get(s))[0])
                if len(pending) == SYNC_EVERY:  # the trainer reads the losses this often
                    torch.stack(pending).tolist()
                    pending.clear()
            if pending:
                torch.stack(pending).tolist()
            step_s = (time.perf_counter() - t0) / sz.stall_steps
        finally:
            loader.close()
        wait = loader.wait_s / sz.stall_steps
        rows.append(
            {
                "global batch": global_batch,
                "micro batch": micro,
                "step_s": step_s,
                "tokens_per_s": global_batch * shape.seq_len / step_s,
                "wait per step, ms": wait * 1e3,
                "wait / step": wait / step_s,
                "host batch preparation, ms": prepare_s * 1e3,
            }
        )
        ctx.say(
            f"stall: batch {global_batch}: step {step_s * 1e3:.1f} ms, waited {wait * 1e3:.2f} ms per step"
        )
        del t, loader
        gc.collect()
    notes = [
        f"mdlm-ce on {shape.name} (d {shape.d_model}, {shape.n_layers} layers, T {shape.seq_len}, V {shape.vocab}), "
        f"eager, precision auto; {sz.stall_steps} timed steps after {sz.warmup}; tokens read from a memory-mapped "
        "file through WindowSampler and BatchLoader (pinned memory and a non-blocking copy on CUDA)",
        "host batch preparation: the windows of one global batch read, converted and pinned, without a "
        "training step beside it: the loader keeps up while this stays below the step time",
    ]
    return Outcome({"data loading": rows}, notes)


def compile_section(ctx: Context) -> Outcome:
    sz, device, shape, micro = ctx.sizes, ctx.device, ctx.sizes.big, ctx.sizes.compile_micro
    rows = []
    for arm in sz.compile_arms:
        spec = make_spec(shape, arm, micro, micro)
        t = trainee(spec, device, backend=sz.compile_backend)
        batch = random_batch(shape, micro, ctx.place)
        accelerator.reset_peak_memory(device)
        try:
            t0 = time.perf_counter()
            t.step(0, lr_at(spec, 0), batch)  # compiles the forward and the backward
            accelerator.synchronize(device)
            compile_s = time.perf_counter() - t0
            ctx.say(f"compile: {arm}: compile and first step {compile_s:.1f} s")
            step_s, loss = time_steps(t.step, batch, device, sz.warmup, sz.timed)
        except torch.OutOfMemoryError as e:
            rows.append({"arm": arm, "micro_batch": micro, "note": f"out of memory: {e}"[:120]})
            del t
            gc.collect()
            continue
        row = throughput_row(ctx, arm, shape, micro, step_s)
        eager = ctx.facts.get(("eager", arm, micro))
        row |= {
            "compile_s": compile_s,
            "vs eager": row["tokens_per_s"] / eager if eager else None,
            "peak_GB": peak_gb(device),
            "loss": loss,
        }
        rows.append(row)
        ctx.say(f"compile: {arm}: {row['tokens_per_s']:,.0f} tok/s, MFU {fmt(row['MFU'])}")
        del t
        gc.collect()
    notes = [
        f"torch.compile(model, backend={sz.compile_backend!r}) as the trainer compiles it (compile auto = on CUDA); "
        "compile_s is the first step (tracing and compiling forward and backward), outside tokens/s and MFU",
        "vs eager: tokens/s over the eager row of the same arm and micro-batch (section arms), when it ran",
    ]
    return Outcome({"compiled training steps": rows}, notes)


SECTIONS = (
    Section(
        "env",
        "Environment and the matmul reference",
        "The device and software, whether flash-attn imports, the card's datasheet dense bf16 peak (the "
        "denominator of MFU, scaling.hardware) and a large bf16 matmul measured on the card (best of 10 after "
        "warm-up): the second reference, what a matmul-bound step could reach on this card.",
        env_section,
    ),
    Section(
        "arms",
        "Throughput and memory per arm at the 113M shape (eager)",
        "One training step as the trainer runs it (trainer.loop.TrainStep: forward and backward under bf16 "
        "autocast with the chunked loss, gradient clipping, fused AdamW) on random tokens, timed after warm-up "
        "without torch.compile. MFU = the FLOPs of the work done (scaling.flops `causal` convention: weights, "
        "attention halved for causal arms, conditioning; x3 for training) / the datasheet peak; `/ matmul` "
        "divides by the measured matmul instead. Peak memory: torch's max allocated during the timed steps at "
        f"each micro-batch. Target: MFU >= {MFU_TARGET} for {' and '.join(MFU_TARGET_ARMS)}, which the "
        "compiled rows (section compile) are meant to reach.",
        arms_section,
    ),
    Section(
        "precision",
        "bf16 vs fp32 on the 34M shape",
        "Two trainings of mdlm-ce from the same initialization on the same learnable synthetic stream (a fixed "
        "random Markov chain), one in fp32 and one under bf16 autocast; the final training loss is the mean of "
        f"the last {RECENT} steps (the noise of single steps averaged out). Target: within "
        f"{LOSS_REL_TARGET:.0%}. Then each run's weights are validated (trainer.loop.evaluate: NELBO over fixed "
        f"windows and times) in fp32 and in bf16 arithmetic; target: within {NELBO_TARGET} nats.",
        precision_section,
    ),
    Section(
        "flash",
        "flash-attn vs SDPA",
        "Only where flash_attn imports (it is source-only and usually absent; SDPA is then the attention of "
        "every run). Outputs and input gradients of flash_attn_func and of the model's SDPA path on the same "
        "bf16 tensors, both masks, head dims 64/80/128, each against an fp32 SDPA reference; then a short "
        "training of mdlm-ce (bidirectional) and ar (causal) with each backend from the same start.",
        flash_section,
    ),
    Section(
        "resume",
        "Checkpoint and resume on the device",
        "trainer.loop.train of a small run on data prepared by trainer.data from a synthetic text corpus: "
        "once uninterrupted, once stopped by SIGUSR2 halfway (checkpoint at the next step boundary, Preempted) "
        "and resumed by a second train(). The per-step training losses (metrics.jsonl) and the final "
        "validation loss are compared: the steps before the stop show the run-to-run noise of the device's "
        "kernels, the steps after it the resume. Target: equal (bitwise where the kernels are deterministic).",
        resume_section,
    ),
    Section(
        "stall",
        "Data-loading stall at the 6M shape",
        "The trainer's BatchLoader (a thread reading the next batches ahead, pinned memory, non-blocking "
        "copies) feeding TrainStep at the study's smallest shape, where a step is shortest: the time the "
        "training loop waited for a batch (BatchLoader.wait_s) per step against the step time, and the host's "
        "time to prepare one batch on its own.",
        stall_section,
    ),
    Section(
        "compile",
        "torch.compile at the 113M shape",
        "The arms of the MFU target compiled as the trainer compiles them on CUDA: the first step (compiling "
        "forward and backward) timed apart as compile_s, then tokens/s, MFU (as in section arms) and peak "
        f"memory after warm-up. Target: MFU >= {MFU_TARGET}.",
        compile_section,
    ),
)
NAMES = tuple(s.name for s in SECTIONS)


# --- the command ----------------------------------------------------------------------------------


def stamp_say(start: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        now = datetime.now().strftime("%H:%M:%S")
        print(f"[{now} +{time.perf_counter() - start:6.1f}s] {message}", flush=True)

    return say


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", required=True, help="folder for gpu_check.jsonl and gpu_check.md")
    p.add_argument(
        "--smoke", action="store_true", help="tiny shapes on the CPU, every section (well under a minute)"
    )
    p.add_argument(
        "--sections", nargs="+", choices=NAMES, default=list(NAMES), help="a subset, run in the usual order"
    )
    p.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: cuda; cpu with --smoke)"
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="torch.use_deterministic_algorithms in the resume section (CUBLAS_WORKSPACE_CONFIG set for the whole run)",
    )
    p.add_argument(
        "--max-s", type=float, default=285.0, help="sections not started after this many seconds are skipped"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    say = stamp_say(start)
    if args.deterministic:  # read when cuBLAS starts, i.e. before the first matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        device = accelerator.resolve_device(args.device or ("cpu" if args.smoke else "cuda"))
    except UserError as e:
        print(
            f"error: {e}" + ("" if args.smoke else " (or run --smoke: tiny shapes on the CPU)"),
            file=sys.stderr,
        )
        return 2
    if device.type != "cuda" and not args.smoke:
        print(
            "error: the full check needs a CUDA device (113M-parameter steps at T 2048 take hours on a CPU): "
            "run --smoke on the CPU",
            file=sys.stderr,
        )
        return 2
    sizes = SMOKE if args.smoke else FULL
    if args.smoke:
        torch.set_num_threads(1)  # nothing here is worth timing; one thread keeps a busy machine usable
    header = {
        "device": accelerator.device_name(device),
        "mode": sizes.name,
        "command": " ".join(["python3 bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "git_sha": paths.git_sha(),
    }
    sections = [s for s in SECTIONS if s.name in args.sections]
    out = Path(args.out)
    report = Report(out, header, sections)
    say(
        f"gpu check on {header['device']} ({sizes.name} sizes): {', '.join(s.name for s in sections)} -> {out}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    try:
        ctx = Context(device, sizes, tmp, say, deterministic=args.deterministic)
        records = run_sections(sections, ctx, report, args.max_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r["section"] for r in records if r["status"] == "failed"]
    say(
        f"done in {time.perf_counter() - start:.0f} s: {out / MARKDOWN}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
