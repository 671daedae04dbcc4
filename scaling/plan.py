"""The IsoFLOP planner: a sweep config -> one run spec per (arm, budget, model, seed).

Pure: it reads the config and the ladder and returns specs and warnings; nothing is written.
steps = floor(C / (3 * F_fwd_seq * global_batch)) under the sweep's planning convention, so every
run spends its budget up to the floor of one step.

`sizes: auto` (docs/methods.md): budgets are placed in increasing order. The first budget's window
of sizes is centred on the expected optimum sqrt(C / (6 x expected_tokens_per_param)); a later
budget is placed only once a Window for it is given (scaling/workflows/adaptive.py computes it
from the finished lower budgets' fits) and is otherwise pending. A window asks for n_sizes targets
evenly spaced in ln N over [centre - half_width, centre + half_width] (plus any extra targets); each
takes the nearest unused shape of the arm's pool, and every planned run records why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from scaling.config import AUTO, SizeList, SweepConfig
from scaling.errors import UserError
from scaling.flops import ModelShape, params_non_embedding, params_total, train_flops_per_seq
from scaling.ladder import ShapeSpec, generate_ladder, load_ladder, parse_shapes
from scaling.spec import DataSpec, EvalSpec, OptimSpec, RunSpec, budget_tag, data_folder

DEVIATION_WARN = 0.01  # achieved FLOPs further than this from the budget gets a warning
MAX_STEPS = 2**53  # step counts above this lose integer precision as floats (and near int64's end)


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    params_total: int
    params_non_embedding: int
    flops_per_step: float  # planning convention, whole global batch
    tokens: int
    tokens_per_param: float  # over non-embedding parameters
    achieved_flops: float
    deviation: float  # achieved / budget - 1 (<= 0: steps are floored)
    warnings: tuple[str, ...] = ()
    why: str = ""  # sizes: auto: why this size was chosen

    @property
    def run_key(self) -> str:
        return self.spec.run_key


@dataclass(frozen=True)
class Window:
    """Where `sizes: auto` places one (arm, budget): targets in ln N and the reason."""

    centre: float  # ln N
    half_width: float  # ln N
    why: str
    extra: tuple[float, ...] = ()  # ln N targets beyond the window (a lower cell's vertex fell outside)

    def targets(self, n: int) -> list[float]:
        if n == 1:
            return [self.centre, *self.extra]
        step = 2 * self.half_width / (n - 1)
        return [self.centre - self.half_width + i * step for i in range(n)] + list(self.extra)


@dataclass
class Plan:
    sweep: SweepConfig
    details: list[PlannedRun]
    warnings: list[str] = field(default_factory=list)  # sweep-level, beside each run's own
    pending: list[tuple[str, float]] = field(
        default_factory=list
    )  # sizes: auto: (arm, budget) not yet placed
    windows: dict[tuple[str, float], Window] = field(default_factory=dict)  # sizes: auto: the placed ones

    @property
    def runs(self) -> list[RunSpec]:
        return [d.spec for d in self.details]

    @property
    def all_warnings(self) -> list[str]:
        return self.warnings + [w for d in self.details for w in d.warnings]


def model_vocab(cfg: SweepConfig) -> int:
    return cfg.data.vocab_size + 1  # [MASK] is the last id


def ladder_shapes(cfg: SweepConfig) -> list[ShapeSpec]:
    """The sweep's ladder: a name / path, an inline list of shapes, or a generator mapping."""
    ladder = cfg.ladder
    if isinstance(ladder, str):
        return load_ladder(ladder)
    if isinstance(ladder, list):
        return parse_shapes(ladder, where="ladder")
    if isinstance(ladder, dict) and "generate" in ladder:
        g = dict(ladder["generate"])
        try:
            return generate_ladder(
                float(g.pop("min_params")),
                float(g.pop("max_params")),
                int(g.pop("count")),
                vocab=model_vocab(cfg),
                seq_len=cfg.data.seq_len,
                **g,
            )
        except (KeyError, TypeError) as e:
            raise UserError(
                f"ladder.generate needs min_params, max_params, count (and optional aspect, width_step, max_layers): {e}"
            ) from None
    raise UserError(f"ladder must be a name, a list of shapes or {{generate: {{...}}}}, got {ladder!r}")


def _lookup_budget(records: list[SizeList], budget: float) -> list[str] | None:
    """The models of the record of this budget, else of the record without a budget, else None."""
    default = None
    for record in records:
        if record.budget is None:
            default = record.models
        elif math.isclose(record.budget, budget, rel_tol=1e-9):
            return list(record.models)
    return None if default is None else list(default)


