"""Sweep configs: typed dataclasses composed by Hydra (the schema, then the sweep file, then the overrides).

The dataclasses below are the schema. They are registered in Hydra's ConfigStore and composed
*under* the sweep file (sweeps/<name>.yaml or a YAML path), so every field has its default even
when the file leaves it out, and `train.micro_batch=4` needs no `+`. The overrides come last.
Hydra checks the types as it merges; the values (a budget > 0, a known arm, ...) are checked
after composition. Every mistake is a one-line UserError naming the key and, where there is
one, an override that works.

A sweep names its arms, budgets, ladder and the sizes to train at each budget (a list of
{budget, models} records, optionally per arm, or a tokens-per-parameter rule), plus data,
optimizer and evaluation settings. `cluster=local|slurm|...` picks a file of the `cluster`
group, which the executors read and check (kept here as a plain dict).

Sweep folders: the folder of a sweep given as a YAML path, then $SCALING_SWEEPS (dir1:dir2),
then the built-in sweeps/ (scaling.paths.sweeps_search_path); the first file of a name wins.
`-m` (multirun) expands sweep overrides (`train.lr=1e-3,3e-3`) into one sweep per combination.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import MISSING

from scaling.arms import arm_info
from scaling.errors import UserError
from scaling.paths import UNSAFE_CHAR, check_name, sweeps_search_path
from scaling.spec import COMPILE, PRECISIONS
from scaling.trackers import parse_trackers


@dataclass
class SizeRule:
    """Pick every ladder shape whose tokens per parameter at the budget lies in the window."""

    min_tokens_per_param: float = MISSING
    max_tokens_per_param: float = MISSING
    max_sizes: int = 0  # 0: no limit; else keep this many, spread evenly in ln N


AUTO = "auto"  # `sizes: auto`: each budget's sizes placed by the fits of the lower budgets


@dataclass
class AutoSizes:
    """How `sizes: auto` places a budget's window of sizes (scaling/plan.py, docs/methods.md)."""

    n_sizes: int = 5  # sizes per (arm, budget)
    span: float = 2.0  # ln N from the smallest to the largest size (2.0: a factor e^2 = 7.4)
    max_span: float = 4.0  # the window widens up to this when the predicted N* is uncertain
    models: list[str] = field(default_factory=list)  # ladder shapes to choose from ([]: the whole ladder)
    arm_models: dict[str, list[str]] = field(default_factory=dict)  # per arm, instead of models


@dataclass
class SizeList:
    """The models to train at one budget; a record without a budget is the default for every
    budget without a record of its own."""

    budget: float | None = None
    models: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    """What to train on (docs/data.md): a corpus to prepare, or (shards) a prepared folder."""

    corpus: str = "shakespeare"  # shakespeare | file | folder | glob | saved HF dataset (trainer.corpora)
    tokenizer: str = "bytes"  # bytes | bpe | hf:tokenizer.json | spm:tokenizer.model
    vocab_size: int = 257  # the tokenizer's ids, end-of-document id included, without [MASK] (bytes: 257)
    seq_len: int = 128
    val_fraction: float = 0.07  # documents held out by a hash of (source, index); 0 with val_files
    val_files: str = ""  # a corpus of validation documents instead (SlimPajama's validation split)
    text_field: str = "text"  # the JSON field / column that holds a document's text
    shards: str = ""  # a prepared folder (or its manifest.json); "": $SCALING_DATA/<named by the fields>
    train_tokens: float = 0  # dataset size if the shards are not prepared yet (repetition warning)
    # preparation (not part of a run's key): worker processes (0: the cores available) and, on a
    # SLURM cluster, the resources of its job
    workers: int = 0
    prepare_mem_gb: float = 32
    prepare_timeout_min: int = 1440


@dataclass
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
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on the CPU), bf16, fp32
    compile: str = "auto"  # torch.compile of the model: auto (on CUDA only), on, off
    checkpoint_every: int = 0
    checkpoint_minutes: float = 0  # also checkpoint every this many minutes (0: off): a requeue loses less
    # jsonl (always on), tensorboard, wandb or wandb:[ENTITY/]PROJECT: scaling/trackers.py
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])


@dataclass
class EvalConfig:
    evals_per_run: int = 8  # validations spread over the run (the last step is always one)
    sequences: int = 64
    t_per_seq: int = 8
    seed: int = 1234
    final_sequences: int = 0  # windows of the last evaluation (0: sequences); sized for its standard error


