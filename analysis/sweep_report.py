"""report.md: a sweep's results in one page a reader can paste into a paper draft or a PR: the
compute-optimal vertices and fitted laws with their intervals (from fits.json alone), the compute
multiplier, and the figures `scaling plot` drew, embedded by relative path, each with a caption.
"""

from __future__ import annotations

import math
from pathlib import Path

from scaling import atomic
from scaling.spec import budget_tag

CAPTIONS = {
    "isoflop": "IsoFLOP curves: final validation loss against model size, one parabola per budget "
    "(Approach 2); crosses mark the vertices (N*, L*).",
    "frontiers": "Compute-optimal parameters, tokens and loss against compute, with 95% bootstrap "
    "intervals and bands.",
    "multiplier": "Compute multiplier between the two compared arms at equal validation loss.",
    "residuals": "Residuals of each arm's Approach 3 fit L(N, D) = E + A N^-alpha + B D^-beta.",
    "curves": "Validation loss of every run against its training compute, one panel per arm and "
    "budget; the grey envelope is the Approach 1 frontier.",
}


def _g(x) -> str:
    """Three significant digits, exponents as in 2.4e4 (not 2.4e+04)."""
    if x is None or not math.isfinite(x):
        return "-"
    text = f"{x:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _with_ci(value, ci) -> str:
    if value is None:
        return "-"
    lo, hi = ci if ci else (None, None)
    if lo is None or hi is None:
        return _g(value)
    return f"{_g(value)} [{_g(lo)}, {_g(hi)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _cell_word(cell: dict) -> str:
    return "ok" if cell["valid"] else ", ".join(cell["flags"]) or "flagged"


def _law(law: dict | None) -> str:
    if law is None:
        return "-"
    return f"C^{_with_ci(law['exponent'], law['ci'].get('exponent'))}"


def _frontier(f: dict | None) -> str:
    if f is None:
        return "-"
    g = _with_ci(f["g"], f["ci"].get("g"))
    if f["form"] == "saturating":
        return f"E + A C^-g: E {_with_ci(f['E'], f['ci'].get('E'))}, g {g}"
    return f"∝ C^-g: g {g} (E not identified)"


def _parametric(p: dict | None) -> str:
    if p is None:
        return "-"
    return ", ".join(
        f"{sym} {_with_ci(p[q], p['ci'].get(q))}" for q, sym in (("E", "E"), ("alpha", "α"), ("beta", "β"))
    )


def report_markdown(
    fits: dict, title: str, figures: list[tuple[str, str]], notes: list[str], source: str | None = None
) -> str:
    """The page: `figures` are (figure name, path relative to the report) of the PNGs drawn."""
    arms = fits["arms"]
    boot = fits.get("bootstrap") or {}
    level = 100 * boot.get("level", 0.95)
    x_axis = fits.get("x_column", "budget_flops")
    lines = [
        f"# {title}",
        "",
        f"{fits.get('n_runs', '?')} runs of {len(arms)} arm(s) ({', '.join(arms)}) from `{source or fits.get('source')}`; "
        f"compute axis `{x_axis}`; {boot.get('n', 0)} bootstrap resamples, {level:g}% percentile intervals "
        "in brackets. Losses in nats per token.",
        "",
        "## Compute-optimal models (IsoFLOP vertices)",
        "",
    ]
    rows = []
    for arm, a in arms.items():
        for c in a["cells"]:
            if c["valid"]:
                values = [_with_ci(c[q], c["ci"].get(q)) for q in ("n_star", "d_star", "l_star")]
            else:  # a flagged cell's vertex is an extrapolation (or a maximum): no numbers
                values = ["-"] * 3
            rows.append([arm, budget_tag(c["budget_flops"]), str(c["n_sizes"]), *values, _cell_word(c)])
        for b in a["skipped_budgets"]:
            rows.append([arm, budget_tag(b), "< 3", "-", "-", "-", "too few sizes"])
    lines += _table(["arm", "budget (FLOPs)", "sizes", "N*", "D*", "L*", "cell"], rows)
    lines += [
        "",
        "Cells marked other than `ok` (not convex, or the vertex outside the sampled sizes) are left "
        "out of the laws below.",
        "",
        "## Scaling laws",
        "",
    ]
    lines += _table(
        ["arm", "N* ∝", "D* ∝", "L*(C)", "Approach 3 (E, α, β)"],
        [
            [
                arm,
                _law(a["power_laws"]["n_star"]),
                _law(a["power_laws"]["d_star"]),
                _frontier(a["frontier"]),
                _parametric(a["parametric"]),
            ]
            for arm, a in arms.items()
        ],
    )
    m = fits.get("multiplier")
    lines += ["", "## Compute multiplier", ""]
    if m is not None and m.get("sentence"):
        where = "gap between" if m["extrapolated"] else "common range of"
        lines.append(
            f"{m['sentence']} ({where} the frontier losses {m['loss_low']:.3f}-{m['loss_high']:.3f})."
        )
    else:
        lines.append("Not computed: it needs two arms with at least two valid budgets each.")
    if figures:
        lines += ["", "## Figures", ""]
        for name, rel in figures:
            lines += [f"![{name}]({rel})", "", f"*{CAPTIONS.get(name, name)}*", ""]
    warnings = list(fits.get("warnings") or [])
    if notes or warnings:
        lines += ["", "## Notes", ""]
        lines += [f"- fit: {w}" for w in warnings] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_report(path: Path, text: str) -> Path:
    atomic.write_text(path, text)
    return path
