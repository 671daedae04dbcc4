"""Sweep configs: Hydra composition of sweeps/<name>.yaml into typed dataclasses.

A sweep file names its arms, budgets, ladder and the sizes to train at each budget (an explicit
list per budget, optionally per arm, or a tokens-per-parameter rule), plus data, optimizer and
evaluation settings. `cluster=local|slurm` picks a file of the `cluster` group, which the
executors read (kept here as a plain dict).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from scaling.arms import arm_info
from scaling.errors import UserError
from scaling.paths import sweeps_config_dir


@dataclass(frozen=True)
class SizeRule:
    """Pick every ladder shape whose tokens per parameter at the budget lies in the window."""

    min_tokens_per_param: float
    max_tokens_per_param: float
    max_sizes: int = 0  # 0: no limit; else keep this many, spread evenly in ln N


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "shakespeare"
    tokenizer: str = "bytes"
    vocab_size: int = 256  # tokenizer vocabulary without [MASK]
    seq_len: int = 128
    val_fraction: float = 0.05
    train_tokens: float = 0  # dataset size if the shards are not prepared yet (repetition warning)


@dataclass(frozen=True)
class TrainConfig:
    global_batch: int = 8
    micro_batch: int = 0
    lr: float = 2e-4
    lr_by_arm: dict[str, float] = field(default_factory=dict)
    lr_width_ref: int = 0  # >0: lr *= min(1, lr_width_ref / d_model) (narrow models take larger steps)
    min_lr_ratio: float = 0.1
    warmup_steps: int = -1  # -1: max(warmup_fraction * steps, min_warmup_steps)
    warmup_fraction: float = 0.01
    min_warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "auto"
    checkpoint_every: int = 0


@dataclass(frozen=True)
class EvalConfig:
    evals_per_run: int = 8  # validations spread over the run (the last step is always one)
    sequences: int = 64
    t_per_seq: int = 8
    seed: int = 1234


@dataclass(frozen=True)
class SweepConfig:
    name: str
    arms: tuple[str, ...]
    budgets: tuple[float, ...]
    ladder: str | list
    flops_convention: str = "reference"
    seeds: tuple[int, ...] = (0,)
    sizes: dict[str, list[str]] = field(default_factory=dict)  # budget tag -> model names
    arm_sizes: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # arm -> budget tag -> names
    size_rule: SizeRule | None = None
    expected_tokens_per_param: float = 20.0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in sweeps_config_dir().glob("*.yaml"))


def load_sweep(name: str, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Compose sweeps/<name>.yaml (or a YAML path) with Hydra overrides into a SweepConfig."""
    raw = compose_raw(name, list(overrides))
    return sweep_from_dict(raw)


def compose_raw(name: str, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise UserError(f"sweep file {path} does not exist")
        config_dir, config_name = path.resolve().parent, path.stem
    else:
        config_dir, config_name = sweeps_config_dir(), name
        if not (config_dir / f"{name}.yaml").exists():
            raise UserError(
                f"unknown sweep {name!r}: choose from {', '.join(available_sweeps())} or give a YAML path"
            )
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose(config_name=config_name, overrides=overrides)
        raw = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise UserError(f"bad override or config: {_first_line(e)}") from None
    finally:
        GlobalHydra.instance().clear()
    raw.setdefault("name", config_name)
    return raw


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return " ".join(line.strip() for line in text[:2]) if text else type(e).__name__


def sweep_from_dict(raw: dict) -> SweepConfig:
    raw = dict(raw)
    raw.pop("defaults", None)
    known = {f.name for f in fields(SweepConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(
            f"sweep {raw.get('name')!r}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    for key in ("arms", "budgets", "ladder"):
        if key not in raw:
            raise UserError(f"sweep {raw.get('name')!r}: missing key {key!r}")
    arms = tuple(_as_list(raw["arms"], "arms"))
    if not arms:
        raise UserError("arms is empty: give at least one arm, e.g. arms=[ar]")
    for arm in arms:
        arm_info(str(arm))
    budgets = tuple(_positive_float(b, "budget") for b in _as_list(raw["budgets"], "budgets"))
    if not budgets:
        raise UserError("budgets is empty: give at least one FLOP budget, e.g. budgets=[1e12]")
    seeds = tuple(int(s) for s in _as_list(raw.get("seeds", [0]), "seeds"))
    data = _section(DataConfig, raw.get("data"), "data")
    train = _section(TrainConfig, raw.get("train"), "train")
    ev = _section(EvalConfig, raw.get("eval"), "eval")
    if data.seq_len <= 0:
        raise UserError(f"data.seq_len must be > 0, got {data.seq_len}")
    if data.vocab_size <= 0:
        raise UserError(f"data.vocab_size must be > 0, got {data.vocab_size}")
    if train.global_batch <= 0:
        raise UserError(f"train.global_batch must be > 0, got {train.global_batch}")
    if train.micro_batch < 0 or (train.micro_batch and train.global_batch % train.micro_batch):
        raise UserError(
            f"train.micro_batch {train.micro_batch} must divide train.global_batch {train.global_batch}"
        )
    for arm in train.lr_by_arm:
        arm_info(arm)
    rule = raw.get("size_rule")
    size_rule = _section(SizeRule, rule, "size_rule") if rule else None
    sizes = {str(k): [str(n) for n in _as_list(v, f"sizes.{k}")] for k, v in (raw.get("sizes") or {}).items()}
    arm_sizes = {}
    for arm, per_budget in (raw.get("arm_sizes") or {}).items():
        arm_info(str(arm))
        arm_sizes[str(arm)] = {
            str(k): [str(n) for n in _as_list(v, f"arm_sizes.{arm}.{k}")] for k, v in per_budget.items()
        }
    from scaling.flops import CONVENTIONS

    if raw.get("flops_convention", "reference") not in CONVENTIONS:
        raise UserError(
            f"unknown flops_convention {raw['flops_convention']!r}: choose from {', '.join(CONVENTIONS)}"
        )
    return SweepConfig(
        name=str(raw["name"]),
        arms=tuple(str(a) for a in arms),
        budgets=budgets,
        ladder=raw["ladder"],
        flops_convention=raw.get("flops_convention", "reference"),
        seeds=seeds,
        sizes=sizes,
        arm_sizes=arm_sizes,
        size_rule=size_rule,
        expected_tokens_per_param=float(raw.get("expected_tokens_per_param", 20.0)),
        data=data,
        train=train,
        eval=ev,
        cluster=dict(raw.get("cluster") or {}),
        description=str(raw.get("description", "")),
    )


def _as_list(value: Any, what: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float, str)):
        return [value]
    raise UserError(f"{what} must be a list, got {value!r}")


def _positive_float(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} {value!r} is not a number") from None
    if not x > 0:
        raise UserError(f"{what} must be > 0, got {value!r}")
    return x


def _section(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping, got {raw!r}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        try:
            if hint in (int, float, str):
                value = hint(value)
            elif get_origin(hint) is tuple:
                value = tuple(float(v) for v in value)
            elif get_origin(hint) is dict:
                value = {str(k): float(v) for k, v in dict(value).items()}
        except (TypeError, ValueError):
            raise UserError(f"{where}.{name}: cannot read {value!r} as {hint}") from None
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise UserError(f"{where}: {e}") from None