def auto_pool(cfg: SweepConfig, arm: str, shapes: dict[str, ModelShape]) -> list[ModelShape]:
    """The shapes `sizes: auto` may give an arm: auto_sizes.arm_models, else models, else the ladder."""
    names = cfg.auto_sizes.arm_models.get(arm) or cfg.auto_sizes.models or list(shapes)
    where = f"auto_sizes.arm_models.{arm}" if arm in cfg.auto_sizes.arm_models else "auto_sizes.models"
    unknown = [n for n in names if n not in shapes]
    if unknown:
        raise UserError(f"{where}: unknown model {unknown[0]!r}; the ladder has {', '.join(shapes)}")
    return sorted((shapes[n] for n in names), key=params_non_embedding)


def first_window(cfg: SweepConfig, budget: float) -> Window:
    """The lowest budget's window: centred on the optimum that expected_tokens_per_param implies."""
    n = math.sqrt(budget / (6 * cfg.expected_tokens_per_param))
    return Window(
        math.log(n),
        cfg.auto_sizes.span / 2,
        f"lowest budget: centred on N {n:.3g}, the optimum at {cfg.expected_tokens_per_param:g} tokens per parameter",
    )


def auto_models(
    cfg: SweepConfig, arm: str, budget: float, shapes: dict[str, ModelShape], window: Window
) -> list[tuple[ModelShape, str]]:
    """The shapes of a window: for each target in ln N, the nearest shape of the arm's pool not yet
    taken (with a step at this budget), with the reason."""
    pool = [s for s in auto_pool(cfg, arm, shapes) if _steps(cfg, arm, budget, s) > 0]
    chosen: list[tuple[ModelShape, str]] = []
    for target in window.targets(cfg.auto_sizes.n_sizes):
        free = [s for s in pool if all(s is not c for c, _ in chosen)]
        if not free:
            break
        shape = min(free, key=lambda s: abs(math.log(params_non_embedding(s)) - target))
        kind = "extra size beyond the window" if target in window.extra else "window"
        chosen.append((shape, f"{window.why}; {kind} target N {math.exp(target):.3g}"))
    return sorted(chosen, key=lambda c: params_non_embedding(c[0]))


def models_for(cfg: SweepConfig, arm: str, budget: float, shapes: dict[str, ModelShape]) -> list[ModelShape]:
    names = _lookup_budget(cfg.arm_sizes.get(arm, []), budget)
    if names is None and cfg.sizes != AUTO:
        names = _lookup_budget(cfg.sizes, budget)
    if names is not None:
        unknown = [n for n in names if n not in shapes]
        if unknown:
            raise UserError(
                f"unknown model {unknown[0]!r} at budget {budget_tag(budget)}: the ladder has {', '.join(shapes)}"
            )
        return [shapes[n] for n in names]
    if cfg.size_rule is None:
        where = "sizes" if arm not in cfg.arm_sizes else f"arm_sizes.{arm}"
        raise UserError(
            f"budget {budget_tag(budget)} has no sizes for arm {arm}: add a record "
            f"{{budget: {budget_tag(budget)}, models: [...]}} (or one without budget: the default) to {where} "
            "in the sweep file, or set a size_rule"
        )
    return _sizes_by_rule(cfg, arm, budget, list(shapes.values()))


