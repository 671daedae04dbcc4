"""The fit of a runs table: Approach 2 and Approach 3 per arm, the compute multiplier between two
arms, and bootstrap intervals for all of them, computed from the same resamples of runs.

Pure: data in, a FitReport out; analysis/report.py turns it into fits.json, fits.parquet and
the printed summary. In a bootstrap replicate every cell is refitted and re-flagged, only the
replicate's valid cells enter its power laws, the loss frontier keeps the form (saturating or
power) chosen on the full data, and Approach 3 starts from the best grid point and from the
full-data optimum; all replicates of an arm are refitted together (analysis/replicates.py).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from analysis.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    Interval,
    percentile_band,
    percentile_interval,
    resample_within_groups,
)
from analysis.isoflop import (
    MIN_SIZES,
    Cell,
    LossFrontier,
    PowerLaw,
    budget_groups,
    fit_cells,
    fit_loss_frontier,
    fit_power_law,
)
from analysis.multiplier import DEFAULT_BASELINE, DEFAULT_CANDIDATE, LossRange, common_loss_range, multiplier
from analysis.parametric import MIN_RUNS, N_PARAMS, RUNS_PER_PARAM, ParametricLaw, fit_parametric
from analysis.replicates import CELL_QUANTITIES, LAWS, ReplicateFits, arm_replicates, counts
from analysis.table import FitData
from scaling.errors import UserError
from scaling.host import cpu_count
from scaling.spec import budget_tag

FRONTIER_LAWS = LAWS  # power laws of the vertices against compute
BAND_POINTS = 60
BAND_MARGIN = 1.5  # bands extend this factor beyond the fitted compute range


class Key(NamedTuple):
    """Address of one reported number: section, arm, budget (None above the cell level), quantity."""

    section: str  # isoflop | power_law | frontier | parametric | multiplier
    arm: str | None
    budget: float | None
    quantity: str


@dataclass(frozen=True)
class FitOptions:
    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL
    candidate: str = DEFAULT_CANDIDATE
    baseline: str = DEFAULT_BASELINE
    named_arms: frozenset[str] = frozenset()  # arms the user asked for: no budget left is an error
    workers: int | None = None  # bootstrap processes; None: one per core for large fits


@dataclass
class ArmFit:
    arm: str
    n_runs: int
    cells: list[Cell]
    skipped_budgets: list[float]  # fewer than MIN_SIZES distinct sizes
    power_laws: dict[str, PowerLaw | None]
    frontier: LossFrontier | None
    parametric: ParametricLaw | None

    @property
    def valid_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.valid]


@dataclass
class Bands:
    """Pointwise bootstrap bands of an arm's fitted frontiers on a compute grid."""

    compute: np.ndarray
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]


@dataclass
class MultiplierFit:
    candidate: str
    baseline: str
    range: LossRange
    value: float
    interval: Interval
    losses: np.ndarray
    curve: np.ndarray
    curve_low: np.ndarray
    curve_high: np.ndarray


@dataclass
class FitReport:
    data: FitData
    options: FitOptions
    arms: dict[str, ArmFit]
    estimates: dict[Key, float]
    intervals: dict[Key, Interval]
    bands: dict[str, Bands]
    multiplier: MultiplierFit | None
    warnings: list[str] = field(default_factory=list)
    replicates: dict[str, ReplicateFits] = field(default_factory=dict)  # arm -> its bootstrap replicates


def identifies_parametric(data: FitData) -> bool:
    """Approach 3's five parameters need RUNS_PER_PARAM runs each, 2 sizes and 2 token counts."""
    return len(data) >= MIN_RUNS and len(np.unique(data.n)) >= 2 and len(np.unique(data.d)) >= 2