@dataclass
class SweepConfig:
    name: str = ""  # "": the sweep file's name
    arms: list[str] = MISSING
    budgets: list[float] = MISSING
    ladder: Any = MISSING  # a ladder name or YAML path, a list of shapes, or {generate: {...}}
    flops_convention: str = "reference"
    seeds: list[int] = field(default_factory=lambda: [0])
    # records like [{budget: 6e18, models: [...]}] or `auto`; typed list[SizeList] by _hints (the field
    # holds a string too), converted by _to_sweep
    sizes: Any = field(default_factory=list)
    auto_sizes: AutoSizes = field(default_factory=AutoSizes)
    # arm -> records like sizes; typed dict[str, list[SizeList]] by _hints (OmegaConf 2.3 neither checks
    # records nested in a dict of lists nor lets an override assign plain ones), converted by _to_sweep
    arm_sizes: dict[str, Any] = field(default_factory=dict)
    size_rule: SizeRule | None = None
    expected_tokens_per_param: float = 20.0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: dict[str, Any] = field(default_factory=dict)  # the composed cluster group; executors check it
    description: str = ""


SCHEMA_NAME = "_sweep_schema"
ENTRY_NAME = "_sweep_entry"
GROUPS = ("cluster",)  # config groups of a sweep (folders beside the sweep files)
LATE_KEYS = ("ladder", "size_rule")  # overrides applied after Hydra's composition (see _apply_late)

MISSING_EXAMPLES = {
    "arms": "arms=[ar]",
    "budgets": "budgets=[1e12]",
    "ladder": "ladder=paper",
    "size_rule.min_tokens_per_param": "size_rule.min_tokens_per_param=5",
    "size_rule.max_tokens_per_param": "size_rule.max_tokens_per_param=200",
}


# ---------------------------------------------------------------------------------------------
# Finding sweeps


def available_sweeps(extra: tuple[Path, ...] = ()) -> list[str]:
    """Sweep names in every sweep folder (user folders and the built-in sweeps/)."""
    dirs = sweeps_search_path(extra, check=False)
    return sorted({p.stem for d in dirs for p in d.glob("*.yaml")})


def group_options(group: str, extra: tuple[Path, ...] = ()) -> list[str]:
    """The configs of a group (e.g. the cluster configs) in every sweep folder."""
    dirs = sweeps_search_path(extra, check=False)
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


def _locate(name: str) -> tuple[tuple[Path, ...], str]:
    """(extra search folders, config name) of a sweep name or YAML path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"sweep file {path} does not exist")
        if path.suffix == ".yml":
            raise UserError(f"sweep file {path}: name it {path.stem}.yaml (Hydra reads .yaml files)")
        return (path.resolve().parent,), path.stem
    if not any((d / f"{name}.yaml").is_file() for d in sweeps_search_path()):
        raise UserError(
            f"unknown sweep {name!r}: choose from {', '.join(available_sweeps())} or give a YAML path"
        )
    return (), name


def _find_config(config: str, search: list[Path]) -> Path | None:
    for d in search:
        if (d / f"{config}.yaml").is_file():
            return d / f"{config}.yaml"
    return None


# ---------------------------------------------------------------------------------------------
# Loading


def load_sweep(name: str, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Compose a sweep (a name in the sweep folders or a YAML path) with Hydra overrides."""
    return load_sweeps(name, overrides, multirun=False)[0]


def load_sweeps(
    name: str, overrides: list[str] | tuple[str, ...] = (), multirun: bool = False
) -> list[SweepConfig]:
    """One SweepConfig, or with `multirun` one per combination of the sweep overrides
    (`train.lr=1e-3,3e-3 seeds=[0],[1]`: four), each named after its values (`tiny-lr=0.001-seeds=0`)."""
    overrides = list(overrides)
    extra, config_name = _locate(name)
    search = sweeps_search_path(extra)
    parsed = []
    for line in overrides:
        try:
            parsed.append(_parse_override(line))
        except _ListKey as e:
            raise UserError(_list_key_message(e, config_name, search)) from None
    swept = [o for o in parsed if o.is_sweep_override()]
    if swept and not multirun:
        o = swept[0]
        raise UserError(
            f"{o.input_line} is a sweep over several values: add -m to plan one sweep per value "
            f"(a list is written {o.key_or_group}=[...])"
        )
    for o in parsed:
        _check_override(o, search)
    if not multirun:
        return [_compose(config_name, [_line(o) for o in parsed], search)]
    choices: list[list[tuple[str, tuple[str, str] | None]]] = []
    for o in parsed:
        if o.is_sweep_override():
            choices.append(
                [(f"{_key_element(o)}={v}", (o.key_or_group, _label(v))) for v in _sweep_values(o, search)]
            )
        else:
            choices.append([(_line(o), None)])
    keys = [o.key_or_group for o in swept]
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    if len(set(short.values())) < len(short):
        short = {k: k for k in keys}
    sweeps, names = [], set()
    for combo in itertools.product(*choices):
        cfg = _compose(config_name, [line for line, _ in combo], search)
        labels = [f"{short[kv[0]]}={kv[1]}" for _, kv in combo if kv is not None and kv[0] != "name"]
        name_ = _safe_name("-".join([cfg.name, *labels]))
        unique, i = name_, 2
        while unique in names:
            unique, i = f"{name_}-{i}", i + 1
        names.add(unique)
        sweeps.append(replace(cfg, name=unique))
    return sweeps


