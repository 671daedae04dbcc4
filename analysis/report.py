"""A FitReport as files and text: fits.json (everything, including the fitted runs, so plots need
nothing else), fits.parquet (one tidy row per reported number) and the printed summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.bootstrap import Interval
from analysis.fit import CELL_QUANTITIES, FRONTIER_LAWS, ArmFit, FitReport, Key
from analysis.isoflop import Cell
from analysis.multiplier import efficiency_sentence
from analysis.parametric import MIN_RUNS, N_PARAMS, RUNS_PER_PARAM
from scaling.errors import UserError
from scaling.spec import budget_tag

FITS_SCHEMA_VERSION = 1
TIDY_COLUMNS = (
    ("section", pa.string()),
    ("arm", pa.string()),
    ("budget_flops", pa.float64()),
    ("quantity", pa.string()),
    ("value", pa.float64()),
    ("ci_low", pa.float64()),
    ("ci_high", pa.float64()),
    ("ci_valid", pa.float64()),
    ("note", pa.string()),
)


def _num(x) -> float | None:
    """JSON has no NaN: missing numbers are null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _nums(xs) -> list[float | None]:
    return [_num(x) for x in np.asarray(xs, dtype=float)]


def _ci(report: FitReport, key: Key) -> list[float | None]:
    iv = report.intervals.get(key)
    return [None, None] if iv is None else [_num(iv.low), _num(iv.high)]


def _x_label(report: FitReport) -> str:
    return "budget_flops" if report.data.flops == "budget" else f"flops_{report.data.flops}"


def _arm_json(report: FitReport, fit: ArmFit) -> dict:
    a = fit.arm
    cells = []
    for c in fit.cells:
        cell = {
            "budget_flops": c.budget,
            "n_runs": c.n_runs,
            "n_sizes": c.n_sizes,
            "ln_n_min": c.ln_n_min,
            "ln_n_max": c.ln_n_max,
            "parabola": {"a": c.parabola.a, "b": c.parabola.b, "c": c.parabola.c},
        }
        cell.update({q: _num(getattr(c, q)) for q in CELL_QUANTITIES})
        cell.update(
            flags=list(c.flags),
            valid=c.valid,
            ci={q: _ci(report, Key("isoflop", a, c.budget, q)) for q in CELL_QUANTITIES},
        )
        cells.append(cell)
    laws = {}
    for name, law in fit.power_laws.items():
        laws[name] = (
            None
            if law is None
            else {
                "coef": law.coef,
                "exponent": law.exponent,
                "ci": {
                    p: _ci(report, Key("power_law", a, None, f"{name}.{p}")) for p in ("coef", "exponent")
                },
            }
        )
    frontier = None
    if fit.frontier is not None:
        f = fit.frontier
        frontier = {
            "E": f.E,
            "A": f.A,
            "g": f.g,
            "form": f.form,
            "ci": {q: _ci(report, Key("frontier", a, None, q)) for q in ("E", "A", "g")},
        }
    parametric = None
    if fit.parametric is not None:
        p = fit.parametric
        parametric = {
            **p.as_dict(),
            "objective": p.objective,
            "n_runs": p.n_runs,
            "ci": {q: _ci(report, Key("parametric", a, None, q)) for q in p.as_dict()},
        }
    bands = None
    if a in report.bands:
        b = report.bands[a]
        bands = {
            "compute": _nums(b.compute),
            **{q: {"low": _nums(b.low[q]), "high": _nums(b.high[q])} for q in FRONTIER_LAWS},
        }
    rows = report.data.of_arm(a)
    return {
        "n_runs": fit.n_runs,
        "skipped_budgets": fit.skipped_budgets,
        "cells": cells,
        "power_laws": laws,
        "frontier": frontier,
        "parametric": parametric,
        "bands": bands,
        "runs": {
            "run_key": [str(k) for k in rows.run_key],
            "budget_flops": _nums(rows.budget),
            "params_non_embedding": _nums(rows.n),
            "tokens": _nums(rows.d),
            "compute": _nums(rows.compute),
            "val_loss": _nums(rows.loss),
        },
    }


def to_json(report: FitReport) -> dict:
    o = report.options
    m = report.multiplier
    mult = None
    if m is not None:
        mult = {
            "candidate": m.candidate,
            "baseline": m.baseline,
            "loss_low": m.range.low,
            "loss_high": m.range.high,
            "extrapolated": m.range.extrapolated,
            "loss_ref": m.range.reference,
            "value": _num(m.value),
            "ci": [_num(m.interval.low), _num(m.interval.high)],
            "ci_valid": m.interval.valid,
            "sentence": multiplier_sentence(report),
            "curve": {
                "loss": _nums(m.losses),
                "value": _nums(m.curve),
                "low": _nums(m.curve_low),
                "high": _nums(m.curve_high),
            },
        }
    return {
        "schema_version": FITS_SCHEMA_VERSION,
        "source": report.data.source,
        "flops": report.data.flops,
        "x_column": _x_label(report),
        "n_runs": len(report.data),
        "bootstrap": {"n": o.n_boot, "seed": o.seed, "level": o.level},
        "arms": {a: _arm_json(report, f) for a, f in report.arms.items()},
        "multiplier": mult,
        "warnings": report.warnings,
    }