def fit_arm(data: FitData, arm: str) -> ArmFit:
    """Approach 2 and 3 on one arm's runs (all rows of `data` belong to `arm`)."""
    cells, skipped = fit_cells(arm, data.budget, data.n, data.d, data.compute, data.loss)
    valid = [c for c in cells if c.valid]
    c_star = np.array([c.c_star for c in valid])
    laws = {q: fit_power_law(c_star, np.array([getattr(c, q) for c in valid])) for q in FRONTIER_LAWS}
    frontier = fit_loss_frontier(c_star, np.array([c.l_star for c in valid]))
    parametric = fit_parametric(data.n, data.d, data.loss) if identifies_parametric(data) else None
    return ArmFit(
        arm=arm,
        n_runs=len(data),
        cells=cells,
        skipped_budgets=skipped,
        power_laws=laws,
        frontier=frontier,
        parametric=parametric,
    )


def quantities(fit: ArmFit) -> dict[Key, float]:
    """Every number reported for an arm, flat."""
    out: dict[Key, float] = {}
    for c in fit.cells:
        for q in CELL_QUANTITIES:
            out[Key("isoflop", fit.arm, c.budget, q)] = getattr(c, q)
    for name, law in fit.power_laws.items():
        if law is not None:
            out[Key("power_law", fit.arm, None, f"{name}.coef")] = law.coef
            out[Key("power_law", fit.arm, None, f"{name}.exponent")] = law.exponent
    if fit.frontier is not None:
        for q in ("E", "A", "g"):
            out[Key("frontier", fit.arm, None, q)] = getattr(fit.frontier, q)
    if fit.parametric is not None:
        for q, v in fit.parametric.as_dict().items():
            out[Key("parametric", fit.arm, None, q)] = v
    return out


def _band_curves(fit: ArmFit, compute: np.ndarray) -> dict[str, np.ndarray]:
    nan = np.full(len(compute), np.nan)
    curves = {
        q: (law(compute) if (law := fit.power_laws[q]) is not None else nan) for q in ("n_star", "d_star")
    }
    curves["l_star"] = fit.frontier.loss(compute) if fit.frontier is not None else nan
    return curves


def _arm_warnings(fit: ArmFit, named: bool) -> list[str]:
    out = [
        f"{fit.arm} {budget_tag(b)}: fewer than {MIN_SIZES} sizes, budget skipped"
        for b in fit.skipped_budgets
    ]
    out += [
        f"{fit.arm} {budget_tag(c.budget)}: {', '.join(c.flags)}; left out of the power laws"
        for c in fit.cells
        if c.flags
    ]
    out += [
        f"{fit.arm} {budget_tag(c.budget)}: the parabola goes through all {c.n_runs} runs, so resampling "
        "cannot move it and its interval is degenerate; add sizes or seeds"
        for c in fit.cells
        if c.n_runs == MIN_SIZES and not c.flags
    ]
    if not fit.cells:
        msg = f"arm {fit.arm} has no budget with at least {MIN_SIZES} sizes"
        if named:
            raise UserError(f"{msg}: train more sizes or leave it out of --arms / --candidate / --baseline")
        out.append(msg + "; no IsoFLOP fit")
    elif len(fit.valid_cells) < 2:
        out.append(f"arm {fit.arm}: {len(fit.valid_cells)} valid budget(s); power laws need 2")
    if fit.parametric is None:
        out.append(
            f"arm {fit.arm}: Approach 3 not fitted: {fit.n_runs} runs cannot identify its {N_PARAMS} "
            f"parameters (it needs {RUNS_PER_PARAM} runs per parameter, {MIN_RUNS}, with 2 sizes and 2 token counts)"
        )
    return out


@dataclass
class _BootPlan:
    """What every bootstrap replicate needs (picklable: replicates may run in worker processes)."""

    per_arm: dict[str, FitData]
    fits: dict[str, ArmFit]
    resamples: dict[str, np.ndarray]  # arm -> (n_boot, runs) indices, drawn up front from the seed


def _arm_span(plan: _BootPlan, arm: str, lo: int, hi: int) -> ReplicateFits:
    """Replicates lo..hi-1 of one arm, refitted together (analysis/replicates.py)."""
    f, data = plan.fits[arm], plan.per_arm[arm]
    weights = counts(plan.resamples[arm][lo:hi], len(data))
    return arm_replicates(data, f.cells, f.frontier, f.parametric, weights)