def _label(text: str) -> str:
    """An override value as it reads in a sweep name: 1e-3 -> 0.001, [1e8,2e8] -> 1e8_2e8."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return _flow(OverridesParser.create().parse_override(f"x={text}").value(), quote=False)


def _safe_name(text: str) -> str:
    text = re.sub(r"[\[\]{}'\" ]", "", text)
    return UNSAFE_CHAR.sub("_", text.replace(",", "_").replace(":", "_").replace("/", "_"))


def sweep_from_dict(raw: dict) -> SweepConfig:
    """A SweepConfig from a plain mapping (what a sweep file holds, without Hydra): the same
    schema, type checks and value checks as load_sweep."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    raw = dict(raw)
    raw.pop("defaults", None)
    _check_value(raw, SweepConfig, "", "yaml")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(SweepConfig), raw)
    except OmegaConfBaseException as e:
        raise UserError(f"bad sweep config: {_first_line(e)}") from None
    return _to_sweep(cfg, str(raw.get("name") or "sweep"))


def _compose(config_name: str, lines: list[str], search: list[Path]) -> SweepConfig:
    """Hydra composes the schema, the sweep file (with its defaults) and the overrides; the
    overrides of LATE_KEYS are applied to the result (see _apply_late)."""
    import yaml
    from hydra import compose, initialize
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    late = [o for o in map(parser.parse_override, lines) if o.key_or_group.split(".")[0] in LATE_KEYS]
    lines = [
        line for line in lines if parser.parse_override(line).key_or_group.split(".")[0] not in LATE_KEYS
    ]
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=SweepConfig)
    store.store(
        name=ENTRY_NAME,
        node={
            "defaults": [SCHEMA_NAME, config_name, "_self_"],
            "hydra": {"searchpath": [f"file://{d}" for d in search]},
        },
    )
    GlobalHydra.instance().clear()
    try:
        with initialize(version_base=None, config_path=None):
            try:
                cfg = compose(config_name=ENTRY_NAME, overrides=lines)
            except HydraException as e:
                # a sweep without a cluster in its defaults: `cluster=slurm` adds one
                if "No match in the defaults list" not in str(e):
                    raise
                lines = [f"+{x}" if x.split("=", 1)[0] in GROUPS else x for x in lines]
                cfg = compose(config_name=ENTRY_NAME, overrides=lines)
    except yaml.YAMLError as e:
        raise UserError(_yaml_message(e)) from None
    except (
        HydraException,
        OmegaConfBaseException,
        ValueError,
        TypeError,
        AssertionError,
        AttributeError,
    ) as e:
        raise UserError(_explain(e, config_name, search)) from None
    finally:
        GlobalHydra.instance().clear()
    for o in late:
        _apply_late(cfg, o)
    return _to_sweep(cfg, config_name)


def _apply_late(cfg, o) -> None:
    """`ladder` and `size_rule` overrides, which Hydra cannot apply: `ladder` is also the name of
    the ladder/ folder (Hydra takes `ladder=...` for a config group choice) and holds a name, a
    list or a mapping (replaced, not merged); `size_rule` is null unless the sweep sets it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    key, value = o.key_or_group, None if o.is_delete() else o.value()
    head, _, rest = key.partition(".")
    try:
        if head == "size_rule":
            if o.is_delete() and not rest:
                cfg.size_rule = None
                return
            current = cfg.size_rule if cfg.size_rule is not None else {}
            if not rest:
                cfg.size_rule = (
                    None if value is None else OmegaConf.merge(OmegaConf.structured(SizeRule), current, value)
                )
                return
            if cfg.size_rule is None:
                cfg.size_rule = OmegaConf.structured(SizeRule)
        if o.is_delete():
            raise UserError(f"{o.input_line}: {key} cannot be deleted; set it instead")
        if not rest:
            cfg.ladder = value
            return
        if head == "ladder" and not OmegaConf.is_config(cfg.ladder):
            raise UserError(
                f"{key}: the ladder of this sweep is {_flow(cfg.ladder)}, which has no keys; give the whole ladder"
            )
        OmegaConf.update(cfg, key, value, merge=True)
    except (OmegaConfBaseException, TypeError, ValueError, AttributeError, AssertionError) as e:
        if head == "ladder":
            ladder = OmegaConf.to_container(cfg.ladder) if OmegaConf.is_config(cfg.ladder) else cfg.ladder
            kind = (
                "a list of shapes"
                if isinstance(ladder, list)
                else "a mapping"
                if isinstance(ladder, dict)
                else "a name"
            )
            raise UserError(
                f"{key}: the ladder of this sweep is {kind} without that entry; give the whole ladder "
                "(a name, a list of shapes or {generate: {...}})"
            ) from None
        raise UserError(f"{key}: cannot set it here ({_first_line(e)})") from None


def _to_sweep(cfg, default_name: str) -> SweepConfig:
    """The composed DictConfig -> SweepConfig, checked."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        container = OmegaConf.to_container(cfg, resolve=True)
        _check_value(
            container, SweepConfig, "", "override"
        )  # what Hydra leaves unchecked (arm_sizes records)
        sweep = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise UserError(f"bad sweep config: {_first_line(e)}") from None
    assert isinstance(sweep, SweepConfig)
    sweep.arm_sizes = {
        str(arm): [r if isinstance(r, SizeList) else _size_list(r) for r in records]
        for arm, records in sweep.arm_sizes.items()
    }
    if sweep.sizes != AUTO:
        sweep.sizes = [r if isinstance(r, SizeList) else _size_list(r) for r in sweep.sizes]
    if not sweep.name:
        sweep.name = default_name
    check_sweep(sweep)
    return sweep


