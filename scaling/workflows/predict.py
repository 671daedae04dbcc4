"""What to train at a budget nobody swept (`scaling predict` is its adapter).

    result = predict_budgets(PredictRequest(FitRequest(runs=path), budgets=(1e13,)), cfg)
    result.rows         # one dict per (arm, budget): N*, D*, L* of both approaches with intervals,
                        # the shapes for N*, steps and tokens at the sweep's batch, GPU-hours
    print(result.text)

The fit is refitted in memory (its bootstrap gives the intervals; nothing is written). With a sweep
config, N* (Approach 2's, else Approach 3's) is turned into the nearest shape of the sweep's ladder
(among the shapes the sweep trains that arm on) and a generated shape (scaling.ladder.generate_ladder,
the study's aspect), each planned as the
sweep's planner would plan it at that budget: steps at the sweep's batch, tokens, and, when a card
is known (--gpu, or the cluster config's `gpu`), GPU-hours = the run's FLOPs in the attention
convention (the work done, evaluation included) / (the card's dense bf16 peak x MFU): an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from analysis.predict import QUANTITIES, Estimate, Prediction, predict
from analysis.report import interval_text, text_table
from scaling.config import AUTO, SweepConfig
from scaling.errors import UserError
from scaling.flops import ModelShape, params_non_embedding
from scaling.hardware import require_peak
from scaling.ladder import generate_ladder
from scaling.placement import run_flops
from scaling.plan import auto_pool, ladder_shapes, model_vocab, plan_run
from scaling.spec import budget_tag
from scaling.workflows.fit import FitRequest, fit_table

DEFAULT_MFU = 0.35
SYMBOLS = {"n_star": "N*", "d_star": "D*", "l_star": "L*"}


@dataclass(frozen=True)
class PredictRequest:
    fit: FitRequest
    budgets: tuple[float, ...]
    gpu: str | None = None  # a card of scaling/hardware.py; None: the cluster config's, if any
    mfu: float | None = None  # None: the cluster config's, else DEFAULT_MFU

    def __post_init__(self) -> None:
        if not self.budgets:
            raise UserError("give at least one budget: --budget 1e21")
        for b in self.budgets:
            if not (b > 0 and math.isfinite(b)):
                raise UserError(f"--budget {b}: give a FLOP budget > 0, e.g. --budget 1e21")
        if self.mfu is not None and not 0 < self.mfu <= 1:
            raise UserError(f"--mfu {self.mfu}: give a fraction in (0, 1], e.g. --mfu 0.35")
        if self.gpu is not None:
            require_peak(self.gpu)


@dataclass
class PredictResult:
    predictions: list[Prediction]
    rows: list[dict]  # JSON-ready, one per (arm, budget)
    text: str
    warnings: list[str]


def _estimate(e: Estimate | None) -> dict | None:
    if e is None:
        return None
    iv = e.interval
    finite = [x if math.isfinite(x) else None for x in (e.value, iv.low, iv.high)]
    return {"value": finite[0], "ci": finite[1:], "ci_valid": iv.valid}


def _shape_row(cfg: SweepConfig, arm: str, budget: float, shape: ModelShape, hardware) -> dict:
    run = plan_run(cfg, arm, budget, shape, seed=cfg.seeds[0], train_tokens=0)
    row = {
        "model": shape.name,
        "d_model": shape.d_model,
        "n_layers": shape.n_layers,
        "n_heads": shape.n_heads,
        "params_non_embedding": run.params_non_embedding,
        "steps": run.spec.steps,
        "tokens": run.tokens,
        "tokens_per_param": run.tokens_per_param,
        "global_batch": cfg.train.global_batch,
        "run_flops_attention": run_flops(run.spec),
        "gpu_hours": None,
    }
    if hardware is not None and run.spec.steps > 0:
        gpu, peak, mfu = hardware
        row["gpu_hours"] = run_flops(run.spec) / (peak * mfu) / 3600
    return row


def arm_shapes(cfg: SweepConfig, arm: str, shapes: list[ModelShape]) -> list[ModelShape]:
    """The shapes the sweep trains this arm on (its size records, or its sizes: auto pool), so that
    N* becomes a shape of the arm's own family (tiny: 1-layer diffusion, 2-layer AR); the whole
    ladder when the config names none."""
    by_name = {s.name: s for s in shapes}
    if cfg.sizes == AUTO:
        return auto_pool(cfg, arm, by_name)
    records = cfg.arm_sizes.get(arm) or cfg.sizes
    names = [n for r in records for n in r.models if n in by_name]
    return [by_name[n] for n in dict.fromkeys(names)] or shapes


def _hardware(request: PredictRequest, cfg: SweepConfig | None):
    """(card, peak, mfu) or None: --gpu, else the cluster config's card."""
    cluster = cfg.cluster if cfg is not None else {}
    gpu = request.gpu or cluster.get("gpu")
    if not gpu:
        return None
    mfu = request.mfu if request.mfu is not None else float(cluster.get("mfu") or DEFAULT_MFU)
    return str(gpu), require_peak(str(gpu)), mfu