def to_table(report: FitReport) -> pa.Table:
    """One row per reported number with its interval (tidy: filter by section/arm/quantity)."""
    notes: dict[Key, str] = {}
    for f in report.arms.values():
        for c in f.cells:
            for q in CELL_QUANTITIES:
                notes[Key("isoflop", f.arm, c.budget, q)] = ",".join(c.flags)
        if f.frontier is not None:
            for q in ("E", "A", "g"):
                notes[Key("frontier", f.arm, None, q)] = f.frontier.form
    if report.multiplier is not None:
        m = report.multiplier
        notes[Key("multiplier", None, None, "value")] = (
            f"{m.candidate} vs {m.baseline} at loss {m.range.reference:.6g}"
            + (" (extrapolated)" if m.range.extrapolated else "")
        )
    cols: dict[str, list] = {n: [] for n, _ in TIDY_COLUMNS}
    for key, value in report.estimates.items():
        iv = report.intervals[key]
        for name, v in zip(
            ("section", "arm", "budget_flops", "quantity", "value", "ci_low", "ci_high", "ci_valid"),
            (*key, _num(value), _num(iv.low), _num(iv.high), iv.valid),
        ):
            cols[name].append(v)
        cols["note"].append(notes.get(key) or None)
    meta = {
        b"scaling.fits_schema_version": str(FITS_SCHEMA_VERSION).encode(),
        b"scaling.flops": report.data.flops.encode(),
        b"scaling.level": str(report.options.level).encode(),
    }
    return pa.Table.from_pydict(
        cols, schema=pa.schema([pa.field(n, t) for n, t in TIDY_COLUMNS], metadata=meta)
    )


def multiplier_sentence(report: FitReport) -> str | None:
    m = report.multiplier
    if m is None:
        return None
    return efficiency_sentence(
        m.candidate, m.baseline, m.value, m.interval.low, m.interval.high, m.range.reference
    )


def _g(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3g}"


WARN_VALID = 0.95  # below this share of replicates with a value, the share is printed beside the interval


def _had(key: Key) -> str:
    """What a replicate needed to compute the quantity, for `n/a (22% of resamples had a vertex)`."""
    if key.section == "isoflop":
        return "had a vertex" if key.quantity != "curvature" else "kept 3 sizes"
    if key.section == "power_law":
        return "had 2 valid budgets"
    if key.section == "multiplier":
        return "reached a common loss"
    return "gave a value"


def interval_text(
    value: float, iv: Interval | None, n_boot: int, had: str = "gave a value", sign: float = 1
) -> str:
    """`1.2e+04 [9.1e+03, 1.6e+04]`, with the honest cases spelled out: no interval when most
    resamples failed (`n/a (22% of resamples had a vertex)`), the share when some did, and
    `[every resample equal]` instead of a point-width interval. `sign` -1 prints -value."""
    if iv is None or n_boot == 0 or not math.isfinite(value):
        return _g(sign * value)
    pct = f"{100 * iv.valid:.0f}%"
    if not iv.defined:
        return f"{_g(sign * value)} n/a ({pct} of resamples {had})"
    if iv.high - iv.low <= 1e-9 * max(abs(iv.low), abs(iv.high)):
        return f"{_g(sign * value)} [every resample equal]"
    low, high = sorted((sign * iv.low, sign * iv.high))
    share = f" ({pct} of resamples)" if iv.valid < WARN_VALID else ""
    return f"{_g(sign * value)} [{_g(low)}, {_g(high)}]{share}"


def _with_ci(report: FitReport, key: Key, sign: float = 1) -> str:
    return interval_text(
        report.estimates.get(key, float("nan")),
        report.intervals.get(key),
        report.options.n_boot,
        _had(key),
        sign,
    )


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def _vertex_columns(report: FitReport, c: Cell) -> list[str]:
    """C*, N*, D*, L* of a cell; none for a flagged cell, whose vertex is an extrapolation (or a maximum)."""
    if not c.valid:
        return ["-"] * 4
    return [
        _g(c.c_star),
        *(_with_ci(report, Key("isoflop", c.arm, c.budget, q)) for q in ("n_star", "d_star", "l_star")),
    ]


def _cell_word(c: Cell) -> str:
    """`ok`, or the flags with the side of an outside vertex (which way the sizes should move)."""
    if c.valid:
        return "ok"
    side = "below" if c.parabola.vertex_x < c.ln_n_min else "above"
    return ", ".join(f"vertex {side} sizes" if flag == "vertex-outside" else flag for flag in c.flags)