def _size_list(raw: dict) -> SizeList:
    budget = raw.get("budget")
    return SizeList(None if budget is None else float(budget), [str(m) for m in raw.get("models", [])])


# ---------------------------------------------------------------------------------------------
# Values


def check_sweep(cfg: SweepConfig) -> None:
    """The checks that types cannot express; each failure is a one-line UserError."""
    from scaling.flops import CONVENTIONS

    check_name(cfg.name, "sweep name")
    if not cfg.arms:
        raise UserError("arms is empty: give at least one arm, e.g. arms=[ar]")
    for arm in cfg.arms:
        arm_info(arm)
    if not cfg.budgets:
        raise UserError("budgets is empty: give at least one FLOP budget, e.g. budgets=[1e12]")
    for b in cfg.budgets:
        if not (b > 0 and math.isfinite(b)):
            raise UserError(f"budgets: each budget must be > 0 and finite, got {b} (e.g. budgets=[1e12])")
    if not cfg.seeds:
        raise UserError("seeds is empty: give at least one seed, e.g. seeds=[0]")
    if cfg.flops_convention not in CONVENTIONS:
        raise UserError(
            f"unknown flops_convention {cfg.flops_convention!r}: choose from {', '.join(CONVENTIONS)}"
        )
    _positive("expected_tokens_per_param", cfg.expected_tokens_per_param)
    d, t, e = cfg.data, cfg.train, cfg.eval
    _positive("data.seq_len", d.seq_len)
    _positive("data.vocab_size", d.vocab_size)
    if not 0 <= d.val_fraction < 1:
        raise UserError(f"data.val_fraction must lie between 0 and 1, got {d.val_fraction}")
    if bool(d.val_files) == (d.val_fraction > 0):
        raise UserError(
            "data: give either val_fraction > 0 (documents held out by hash) or val_files=CORPUS with "
            f"val_fraction=0, not {'both' if d.val_files else 'neither'}"
        )
    if not d.corpus or not d.text_field:
        raise UserError(f"data.{'corpus' if not d.corpus else 'text_field'} is empty (docs/data.md)")
    if d.workers < 0:
        raise UserError(f"data.workers must be >= 0 (0: the cores available), got {d.workers}")
    _positive("data.prepare_mem_gb", d.prepare_mem_gb)
    _positive("data.prepare_timeout_min", d.prepare_timeout_min)
    _positive("train.global_batch", t.global_batch)
    if t.micro_batch < 0 or (t.micro_batch and t.global_batch % t.micro_batch):
        raise UserError(f"train.micro_batch {t.micro_batch} must divide train.global_batch {t.global_batch}")
    _positive("train.lr", t.lr)
    for name, allowed in (("precision", PRECISIONS), ("compile", COMPILE)):
        if getattr(t, name) not in allowed:
            raise UserError(f"train.{name} {getattr(t, name)!r}: choose from {', '.join(allowed)}")
    parse_trackers(t.loggers)  # before any job is submitted: names, projects, installed packages
    for arm, lr in t.lr_by_arm.items():
        arm_info(arm)
        _positive(f"train.lr_by_arm.{arm}", lr)
    if len(t.betas) != 2:
        raise UserError(f"train.betas must be two numbers, e.g. train.betas=[0.9,0.95], got {t.betas}")
    for key in ("evals_per_run", "sequences", "t_per_seq"):
        _positive(f"eval.{key}", getattr(e, key))
    if e.final_sequences < 0:
        raise UserError(f"eval.final_sequences must be >= 0 (0: eval.sequences), got {e.final_sequences}")
    rule = cfg.size_rule
    if rule is not None:
        if not 0 < rule.min_tokens_per_param <= rule.max_tokens_per_param < math.inf:
            raise UserError(
                "size_rule needs 0 < min_tokens_per_param <= max_tokens_per_param, got "
                f"{rule.min_tokens_per_param} and {rule.max_tokens_per_param}"
            )
        if rule.max_sizes < 0:
            raise UserError(f"size_rule.max_sizes must be >= 0 (0: no limit), got {rule.max_sizes}")
    if cfg.sizes == AUTO:
        _check_auto(cfg)
    else:
        _check_records("sizes", cfg.sizes)
    for arm, records in cfg.arm_sizes.items():
        arm_info(arm)
        _check_records(f"arm_sizes.{arm}", records)
    ladder = cfg.ladder
    if not (isinstance(ladder, (str, list)) or (isinstance(ladder, dict) and set(ladder) == {"generate"})):
        raise UserError(f"ladder must be a name, a list of shapes or {{generate: {{...}}}}, got {ladder!r}")