def predict_budgets(
    request: PredictRequest,
    cfg: SweepConfig | None,
    progress: Callable[[int, int], None] | None = None,
) -> PredictResult:
    report, warnings = fit_table(request.fit, progress)
    predictions = predict(report, list(request.budgets))
    hardware = _hardware(request, cfg)
    shapes: list[ModelShape] = []
    if cfg is not None:
        vocab = model_vocab(cfg)
        shapes = [s.with_data(vocab, cfg.data.seq_len) for s in ladder_shapes(cfg)]
    rows, lines = [], []
    flops = report.data.flops
    axis = "the planned budgets" if flops == "budget" else f"achieved FLOPs, {flops} convention"
    lines.append(
        f"predictions at {', '.join(budget_tag(b) for b in request.budgets)} FLOPs (the fit's compute axis: "
        f"{axis}), {report.options.n_boot} bootstrap resamples, {100 * report.options.level:g}% intervals"
    )
    for p in predictions:
        row: dict = {"arm": p.arm, "budget_flops": p.budget}
        for name, source in (("approach2", p.approach2), ("approach3", p.approach3)):
            row[name] = {q: _estimate(source.get(q)) for q in QUANTITIES} if source else None
        row["disagree"] = p.disagree
        lines += ["", f"{p.arm} at {budget_tag(p.budget)} FLOPs"]
        header = ["", *(SYMBOLS[q] for q in QUANTITIES)]
        table = []
        for label, source in (
            ("Approach 2 (power laws)", p.approach2),
            ("Approach 3 (parametric)", p.approach3),
        ):
            if source:
                table.append([label, *(_text(source[q], report.options.n_boot) for q in QUANTITIES)])
            else:
                table.append([label, "not fitted", "", ""])
        lines += text_table(header, table)
        if p.disagree:
            lines.append(
                "  the approaches disagree beyond their intervals on "
                + ", ".join(SYMBOLS[q] for q in p.disagree)
                + ": trust neither blindly (more budgets, or a budget nearer the target, narrow them)"
            )
        lines += [f"  note: {n}" for n in p.notes]
        n_star = p.best("n_star")
        row["shapes"] = None
        if cfg is not None and n_star is not None and math.isfinite(n_star.value):
            pool = arm_shapes(cfg, p.arm, shapes)
            nearest = min(pool, key=lambda s: abs(math.log(params_non_embedding(s) / n_star.value)))
            generated = generate_ladder(
                n_star.value, n_star.value, 1, vocab=model_vocab(cfg), seq_len=cfg.data.seq_len
            )[0].with_data(model_vocab(cfg), cfg.data.seq_len)
            which = "Approach 2" if p.approach2 else "Approach 3"
            row["shapes"] = {
                "from": which,
                "nearest_ladder": _shape_row(cfg, p.arm, p.budget, nearest, hardware),
                "generated": _shape_row(cfg, p.arm, p.budget, generated, hardware),
            }
            for label, s in (("nearest ladder shape", "nearest_ladder"), ("generated shape", "generated")):
                r = row["shapes"][s]
                text = (
                    f"  {label} for {which}'s N*: {r['model']} (N {r['params_non_embedding']:.3g}), "
                    f"{r['steps']:,} steps x batch {r['global_batch']} = {r['tokens']:.3g} tokens "
                    f"({r['tokens_per_param']:.3g} per parameter)"
                )
                if r["gpu_hours"] is not None:
                    assert hardware is not None
                    text += (
                        f", {r['gpu_hours']:.3g} GPU-hours on {hardware[0]} at MFU {hardware[2]:g} (estimate)"
                    )
                lines.append(text)
        elif cfg is None:
            row["shapes"] = None
        rows.append(row)
    if cfg is None:
        lines += ["", "shapes, steps and GPU-hours need the sweep's config: give SWEEP rather than --runs"]
    elif hardware is None:
        lines += ["", "GPU-hours: give --gpu NAME (or the cluster config's gpu) to estimate them"]
    # the default pair's multiplier is no part of a prediction (scaling compare measures any pair)
    kept = [w for w in report.warnings if "compute multiplier" not in w]
    return PredictResult(predictions, rows, "\n".join(lines), warnings + kept)


def _text(e: Estimate, n_boot: int) -> str:
    return interval_text(e.value, e.interval, n_boot)