def replicate_quantities(arm: str, rep: ReplicateFits) -> dict[Key, np.ndarray]:
    """`quantities` of every replicate: Key -> (R,) values."""
    out: dict[Key, np.ndarray] = {}
    for budget, values in rep.cells.items():
        for q in CELL_QUANTITIES:
            out[Key("isoflop", arm, budget, q)] = values[q]
    for name, (coef, exponent) in rep.laws.items():
        out[Key("power_law", arm, None, f"{name}.coef")] = coef
        out[Key("power_law", arm, None, f"{name}.exponent")] = exponent
    if rep.frontier is not None:
        for q, v in zip(("E", "A", "g"), rep.frontier):
            out[Key("frontier", arm, None, q)] = v
    if rep.parametric is not None:
        for q, v in rep.parametric.items():
            out[Key("parametric", arm, None, q)] = v
    return out


def _spans(n_boot: int, parts: int) -> list[tuple[int, int]]:
    edges = np.unique(np.linspace(0, n_boot, max(1, min(parts, n_boot)) + 1).astype(int))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _bootstrap(plan: _BootPlan, n_boot: int, workers: int, progress) -> dict[str, ReplicateFits]:
    """Every arm's replicates: one batch per arm, split in `workers` spans run in worker processes
    when workers > 1 (a batch's cost is mostly its slowest replicates, so spans stay large).
    Spans are concatenated in order: the result does not depend on the split."""
    arms = list(plan.fits)
    # the costly arms (Approach 3) first, so that the last tasks are short
    arms.sort(key=lambda a: plan.fits[a].parametric is None)
    tasks = [(a, lo, hi) for a in arms for lo, hi in _spans(n_boot, workers)]
    total, done = n_boot * len(arms), 0
    parts: dict[str, list[ReplicateFits]] = {a: [] for a in arms}
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_arm_span, plan, *t) for t in tasks]
            for (a, lo, hi), fut in zip(tasks, futures):
                parts[a].append(fut.result())
                done += hi - lo
                if progress is not None:
                    progress(done, total)
    else:
        for a, lo, hi in tasks:
            parts[a].append(_arm_span(plan, a, lo, hi))
            done += hi - lo
            if progress is not None:
                progress(done, total)
    return {a: ReplicateFits.concat(parts[a]) for a in plan.fits if parts[a]}


PARALLEL_MIN_WORK = 20_000  # replicates x runs below which worker processes cost more than they save


def fit_runs(data: FitData, options: FitOptions = FitOptions(), progress=None) -> FitReport:
    """Point estimates, bootstrap intervals, bands and the multiplier. `progress(done, total)` is
    called as the bootstrap goes (units: replicates of one arm)."""
    arms = data.arms
    for name in options.named_arms:
        if name not in arms:
            raise UserError(f"arm {name!r} is not in the data; arms present: {', '.join(arms)}")
    per_arm = {a: data.of_arm(a) for a in arms}
    fits = {a: fit_arm(per_arm[a], a) for a in arms}
    warnings = [w for a in arms for w in _arm_warnings(fits[a], a in options.named_arms)]
    if not any(f.cells for f in fits.values()):
        raise UserError(f"no arm has a budget with at least {MIN_SIZES} distinct sizes: nothing to fit")

    estimates = {k: v for f in fits.values() for k, v in quantities(f).items()}
    rng = np.random.default_rng(options.seed)
    plan = _BootPlan(
        per_arm=per_arm,
        fits=fits,
        resamples={
            a: resample_within_groups([g for _, g in budget_groups(per_arm[a].budget)], options.n_boot, rng)
            for a in arms
        },
    )
    workers = options.workers
    if workers is None:
        workers = cpu_count() if options.n_boot * len(data) >= PARALLEL_MIN_WORK else 1
    reps = _bootstrap(plan, options.n_boot, workers, progress) if options.n_boot else {}

    samples: dict[Key, np.ndarray] = {}
    for a, rep in reps.items():
        samples.update(replicate_quantities(a, rep))
    nan = np.full(options.n_boot, np.nan)
    intervals = {k: percentile_interval(samples.get(k, nan), options.level) for k in estimates}
    bands = {}
    for a, f in fits.items():
        if f.power_laws["n_star"] is None:
            continue
        c = np.array([cell.c_star for cell in f.valid_cells])
        grid = np.geomspace(c.min() / BAND_MARGIN, c.max() * BAND_MARGIN, BAND_POINTS)
        lows, highs = {}, {}
        for q in FRONTIER_LAWS:
            curves = np.full((options.n_boot, BAND_POINTS), np.nan)
            if a in reps:
                if q != "l_star":
                    curves = reps[a].law(q, grid)
                elif reps[a].frontier is not None:
                    curves = reps[a].frontier_loss(grid)
            lows[q], highs[q] = percentile_band(curves, options.level)
        bands[a] = Bands(compute=grid, low=lows, high=highs)
    report = FitReport(
        data=data,
        options=options,
        arms=fits,
        estimates=estimates,
        intervals=intervals,
        bands=bands,
        multiplier=None,
        warnings=warnings,
        replicates=reps,
    )
    if _multiplier_possible(fits, options.candidate, options.baseline, warnings):
        mult = pair_multiplier(report, options.candidate, options.baseline)
        report.multiplier = mult
        estimates[Key("multiplier", None, None, "value")] = mult.value
        intervals[Key("multiplier", None, None, "value")] = mult.interval
    return report