def _sizes_by_rule(cfg: SweepConfig, arm: str, budget: float, shapes: list[ModelShape]) -> list[ModelShape]:
    rule = cfg.size_rule
    assert rule is not None
    picked = []
    for shape in sorted(shapes, key=params_non_embedding):
        steps = _steps(cfg, arm, budget, shape)
        tpp = steps * cfg.train.global_batch * shape.seq_len / params_non_embedding(shape)
        if steps > 0 and rule.min_tokens_per_param <= tpp <= rule.max_tokens_per_param:
            picked.append(shape)
    if rule.max_sizes and len(picked) > rule.max_sizes:
        idx = (
            [round(i * (len(picked) - 1) / (rule.max_sizes - 1)) for i in range(rule.max_sizes)]
            if rule.max_sizes > 1
            else [len(picked) // 2]
        )
        picked = [picked[i] for i in sorted(set(idx))]
    return picked


def _flops_per_step(cfg: SweepConfig, arm: str, shape: ModelShape) -> float:
    return train_flops_per_seq(shape, cfg.flops_convention, arm) * cfg.train.global_batch


def _steps(cfg: SweepConfig, arm: str, budget: float, shape: ModelShape) -> int:
    return int(budget // _flops_per_step(cfg, arm, shape))


def warmup_for(cfg: SweepConfig, steps: int) -> int:
    t = cfg.train
    warmup = (
        t.warmup_steps
        if t.warmup_steps >= 0
        else max(math.ceil(t.warmup_fraction * steps), t.min_warmup_steps)
    )
    return min(warmup, steps)


def lr_for(cfg: SweepConfig, arm: str, shape: ModelShape) -> float:
    lr = cfg.train.lr_by_arm.get(arm, cfg.train.lr)
    if cfg.train.lr_width_ref > 0:
        lr *= min(1.0, cfg.train.lr_width_ref / shape.d_model)
    return lr


def plan_run(
    cfg: SweepConfig, arm: str, budget: float, shape: ModelShape, seed: int, train_tokens: float
) -> PlannedRun:
    steps = _steps(cfg, arm, budget, shape)
    per_step = _flops_per_step(cfg, arm, shape)
    t, d = cfg.train, cfg.data
    lr = lr_for(cfg, arm, shape)
    spec = RunSpec(
        arm=arm,
        model=shape,
        budget_flops=budget,
        flops_convention=cfg.flops_convention,
        steps=steps,
        global_batch=t.global_batch,
        micro_batch=t.micro_batch,
        optim=OptimSpec(
            lr=lr,
            min_lr=lr * t.min_lr_ratio,
            warmup_steps=warmup_for(cfg, steps),
            betas=(t.betas[0], t.betas[1]),  # two, checked by the config
            weight_decay=t.weight_decay,
            eps=t.eps,
            grad_clip=t.grad_clip,
        ),
        data=DataSpec(
            corpus=d.corpus,
            tokenizer=d.tokenizer,
            vocab_size=d.vocab_size,
            seq_len=d.seq_len,
            val_fraction=d.val_fraction,
            shards=str(data_folder(d)),
            val_files=d.val_files,
            text_field=d.text_field,
        ),
        eval=EvalSpec(
            every=max(1, steps // max(1, cfg.eval.evals_per_run)),
            sequences=cfg.eval.sequences,
            t_per_seq=cfg.eval.t_per_seq,
            seed=cfg.eval.seed,
            final_sequences=cfg.eval.final_sequences,
        ),
        seed=seed,
        precision=t.precision,
        compile=t.compile,
        checkpoint_every=t.checkpoint_every,
        checkpoint_minutes=t.checkpoint_minutes,
        loggers=tuple(t.loggers),
        sweep=cfg.name,
    )
    n = params_non_embedding(shape)
    tokens = steps * t.global_batch * shape.seq_len
    achieved = steps * per_step
    deviation = achieved / budget - 1.0
    where = f"{arm} {shape.name} @ {budget_tag(budget)}"
    warnings = []
    if steps > 0 and abs(deviation) > DEVIATION_WARN:
        warnings.append(
            f"{where}: achieved FLOPs {achieved:.3g} are {100 * deviation:+.1f}% off the budget ({steps} steps)"
        )
    if train_tokens and tokens > train_tokens:
        warnings.append(
            f"{where}: needs {tokens:.3g} tokens, the data has {train_tokens:.3g} ({tokens / train_tokens:.1f} epochs: data repetition)"
        )
    return PlannedRun(
        spec, params_total(shape), n, per_step, tokens, tokens / n, achieved, deviation, tuple(warnings)
    )


def plan_sweep(
    cfg: SweepConfig,
    train_tokens: float | None = None,
    windows: dict[tuple[str, float], Window] | None = None,
) -> Plan:
    """All runs of a sweep, in (arm, budget, size, seed) order. `train_tokens` overrides the
    config's dataset size (the sweep passes the prepared shards' count). With `sizes: auto`,
    `windows` place the budgets above the lowest; those without one are pending."""
    vocab = model_vocab(cfg)
    shapes = {s.name: s.with_data(vocab, cfg.data.seq_len) for s in ladder_shapes(cfg)}
    train_tokens = cfg.data.train_tokens if train_tokens is None else train_tokens
    details: list[PlannedRun] = []
    warnings: list[str] = []
    auto = cfg.sizes == AUTO
    budgets = sorted(cfg.budgets) if auto else cfg.budgets
    pending: list[tuple[str, float]] = []
    placed: dict[tuple[str, float], Window] = {}
    for arm in cfg.arms:
        for budget in budgets:
            if auto:
                window = (windows or {}).get((arm, budget))
                if window is None and budget == budgets[0]:
                    window = first_window(cfg, budget)
                if window is None:
                    pending.append((arm, budget))
                    continue
                placed[arm, budget] = window
                picks = auto_models(cfg, arm, budget, shapes, window)
                cell = [
                    replace(plan_run(cfg, arm, budget, m, seed, train_tokens), why=why)
                    for m, why in picks
                    for seed in cfg.seeds
                ]
            else:
                models = models_for(cfg, arm, budget, shapes)
                cell = [
                    plan_run(cfg, arm, budget, m, seed, train_tokens) for m in models for seed in cfg.seeds
                ]
            runnable = [r for r in cell if r.spec.steps > 0]
            where = f"{arm} @ {budget_tag(budget)}"
            if not runnable:
                smallest = min(shapes.values(), key=lambda s: _flops_per_step(cfg, arm, s))
                raise UserError(
                    f"budget {budget_tag(budget)} is too small for any model of {arm} (0 steps): the smallest "
                    f"step costs {_flops_per_step(cfg, arm, smallest):.3g} FLOPs; raise the budget or lower the batch"
                )
            for r in cell:
                if r.spec.steps == 0:
                    warnings.append(f"{where}: {r.spec.model.name} gets 0 steps and is skipped")
            sizes = sorted({r.params_non_embedding for r in runnable})
            if len(sizes) < 3:
                warnings.append(f"{where}: only {len(sizes)} size(s); an IsoFLOP parabola needs at least 3")
            expected = math.sqrt(budget / (6 * cfg.expected_tokens_per_param))
            if sizes and not (sizes[0] <= expected <= sizes[-1]):
                side = "above" if sizes[0] > expected else "below"
                warnings.append(
                    f"{where}: sizes {sizes[0]:.3g}-{sizes[-1]:.3g} do not bracket the expected optimum "
                    f"{expected:.3g} ({cfg.expected_tokens_per_param:g} tokens/param): all sizes are {side} it"
                )
            details.extend(runnable)
    too_long = [d for d in details if d.spec.steps > MAX_STEPS]
    if too_long:
        d = too_long[0]
        budget = d.spec.budget_flops
        most = MAX_STEPS * min(r.flops_per_step for r in details if r.spec.budget_flops == budget)
        most = math.floor(most / 10 ** math.floor(math.log10(most) - 2)) * 10 ** math.floor(
            math.log10(most) - 2
        )
        raise UserError(
            f"budget {budget_tag(budget)} gives {d.spec.arm} {d.spec.model.name} {d.spec.steps:.3g} steps, "
            f"more than 2**53: lower it to at most {budget_tag(most)}, e.g. budgets=[{budget_tag(most)}]"
        )
    keys = [d.run_key for d in details]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UserError(
            f"two runs of the sweep have the same run key {dup}: a model is listed twice at one budget"
        )
    return Plan(cfg, details, warnings, pending, placed)


def summary_lines(plan: Plan) -> list[str]:
    """The plan in a few lines: runs, arms, budgets, total FLOPs, then every warning."""
    cfg = plan.sweep
    total = sum(d.achieved_flops for d in plan.details)
    head = (
        f"sweep {cfg.name}: {len(plan.details)} runs, arms {', '.join(cfg.arms)}, budgets "
        f"{', '.join(budget_tag(b) for b in cfg.budgets)}, {total:.3g} FLOPs in all ({cfg.flops_convention} convention)"
    )
    lines = [head]
    for (arm, budget), window in plan.windows.items():
        models = [
            d.spec.model.name for d in plan.details if (d.spec.arm, d.spec.budget_flops) == (arm, budget)
        ]
        lines.append(
            f"sizes: auto: {arm} @ {budget_tag(budget)}: {', '.join(dict.fromkeys(models))} ({window.why})"
        )
    if plan.pending:
        waiting: dict[float, list[str]] = {}
        for arm, budget in plan.pending:
            waiting.setdefault(budget, []).append(arm)
        lines.append(
            "sizes: auto: placed once the lower budgets are done: "
            + "; ".join(f"{budget_tag(b)} ({', '.join(arms)})" for b, arms in waiting.items())
        )
    return [*lines, *(f"warning: {w}" for w in plan.all_warnings)]
