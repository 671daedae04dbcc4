"""The run spec: one self-contained description of a training run.

`scaling plan --specs DIR` writes one per run and `scaling train SPEC.yaml --out RUN_DIR` reads it.
The run key hashes every field that changes the result; bookkeeping fields (sweep name, checkpoint
cadence, data location on disk) are excluded so that moving or renaming a sweep keeps its keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from scaling import records
from scaling.errors import UserError
from scaling.flops import ModelShape

SPEC_VERSION = 2  # 2: masks and noise keyed by sequence (trainer/noise.py); micro_batch left the key
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on CUDA, fp32 on the CPU
COMPILE = ("auto", "on", "off")  # torch.compile of the model; auto: on CUDA only
SHARDINGS = ("ddp", "fsdp")


@dataclass(frozen=True)
class OptimSpec:
    lr: float
    min_lr: float
    warmup_steps: int
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    eps: float = 1e-8
    grad_clip: float = 1.0
    schedule: str = "cosine"  # cosine decay to min_lr after linear warmup


@dataclass(frozen=True)
class DataSpec:
    corpus: str  # shakespeare | file | folder | glob | saved HF dataset (docs/data.md)
    tokenizer: str  # bytes | bpe | hf:PATH | spm:PATH
    vocab_size: int  # tokenizer ids with the end-of-document id, without [MASK]
    seq_len: int
    val_fraction: float = 0.07
    shards: str = ""  # the prepared folder (manifest.json); bookkeeping, not part of the key
    val_files: str = ""  # a validation corpus instead of val_fraction
    text_field: str = "text"


def data_folder(data: Any) -> Path:
    """The prepared folder of a DataSpec or the sweep's DataConfig: `shards` if set (a folder or its
    manifest.json), else the folder under $SCALING_DATA named by what determines the content."""
    from scaling.paths import shards_dir

    if getattr(data, "shards", ""):
        given = Path(data.shards)
        return given.parent if given.name == "manifest.json" else given
    defaults = {"val_files": "", "text_field": "text"}
    extra = {k: getattr(data, k) for k, v in defaults.items() if getattr(data, k, v) != v}
    return shards_dir(data.corpus, data.tokenizer, data.vocab_size, data.val_fraction, **extra)


@dataclass(frozen=True)
class EvalSpec:
    every: int  # steps between validations (the final step is always evaluated)
    sequences: int  # fixed validation windows of the evaluations during the run
    t_per_seq: int = 8  # fixed antithetic diffusion times per window (diffusion arms)
    seed: int = 1234
    final_sequences: int = 0  # windows of the last evaluation (0: `sequences`); the first ones are shared


@dataclass(frozen=True)
class RunSpec:
    arm: str
    model: ModelShape
    budget_flops: float
    flops_convention: str
    steps: int
    global_batch: int
    optim: OptimSpec
    data: DataSpec
    eval: EvalSpec
    seed: int = 0
    micro_batch: int = 0  # 0: the whole global batch per process in one pass
    activation_checkpointing: bool = False  # recompute each block's activations in the backward
    sharding: str = "ddp"  # ddp (every GPU holds the states) or fsdp (fully sharded)
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: str = "auto"  # torch.compile of the model: auto (on CUDA only), on, off
    checkpoint_every: int = 0  # 0: only on signals and at the end
    checkpoint_minutes: float = 0  # also every this many minutes of training (0: off)
    loggers: tuple[str, ...] = ("jsonl",)  # where metrics go besides the run folder (scaling.trackers)
    sweep: str = ""
    version: int = SPEC_VERSION

    @property
    def run_key(self) -> str:
        return run_key(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optim"]["betas"] = list(self.optim.betas)
        d["loggers"] = list(self.loggers)
        d["run_key"] = self.run_key
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: Any) -> RunSpec:
        if not isinstance(d, dict):
            raise UserError(f"spec: expected a mapping of fields, got {type(d).__name__}")
        d = dict(d)
        given_key = d.pop("run_key", None)
        try:
            spec = records.from_dict(cls, d, "spec", text_numbers=True)
        except records.RecordError as e:
            raise UserError(str(e)) from None
        if given_key is not None and given_key != spec.run_key:
            raise UserError(
                f"spec run_key {given_key!r} does not match its contents ({spec.run_key}): "
                "the spec was edited by hand; remove the run_key line or re-plan"
            )
        return spec


# Bookkeeping and parallel settings: they change where and how fast a run trains, not its losses
# (the version, which names the semantics of the other fields, is part of the key).
_KEY_EXCLUDED = {
    "sweep",
    "checkpoint_every",
    "checkpoint_minutes",
    "compile",
    "loggers",
    "micro_batch",
    "activation_checkpointing",
    "sharding",
}
_DATA_KEY_EXCLUDED = {"shards"}


def run_key(spec: RunSpec) -> str:
    payload = {k: v for k, v in asdict(spec).items() if k not in _KEY_EXCLUDED}
    payload["data"] = {k: v for k, v in payload["data"].items() if k not in _DATA_KEY_EXCLUDED}
    payload["model"].pop("name")  # a label; the shape is what matters
    payload["optim"]["betas"] = list(spec.optim.betas)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return f"{spec.arm}-{spec.model.name}-{budget_tag(spec.budget_flops)}-{digest}"


def budget_tag(flops: float) -> str:
    """6e18 -> '6e18', 1.5e19 -> '1.5e19' (for file names and labels)."""
    mantissa, exponent = f"{flops:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def load_spec(path: str | Path) -> RunSpec:
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"spec file {path} does not exist: write one with `scaling plan SWEEP --specs DIR`"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"spec file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        return RunSpec.from_dict(d)
    except UserError as e:
        raise UserError(f"spec file {path}: {e}") from None