def pair_multiplier(report: FitReport, cand: str, base: str) -> MultiplierFit:
    """The compute multiplier of `cand` over `base` (two arms of the report with frontiers) over
    their common range of frontier losses, with bootstrap intervals from the same replicates."""
    fits = report.arms
    fc, fb = fits[cand].frontier, fits[base].frontier
    assert fc is not None and fb is not None, "pair_multiplier needs two arms with loss frontiers"
    span = _common_range(fits, cand, base)
    losses, ref = span.grid(), span.reference
    n_boot = report.options.n_boot
    curve_samples = np.full((n_boot, len(losses)), np.nan)
    ref_samples = np.full(n_boot, np.nan)
    rc, rb = report.replicates.get(cand), report.replicates.get(base)
    if rc is not None and rb is not None and rc.frontier is not None and rb.frontier is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            curve_samples = rb.frontier_compute(losses) / rc.frontier_compute(losses)
            ref_samples = (rb.frontier_compute(np.array([ref])) / rc.frontier_compute(np.array([ref])))[:, 0]
    low, high = percentile_band(curve_samples, report.options.level)
    return MultiplierFit(
        candidate=cand,
        baseline=base,
        range=span,
        value=float(multiplier(fc, fb, ref)),
        interval=percentile_interval(ref_samples, report.options.level),
        losses=losses,
        curve=multiplier(fc, fb, losses),
        curve_low=low,
        curve_high=high,
    )


def _common_range(fits: dict[str, ArmFit], cand: str, base: str) -> LossRange:
    return common_loss_range(
        np.array([c.l_star for c in fits[cand].valid_cells]),
        np.array([c.l_star for c in fits[base].valid_cells]),
    )


def _arms_are(arms: list[str], singular: str, plural: str) -> str:
    """'arm x has' or 'arms x and y have'."""
    return f"arm {arms[0]} {singular}" if len(arms) == 1 else f"arms {' and '.join(arms)} {plural}"


def _multiplier_possible(fits: dict[str, ArmFit], cand: str, base: str, warnings: list[str]) -> bool:
    """Whether the pair has a multiplier; if not, a warning says why."""
    if cand == base:
        raise UserError(f"--candidate and --baseline are both {cand!r}: choose two different arms")
    missing = [a for a in (cand, base) if a not in fits]
    if missing:
        warnings.append(
            f"no compute multiplier: {_arms_are(missing, 'is', 'are')} not in the data "
            "(choose the pair with --candidate/--baseline)"
        )
        return False
    lacking = [a for a in (cand, base) if fits[a].frontier is None]
    if lacking:
        warnings.append(
            f"no compute multiplier: {_arms_are(lacking, 'has', 'have')} fewer than 2 valid budgets"
        )
        return False
    span = _common_range(fits, cand, base)
    if span.extrapolated:
        warnings.append(
            f"{cand} and {base} frontiers cover no common loss: the multiplier is extrapolated "
            f"between losses {span.low:.3f} and {span.high:.3f}"
        )
    return True
