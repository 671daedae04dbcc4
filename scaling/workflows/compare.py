"""The compute multiplier between any two arms, in one sweep or across sweeps (`scaling compare` is
its adapter).

    sides = parse_side("tiny-lr=0.001:mdlm-ce", None), parse_side("tiny-lr=0.003:mdlm-ce", None)
    result = compare_sides([(sides[0], sides[1])], CompareRequest(n_boot=1000))
    print(result.text)

A side is `ARM` (of the default source: SWEEP or --runs), `SWEEP:ARM` or `FILE.parquet:ARM`. The
tables are read with the same compute axis, fitted together (arms of different sources are named
`source:arm`), and each pair's multiplier is computed over the pair's common loss range with
bootstrap intervals; compare.json and compare.{png,pdf} are written into the output folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analysis.compare import Comparison, Side, combine, compare, comparison_figure
from analysis.fit import FitOptions, fit_runs
from analysis.report import text_table
from analysis.table import load_runs
from scaling import atomic, paths
from scaling.errors import UserError
from scaling.workflows.fit import check_bootstrap

CURVE_ROWS = 7  # loss levels printed per pair


def _table_path(source: str) -> Path:
    path = Path(source)
    if path.suffix == ".parquet":
        return path
    return paths.sweep_dir(source) / "runs.parquet"


def parse_side(text: str, default: str | None) -> Side:
    """`ARM`, `SWEEP:ARM` or `FILE.parquet:ARM` (sweep names never hold ':')."""
    source, sep, arm = text.rpartition(":")
    if not sep:
        if default is None:
            raise UserError(
                f"{text}: name its source (SWEEP:{text} or FILE.parquet:{text}), or give SWEEP or --runs"
            )
        source, arm = default, text
    if not arm:
        raise UserError(f"{text}: give an arm after the ':' (e.g. {text}mdlm-ce)")
    return Side(source, arm, arm)


@dataclass(frozen=True)
class CompareRequest:
    n_boot: int = 1000
    seed: int = 0
    flops: str | None = None
    x: str = "achieved"
    out: Path | None = None  # compare.json and the figure; None: not written

    def __post_init__(self) -> None:
        check_bootstrap(self.n_boot)


@dataclass
class CompareResult:
    comparisons: list[Comparison]
    text: str
    record: dict
    written: list[Path]
    warnings: list[str]


def _label(sides: list[Side]) -> list[Side]:
    """Arms of one source keep their names; with several sources every arm is `source:arm`."""
    several = len({s.source for s in sides}) > 1
    return [
        Side(
            s.source,
            s.arm,
            f"{Path(s.source).stem if s.source.endswith('.parquet') else s.source}:{s.arm}"
            if several
            else s.arm,
        )
        for s in sides
    ]


def compare_sides(
    pairs: list[tuple[Side, Side]],
    request: CompareRequest,
    progress: Callable[[int, int], None] | None = None,
) -> CompareResult:
    flat = _label([s for pair in pairs for s in pair])
    pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(pairs))]
    for cand, base in pairs:
        if cand.label == base.label:
            raise UserError(f"{cand.label} is compared with itself: choose two different arms or sources")
    warnings: list[str] = []
    tables = {}
    for source in dict.fromkeys(s.source for s in flat):
        data, w = load_runs(_table_path(source), flops=request.flops, x=request.x)
        tables[source] = data
        warnings += [f"{source}: {x}" for x in w]
    data = combine(tables, flat)
    labels = [s.label for s in dict.fromkeys(flat)]
    first = pairs[0]
    options = FitOptions(
        n_boot=request.n_boot,
        seed=request.seed,
        candidate=first[0].label,
        baseline=first[1].label,
        named_arms=frozenset(labels),
    )
    report = fit_runs(data, options, progress=progress)
    warnings += [w for w in report.warnings if "compute multiplier" not in w]
    comparisons = compare(report, pairs)
    lines = [
        f"compute multipliers ({request.n_boot} bootstrap resamples, {100 * options.level:g}% intervals; "
        f"compute axis: {data.flops})"
    ]
    record: dict = {
        "flops": data.flops,
        "bootstrap": {"n": request.n_boot, "seed": request.seed},
        "pairs": [],
    }
    for c in comparisons:
        lines += ["", c.sentence]
        entry: dict = {"candidate": c.candidate.label, "baseline": c.baseline.label, "sentence": c.sentence}
        m = c.multiplier
        if m is not None:
            where = "gap between" if m.range.extrapolated else "common range"
            lines.append(f"  frontier losses: {where} {m.range.low:.3f}-{m.range.high:.3f}")
            step = max(1, len(m.losses) // (CURVE_ROWS - 1))
            idx = sorted(set(range(0, len(m.losses), step)) | {len(m.losses) - 1})
            lines += text_table(
                ["loss", "multiplier", "95% band"],
                [
                    [
                        f"{m.losses[i]:.3f}",
                        f"{m.curve[i]:.3g}",
                        f"[{m.curve_low[i]:.3g}, {m.curve_high[i]:.3g}]",
                    ]
                    for i in idx
                ],
            )
            entry.update(
                value=_num(m.value),
                ci=[_num(m.interval.low), _num(m.interval.high)],
                loss_ref=m.range.reference,
                extrapolated=m.range.extrapolated,
                curve={
                    "loss": [_num(x) for x in m.losses],
                    "value": [_num(x) for x in m.curve],
                    "low": [_num(x) for x in m.curve_low],
                    "high": [_num(x) for x in m.curve_high],
                },
            )
        record["pairs"].append(entry)
    written: list[Path] = []
    if request.out is not None:
        text = json.dumps(record, indent=1, allow_nan=False) + "\n"
        written = comparison_figure(comparisons, request.out)
        atomic.write_text(request.out / "compare.json", text)
        written.append(request.out / "compare.json")
        lines += ["", f"wrote {', '.join(str(p) for p in written)}"]
    return CompareResult(comparisons, "\n".join(lines), record, written, warnings)


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