def _check_auto(cfg: SweepConfig) -> None:
    a = cfg.auto_sizes
    if a.n_sizes < 3:
        raise UserError(f"auto_sizes.n_sizes {a.n_sizes}: an IsoFLOP parabola needs at least 3 sizes")
    if not 0 < a.span <= a.max_span < math.inf:
        raise UserError(f"auto_sizes needs 0 < span <= max_span (ln N), got {a.span} and {a.max_span}")
    if cfg.size_rule is not None:
        raise UserError("sizes: auto and a size_rule both choose the sizes: keep one")
    if cfg.arm_sizes:
        raise UserError(
            "sizes: auto places every arm's sizes, arm_sizes too: drop arm_sizes (override ~arm_sizes) and give an arm its own shapes with auto_sizes.arm_models"
        )
    for arm in a.arm_models:
        arm_info(arm)


def _positive(where: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"{where} must be > 0 and finite, got {value}")


def _check_records(where: str, records: list[SizeList]) -> None:
    seen: dict[float | None, int] = {}
    for i, r in enumerate(records):
        if r.budget is not None and not (r.budget > 0 and math.isfinite(r.budget)):
            raise UserError(
                f"{where}.{i}.budget must be > 0 and finite (or null: the default), got {r.budget}"
            )
        if not r.models:
            raise UserError(f"{where}.{i}.models is empty: list the ladder's models to train at this budget")
        key = (
            None
            if r.budget is None
            else next(
                (b for b in seen if b is not None and math.isclose(b, r.budget, rel_tol=1e-9)), r.budget
            )
        )
        if key in seen:
            what = "default record (without budget)" if key is None else f"record for budget {_num(key)}"
            raise UserError(f"{where}.{i}: a second {what} ({where}.{seen[key]} is the first): keep one")
        seen[key] = i


# ---------------------------------------------------------------------------------------------
# Structure and types, checked where they enter (sweep files, overrides) with the key's path


_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    if cls not in _HINTS:
        hints = get_type_hints(cls)
        if cls is SweepConfig:
            hints["arm_sizes"] = dict[str, list[SizeList]]
            hints["sizes"] = list[SizeList]  # or the word `auto` (_check_value)
        _HINTS[cls] = hints
    return _HINTS[cls]


def _unwrap(hint) -> tuple[Any, bool]:
    """(hint without Optional, whether None is allowed)."""
    if get_origin(hint) is Union or type(hint).__name__ == "UnionType":
        args = [a for a in get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), True
    return hint, False


def _describe(hint, plural: bool = False) -> str:
    hint, _ = _unwrap(hint)
    if hint is SizeList:
        return "{budget, models} records" if plural else "a {budget, models} record"
    if is_dataclass(hint):
        return (
            f"mappings with keys {', '.join(f.name for f in fields(hint))}"
            if plural
            else (f"a mapping with keys {', '.join(f.name for f in fields(hint))}")
        )
    if get_origin(hint) is list:
        return ("lists of " if plural else "a list of ") + _describe(get_args(hint)[0], plural=True)
    if get_origin(hint) is dict:
        return (
            ("mappings" if plural else "a mapping")
            + " of names to "
            + _describe(get_args(hint)[1], plural=True)
        )
    names = {
        int: ("an integer", "integers"),
        float: ("a number", "numbers"),
        str: ("a string", "strings"),
        bool: ("true or false", "true or false"),
    }
    return names.get(hint, ("anything", "anything"))[plural]


