"""A backtest of the scaling laws on a sweep's own runs (`scaling backtest` is its adapter).

    result = backtest_table(FitRequest(runs=Path("docs/results/cpu/runs.parquet")))
    print(result.text); result.rows   # JSON-ready

Each arm's largest budget is held out, the rest is fitted (with its bootstrap), and the held-out
budget's N* and L* predicted by both approaches are compared with the vertex of its own parabola
and with its runs (analysis/backtest.py says how).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis.backtest import ArmBacktest, backtest, split_largest
from analysis.fit import fit_runs
from analysis.report import interval_text, text_table
from analysis.table import load_runs
from scaling.errors import UserError
from scaling.spec import budget_tag
from scaling.workflows.fit import FitRequest

APPROACHES = {"approach2": "A2 power laws", "approach3": "A3 parametric"}


@dataclass
class BacktestResult:
    arms: list[ArmBacktest]
    rows: list[dict]
    text: str
    warnings: list[str]


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def backtest_table(request: FitRequest, progress: Callable[[int, int], None] | None = None) -> BacktestResult:
    data, warnings = load_runs(
        request.runs, flops=request.flops, x=request.x, arms=list(request.arms or []) or None
    )
    train, held = split_largest(data)
    if len(train) == 0:
        raise UserError(f"{request.runs}: every arm has a single budget; a backtest needs two or more")
    options = request.options()
    report = fit_runs(train, options, progress=progress)
    results = backtest(report, held)
    n_boot = options.n_boot
    rows, table = [], []
    for r in results:
        row: dict = {
            "arm": r.arm,
            "held_out_budget": r.budget,
            "compute": r.compute,
            "fitted": None
            if r.cell is None or not r.cell.valid
            else {"n_star": r.cell.n_star, "l_star": r.cell.l_star},
            "best_run_loss": r.best_run_loss,
            "notes": r.notes,
        }
        for name, checks in r.checks.items():
            row[name] = {
                q: {
                    "predicted": _num(c.predicted.value),
                    "ci": [_num(c.predicted.interval.low), _num(c.predicted.interval.high)],
                    "truth": c.truth,
                    "error": _num(c.error) if q == "n_star" else _num(c.difference),
                    "inside": c.inside,
                }
                for q, c in checks.items()
            }
            n, loss = checks.get("n_star"), checks.get("l_star")
            if n is None or loss is None:
                continue
            table.append(
                [
                    r.arm,
                    budget_tag(r.budget),
                    APPROACHES[name],
                    interval_text(n.predicted.value, n.predicted.interval, n_boot),
                    f"{n.truth:.3g}",
                    f"{100 * n.error:+.0f}%",
                    _yes(n.inside),
                    interval_text(loss.predicted.value, loss.predicted.interval, n_boot),
                    f"{loss.truth:.3g}",
                    f"{loss.difference:+.3f}",
                    _yes(loss.inside),
                ]
            )
        if r.run_errors is not None:
            row["approach3_runs"] = {
                "mean_abs_error": float(np.mean(np.abs(r.run_errors))),
                "max_abs_error": float(np.max(np.abs(r.run_errors))),
                "mean_error": float(np.mean(r.run_errors)),
                "n_runs": len(r.run_errors),
            }
        rows.append(row)
    lines = [
        f"backtest: each arm's largest budget held out, the rest fitted ({n_boot} bootstrap resamples); "
        "predictions at the held-out vertex's compute",
        "",
        *text_table(
            [
                "arm",
                "held out",
                "method",
                "N* predicted",
                "N* fitted",
                "error",
                "inside",
                "L* predicted",
                "L* fitted",
                "error (nats)",
                "inside",
            ],
            table,
        ),
    ]
    runs = [r for r in rows if "approach3_runs" in r]
    if runs:
        lines += ["", "Approach 3 on the held-out runs (predicted - actual loss, nats):"]
        lines += text_table(
            ["arm", "runs", "mean", "mean |error|", "max |error|", "best run's loss"],
            [
                [
                    r["arm"],
                    str(r["approach3_runs"]["n_runs"]),
                    f"{r['approach3_runs']['mean_error']:+.3f}",
                    f"{r['approach3_runs']['mean_abs_error']:.3f}",
                    f"{r['approach3_runs']['max_abs_error']:.3f}",
                    f"{r['best_run_loss']:.3f}",
                ]
                for r in runs
            ],
        )
    verdicts = [
        c.inside for r in results for cs in r.checks.values() for c in cs.values() if c.inside is not None
    ]
    if verdicts:
        lines += ["", f"{sum(verdicts)} of {len(verdicts)} fitted values inside the predicted intervals"]
    notes = [n for r in results for n in r.notes]
    lines += [f"note: {n}" for n in notes]
    # the default pair's multiplier is no part of a backtest
    kept = [w for w in report.warnings if "compute multiplier" not in w]
    return BacktestResult(results, rows, "\n".join(lines), warnings + kept)


def _yes(inside: bool | None) -> str:
    return "-" if inside is None else "yes" if inside else "NO"