def cells_grid(report: FitReport) -> list[str]:
    """Arm x budget: `ok` where the IsoFLOP curve is convex with its vertex inside the sampled sizes,
    else the flags; fitted power laws use the `ok` cells only."""
    cells = {(c.arm, c.budget): c for f in report.arms.values() for c in f.cells}
    if not cells:
        return []
    budgets = sorted({b for _, b in cells})
    rows = [
        [arm] + [_cell_word(cells[arm, b]) if (arm, b) in cells else "-" for b in budgets]
        for arm in report.arms
    ]
    n_ok = sum(c.valid for c in cells.values())
    return [
        f"cells: {n_ok} of {len(cells)} convex with the vertex inside the sampled sizes (ok); "
        "only those enter the power laws",
        *text_table(["arm", *(budget_tag(b) for b in budgets)], rows),
    ]


def arms_table(report: FitReport) -> list[str]:
    """One row per arm: the exponents of N*, D* and L* (Approach 2), Approach 3's N_opt exponent,
    and L* of every budget's valid cell, side by side."""
    budgets = sorted({c.budget for f in report.arms.values() for c in f.cells})
    rows = []
    for a, f in report.arms.items():
        cells = {c.budget: c for c in f.cells}
        row = [a, str(f.n_runs)]
        for q, sign in (("n_star", 1), ("d_star", 1), ("l_star", -1)):
            key = Key("power_law", a, None, f"{q}.exponent")
            row.append(_with_ci(report, key, sign) if key in report.estimates else "-")
        key = Key("parametric", a, None, "n_opt_exponent")
        row.append(_with_ci(report, key) if key in report.estimates else "not fitted")
        row += [_g(cells[b].l_star) if b in cells and cells[b].valid else "-" for b in budgets]
        rows.append(row)
    header = ["arm", "runs", "N* ~ C^a", "D* ~ C^b", "L* ~ C^-g", "A3: N_opt ~ C^x"]
    return text_table(header + [f"L* {budget_tag(b)}" for b in budgets], rows)


def summary(report: FitReport) -> str:
    o = report.options
    lines = [
        f"{len(report.data)} runs, {len(report.arms)} arm(s) from {report.data.source}",
        f"compute axis: {_x_label(report)}; {o.n_boot} bootstrap resamples (seed {o.seed}), "
        f"{100 * o.level:g}% percentile intervals",
        "",
        *arms_table(report),
    ]
    for f in report.arms.values():
        a = f.arm
        lines += ["", f"{a} ({f.n_runs} runs)"]
        if f.cells:
            lines += text_table(
                ["budget", "sizes N", "C*", "N*", "D*", "L*", "flags"],
                [
                    [
                        budget_tag(c.budget),
                        f"{_g(math.exp(c.ln_n_min))}-{_g(math.exp(c.ln_n_max))}",
                        *_vertex_columns(report, c),
                        ", ".join(c.flags) or "-",
                    ]
                    for c in f.cells
                ],
            )
        for name, sym in (("n_star", "N*"), ("d_star", "D*"), ("l_star", "L*")):
            law = f.power_laws[name]
            if law is not None:
                exp = _with_ci(report, Key("power_law", a, None, f"{name}.exponent"))
                lines.append(f"  {sym}(C) = {_g(law.coef)} C^({exp})")
        if f.frontier is not None and f.frontier.form == "saturating":
            fe, fa, fg = (_with_ci(report, Key("frontier", a, None, q)) for q in ("E", "A", "g"))
            lines.append(f"  L*(C) = E + A C^-g: E {fe}, A {fa}, g {fg}")
        elif f.frontier is not None:
            lines.append("  L*(C) = E + A C^-g: E not identified, the log-log line above is the frontier")
        if f.parametric is not None:
            ci = {q: _with_ci(report, Key("parametric", a, None, q)) for q in f.parametric.as_dict()}
            params = "  ".join(f"{q} {ci[q]}" for q in ("E", "A", "B", "alpha", "beta"))
            lines.append(f"  Approach 3: {params}")
            lines.append(f"  Approach 3: N_opt ~ C^{ci['n_opt_exponent']} (under C = 6ND)")
        else:
            lines.append(
                f"  Approach 3: not fitted ({f.n_runs} runs; its {N_PARAMS} parameters need "
                f"{RUNS_PER_PARAM} runs each, {MIN_RUNS})"
            )
    lines += ["", *cells_grid(report)]
    sentence = multiplier_sentence(report)
    if sentence is not None:
        m = report.multiplier
        assert m is not None  # a sentence needs a multiplier
        where = "gap between" if m.range.extrapolated else "common range"
        lines += ["", f"{sentence} (frontier losses: {where} {m.range.low:.3f}-{m.range.high:.3f})"]
    return "\n".join(lines)


def load_fits(path: Path) -> dict:
    """A fits.json written by `scaling fit`, checked for its schema version."""
    try:
        fits = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run `scaling fit` first") from None
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}): rerun `scaling fit`"
        ) from None
    if not isinstance(fits, dict) or fits.get("schema_version") != FITS_SCHEMA_VERSION or "arms" not in fits:
        raise UserError(
            f"{path} is not a fits.json of schema version {FITS_SCHEMA_VERSION}: rerun `scaling fit`"
        )
    return fits