def _section(path: str, cls) -> str:
    return "a sweep" if cls is SweepConfig else path


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_value(value: Any, hint: Any, path: str, context: str) -> None:
    """Raise a UserError naming `path` if `value` does not fit the schema type `hint`.
    `context` ("yaml" or "override") picks the syntax of the suggested fix."""
    from omegaconf.errors import ValidationError
    from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

    base, optional = _unwrap(hint)
    if base is Any:
        return
    if value == "???":
        example = MISSING_EXAMPLES.get(path)
        raise UserError(
            f"{path} is missing: set it in the sweep file" + (f" or give it as {example}" if example else "")
        )
    if value is None:
        if optional:
            return
        raise UserError(f"{path}: expected {_describe(base)}, got null")
    if is_dataclass(base):
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected {_describe(base)}, got {_flow(value)}")
        hints = _hints(base)
        for key, v in value.items():
            if key not in hints:
                where = _section(path, base)
                raise UserError(f"{_join(path, key)}: no such key; {where} has {', '.join(hints)}")
            _check_value(v, hints[key], _join(path, key), context)
        return
    if get_origin(base) is list:
        if get_args(base)[0] is SizeList and path == "sizes" and value == AUTO:
            return
        if get_args(base)[0] is SizeList and path == "sizes" and isinstance(value, str):
            raise UserError(
                f"sizes: expected `auto` or a list of {{budget, models}} records, got {_flow(value)}"
            )
        if not isinstance(value, list):
            if get_args(base)[0] is SizeList and isinstance(value, dict):
                raise UserError(_mapping_sizes_message(path, value, context))
            fix = f"[{_flow(value, quote=False)}]" if not isinstance(value, dict) else "[...]"
            suggestion = f"{path}={fix}" if context == "override" else f"{path}: {fix}"
            raise UserError(
                f"{path}: expected {_describe(base)}, got {_flow(value)}: write {_shell(suggestion)}"
            )
        for i, v in enumerate(value):
            _check_value(v, get_args(base)[0], f"{path}.{i}", context)
        return
    if get_origin(base) is dict:
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected {_describe(base)}, got {_flow(value)}")
        for key, v in value.items():
            _check_value(v, get_args(base)[1], _join(path, key), context)
        return
    nodes: dict[Any, Any] = {int: IntegerNode, float: FloatNode, str: StringNode, bool: BooleanNode}
    node = nodes.get(base)
    if node is None:
        return
    if isinstance(value, (list, dict)) or (base is not bool and isinstance(value, bool)):
        raise UserError(f"{path}: expected {_describe(base)}, got {_flow(value)}")
    try:
        node(value=value)
    except ValidationError:
        raise UserError(f"{path}: expected {_describe(base)}, got {_flow(value)}") from None


def _mapping_sizes_message(path: str, value: dict, context: str) -> str:
    records = []
    for key, models in value.items():
        names = models if isinstance(models, list) else [models]
        try:
            budget = None if str(key) == "default" else float(key)
        except ValueError:
            return f"{path}: expected a list of {{budget, models}} records, got a mapping with key {key!r}"
        records.append(SizeList(budget, [str(n) for n in names]))
    text = _records(records)
    fix = _shell(f"{path}={text}") if context == "override" else f"{path}: {text}"
    return (
        f"{path} is a list of {{budget, models}} records (a record without budget is the default), "
        f"not a mapping: write {fix}"
    )


def _records(records: list[SizeList]) -> str:
    parts = []
    for r in records:
        models = f"[{', '.join(r.models)}]"
        parts.append(
            f"{{models: {models}}}" if r.budget is None else f"{{budget: {_num(r.budget)}, models: {models}}}"
        )
    return f"[{', '.join(parts)}]"


def _num(x: float) -> str:
    """The shortest text that reads back as x: 6e18, 1.25e12, 0.003."""
    x = float(x)
    for p in range(1, 18):
        s = f"{x:.{p}g}"
        if float(s) == x:
            break
    mantissa, _, exponent = s.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else s


def _flow(value: Any, quote: bool = True) -> str:
    """A value in YAML flow style; strings quoted (`quote`) or, where they read back alike, bare."""
    if isinstance(value, list):
        return f"[{', '.join(_flow(v, quote) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v, quote)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _num(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if not quote and re.fullmatch(r"[A-Za-z_][\w.-]*", value) else repr(value)
    return str(value)


def _shell(override: str) -> str:
    """An override as typed into a shell: quoted when braces or spaces would be split."""
    return f"'{override}'" if re.search(r"[{} ]", override) else override


# ---------------------------------------------------------------------------------------------
# Overrides


class _ListKey(Exception):
    """An override that indexes a list of records by a name (`sizes.6e18=...`, `sizes.default=...`)."""

    def __init__(self, list_key: str, selector: str, rest: str, value: str):
        super().__init__(list_key)
        self.list_key, self.selector, self.rest, self.value = list_key, selector, rest, value


LIST_KEY = re.compile(
    r"^[+~]*(?P<list>sizes|arm_sizes\.[^.=]+)\.(?P<sel>[^.=]+)(?P<rest>(\.[^=]*)?)(=(?P<value>.*))?$"
)


def _parse_override(line: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    m = LIST_KEY.match(line)
    if m and not m["sel"].isdigit():
        raise _ListKey(m["list"], m["sel"], m["rest"] or "", m["value"] or "")
    try:
        return OverridesParser.create().parse_override(line)
    except HydraException as e:
        text = str(e).splitlines()
        reason = next((t for t in text if t and not t.startswith(("Error parsing", "See "))), "")
        hint = " (quote it for the shell, e.g. 'key=[{a: 1}]')" if "{" in line else ""
        raise UserError(f"bad override {line!r}: {reason}{hint}") from None


def _key_element(o) -> str:
    """The override's key with its prefix; `++` for a new key of an open mapping (lr_by_arm, arm_sizes)."""
    key = o.get_key_element()
    return f"++{key}" if _opens_mapping(o) else key


def _line(o) -> str:
    return f"++{o.input_line}" if _opens_mapping(o) else o.input_line


def _opens_mapping(o) -> bool:
    """Whether the override sets an entry of a mapping field (train.lr_by_arm.duo, arm_sizes.duo,
    cluster.sbatch.hold) or a whole mapping of the cluster (cluster.sbatch={hold: true}), which
    Hydra would refuse without `++` (the root is in struct mode)."""
    if o.type.name != "CHANGE":
        return False
    parts = o.key_or_group.split(".")
    if parts[0] == "cluster":  # its fields are the executor's, checked by its config class
        if len(parts) == 2:
            return not o.is_sweep_override() and isinstance(o.value(), dict)
        return len(parts) >= 3 and not parts[2].isdigit()
    hint: Any = SweepConfig
    for i, part in enumerate(parts):
        base, _ = _unwrap(hint)
        if is_dataclass(base):
            if part not in _hints(base):
                return False
            hint = _hints(base)[part]
        elif get_origin(base) is dict:
            return i == len(parts) - 1
        elif get_origin(base) is list and part.isdigit():
            hint = get_args(base)[0]
        else:
            return False
    return False


def _check_override(o, search: list[Path]) -> None:
    """Check an override's key and value(s) against the schema before Hydra sees it."""
    key = o.key_or_group
    if o.is_hydra_override():
        raise UserError(f"{o.input_line}: hydra.* settings are not sweep overrides")
    if key in GROUPS:
        if o.is_delete():
            return
        options = group_options(key, tuple(search))
        for value in _sweep_values(o, search) if o.is_sweep_override() else [o.value()]:
            if str(value) not in options:
                raise UserError(f"no {key} config {str(value)!r}: choose from {', '.join(options)}")
        return
    hint: Any = SweepConfig
    path = ""
    for part in key.split("."):
        base, _ = _unwrap(hint)
        if base is Any:
            return  # ladder: checked after composition
        if is_dataclass(base):
            hints = _hints(base)
            if part not in hints:
                raise UserError(
                    f"{_join(path, part)}: no such key; {_section(path, base)} has {', '.join(hints)}"
                )
            if base is SweepConfig and part == "cluster":
                return  # the composed cluster section decides (see _explain)
            hint = hints[part]
        elif get_origin(base) is list:
            if not part.isdigit():
                raise UserError(f"{_join(path, part)}: {path} is a list; index it by number, e.g. {path}.0")
            hint = get_args(base)[0]
        elif get_origin(base) is dict:
            hint = get_args(base)[1]
        else:
            raise UserError(f"{_join(path, part)}: {path} is {_describe(base)}, it has no keys")
        path = _join(path, part)
    if o.is_delete():
        return
    for value in _sweep_values(o, search, typed=True) if o.is_sweep_override() else [o.value()]:
        _check_value(value, hint, path, "override")


def _sweep_values(o, search: list[Path], typed: bool = False) -> list:
    """The values of a sweep override (a,b / choice / range / glob over a config group), as
    override text or (`typed`) as parsed values."""
    from hydra.core.override_parser.types import Glob

    if not o.is_discrete_sweep():
        raise UserError(
            f"{o.input_line}: only lists of values (a,b), choice(...), range(...) and glob(...) expand with -m"
        )
    value = o.value()
    if isinstance(value, Glob):
        if o.key_or_group not in GROUPS:
            raise UserError(f"{o.input_line}: glob(...) picks configs of a group ({', '.join(GROUPS)})")
        return value.filter(group_options(o.key_or_group, tuple(search)))
    return list(o.sweep_iterator()) if typed else list(o.sweep_string_iterator())


def _list_key_message(e: _ListKey, config_name: str, search: list[Path]) -> str:
    """`sizes.6e18=[6M]` or `sizes.default=[a]`: the override that does this with the record list."""
    selector = e.selector
    try:
        budget = None if selector == "default" else float(selector)
    except ValueError:
        return f"{e.list_key}.{selector}: {e.list_key} is a list of {{budget, models}} records; index it by number, e.g. {e.list_key}.0.models=[...]"
    try:
        base = _compose(config_name, [], search)
        records = base.sizes if e.list_key == "sizes" else base.arm_sizes.get(e.list_key.split(".", 1)[1], [])
    except UserError:
        records = []
    value = e.value or "[...]"
    what = "the default record" if budget is None else f"the record of budget {_num(budget)}"
    for i, r in enumerate(records):
        if (r.budget is None and budget is None) or (
            r.budget is not None and budget is not None and math.isclose(r.budget, budget, rel_tol=1e-9)
        ):
            return (
                f"{e.list_key}.{selector}: {e.list_key} is a list of {{budget, models}} records; "
                f"{what} is {e.list_key}.{i}: write {_shell(f'{e.list_key}.{i}.models={value}')}"
            )
    models = _parse_models(value)
    text = _records([*records, SizeList(budget, models)])
    missing = (
        "no default record (one without budget)" if budget is None else f"no record for budget {_num(budget)}"
    )
    return (
        f"{e.list_key}.{selector}: {e.list_key} is a list of {{budget, models}} records and has {missing}; "
        f"add one: {_shell(f'{e.list_key}={text}')}"
    )


def _parse_models(value: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(f"x={value}").value()
    except HydraException:
        return ["..."]
    return [str(m) for m in parsed] if isinstance(parsed, list) else [str(parsed)]


# ---------------------------------------------------------------------------------------------
# Hydra's errors, told in one line


def _index_problem(key: str, config_name: str, search: list[Path]) -> str | None:
    """`sizes.5.models=...` where sizes has 3 records: say which indices there are."""
    from dataclasses import asdict

    try:
        node: Any = asdict(_compose(config_name, [], search))
    except UserError:
        return None
    path = ""
    for part in key.split("."):
        if isinstance(node, list):
            if not part.isdigit():
                return None
            if int(part) >= len(node):
                have = f"{path}.0 to {path}.{len(node) - 1}" if node else "none"
                entries = "1 entry" if len(node) == 1 else f"{len(node)} entries"
                return f"{key}: {path} has {entries} ({have}); to add one, give the whole list"
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
        path = _join(path, part)
    return None


def _yaml_message(e) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is None:
        return f"malformed YAML: {problem}"
    return f"{mark.name} line {mark.line + 1}: malformed YAML: {problem}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0].strip() if text else type(e).__name__


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    link: BaseException | None = e
    while link is not None and link not in out:
        out.append(link)
        link = link.__cause__ or link.__context__
    return out


def _explain(e: BaseException, config_name: str, search: list[Path]) -> str:
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    chain = _chain(e)
    text = str(e)
    missing = next((x for x in chain if isinstance(x, MissingConfigException)), None)
    if missing is not None:
        m = re.search(r"Could not (?:find|load) '([^']+)'", str(missing))
        target = m.group(1) if m else ""
        where = re.match(r"In '([^']+)'", str(missing))
        if "/" in target:
            group, option = target.split("/", 1)
            return (
                f"no {group} config {option!r}: choose from {', '.join(group_options(group, tuple(search)))}"
            )
        if where:
            path = _find_config(where.group(1), search)
            return f"{path or where.group(1)}: defaults names {target!r}, which is not a sweep: choose from {', '.join(available_sweeps(tuple(search)))}"
        return f"unknown sweep {target!r}: choose from {', '.join(available_sweeps(tuple(search)))}"
    omega = next(
        (
            x
            for x in chain
            if isinstance(x, OmegaConfBaseException) and getattr(x, "full_key", None) is not None
        ),
        None,
    )
    where = re.match(r"In '([^']+)': ", text)
    if where:  # a config file does not fit the schema
        config = where.group(1)
        path = _find_config(config, search)
        if path is not None and "/" not in config:
            from omegaconf import OmegaConf

            raw = OmegaConf.to_container(OmegaConf.load(path))
            if isinstance(raw, dict):
                raw.pop("defaults", None)
                try:
                    _check_value(raw, SweepConfig, "", "yaml")
                except UserError as bad:
                    return f"{path}: {bad}"
        detail = text[where.end() :].splitlines()
        detail = [d for d in detail if d.strip() and "raised while composing" not in d]
        return f"{path or config}: {detail[0].strip() if detail else _first_line(e)}"
    m = re.search(r"Could not override '([^']+)'|Error merging override (\S+)", text)
    key = (m.group(1) or m.group(2).split("=", 1)[0]).lstrip("+~") if m else ""
    if re.search(r"\.\d+(\.|$)", key):
        problem = _index_problem(key, config_name, search)
        if problem:
            return problem
    if m and omega is not None:
        if isinstance(omega, (ConfigAttributeError, ConfigKeyError)):
            parent = getattr(omega, "parent_node", None)
            section = key.rsplit(".", 1)[0]
            keys = (
                ", ".join(str(k) for k in parent.keys())
                if parent is not None and hasattr(parent, "keys")
                else ""
            )
            if key.startswith("cluster."):
                return f"{key}: no such key; the cluster section has {keys}"
            return f"{key}: no such key" + (f"; {section} has {keys}" if keys else "")
        return f"{key}: {_first_line(omega)}"
    if omega is not None:
        return f"{str(omega.full_key).replace('[', '.').replace(']', '')}: {_first_line(omega)}"
    return f"bad override or config: {_first_line(e)}"
