"""The fit of a runs table: Approach 2 and Approach 3 per arm, the compute multiplier between two
arms, and bootstrap intervals for all of them, computed from the same resamples of runs.

Pure: data in, a FitReport out; analysis/report.py turns it into fits.json, fits.parquet and
the printed summary. In a bootstrap replicate every cell is refitted and re-flagged, only the
replicate's valid cells enter its power laws, the loss frontier keeps the form (saturating or
power) chosen on the full data, and Approach 3 starts from the best grid point and from the
full-data optimum.
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
from analysis.parametric import MIN_RUNS, ParametricLaw, fit_parametric
from analysis.table import FitData
from scaling.errors import UserError
from scaling.host import cpu_count
from scaling.spec import budget_tag

CELL_QUANTITIES = ("n_star", "d_star", "l_star", "c_star", "curvature")
FRONTIER_LAWS = ("n_star", "d_star", "l_star")  # power laws of the vertices against compute
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


def fit_arm(
    data: FitData,
    arm: str,
    frontier_form: str | None = None,
    frontier_start: LossFrontier | None = None,
    parametric_starts=(),
    n_starts: int | None = None,
) -> ArmFit:
    """Approach 2 and 3 on one arm's runs (all rows of `data` belong to `arm`)."""
    cells, skipped = fit_cells(arm, data.budget, data.n, data.d, data.compute, data.loss)
    valid = [c for c in cells if c.valid]
    c_star = np.array([c.c_star for c in valid])
    laws = {q: fit_power_law(c_star, np.array([getattr(c, q) for c in valid])) for q in FRONTIER_LAWS}
    frontier = fit_loss_frontier(c_star, np.array([c.l_star for c in valid]), frontier_form, frontier_start)
    parametric = None
    if len(data) >= MIN_RUNS and len(np.unique(data.n)) >= 2 and len(np.unique(data.d)) >= 2:
        kwargs = {} if n_starts is None else {"n_starts": n_starts}
        parametric = fit_parametric(data.n, data.d, data.loss, extra_starts=parametric_starts, **kwargs)
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
            f"arm {fit.arm}: {fit.n_runs} runs; Approach 3 needs {MIN_RUNS} with 2 sizes and 2 token counts"
        )
    return out


@dataclass
class _BootPlan:
    """What every bootstrap replicate needs (picklable: replicates may run in worker processes)."""

    per_arm: dict[str, FitData]
    fits: dict[str, ArmFit]
    resamples: dict[str, np.ndarray]  # arm -> (n_boot, runs) indices, drawn up front from the seed
    key_index: dict[Key, int]
    grids: dict[str, np.ndarray]  # arm -> compute grid of its bands
    mult_setup: tuple | None


@dataclass
class _BootSamples:
    values: np.ndarray  # (replicates, keys)
    bands: dict[str, dict[str, np.ndarray]]  # arm -> quantity -> (replicates, BAND_POINTS)
    mult_curve: np.ndarray  # (replicates, curve points)
    mult_ref: np.ndarray  # (replicates,)


def _replicates(plan: _BootPlan, lo: int, hi: int) -> _BootSamples:
    """Refits replicates lo..hi-1; the result does not depend on how the range is split."""
    n = hi - lo
    out = _BootSamples(
        values=np.full((n, len(plan.key_index)), np.nan),
        bands={a: {q: np.full((n, BAND_POINTS), np.nan) for q in FRONTIER_LAWS} for a in plan.grids},
        mult_curve=np.full((n, len(plan.mult_setup[2]) if plan.mult_setup else 0), np.nan),
        mult_ref=np.full(n, np.nan),
    )
    for i, r in enumerate(range(lo, hi)):
        rep = {}
        for a, f in plan.fits.items():
            rep[a] = fit_arm(
                plan.per_arm[a].take(plan.resamples[a][r]),
                a,
                frontier_form=f.frontier.form if f.frontier else None,
                frontier_start=f.frontier,
                parametric_starts=[f.parametric.theta] if f.parametric else (),
                n_starts=1,
            )
            for k, v in quantities(rep[a]).items():
                if k in plan.key_index:
                    out.values[i, plan.key_index[k]] = v
            if a in plan.grids:
                for q, curve in _band_curves(rep[a], plan.grids[a]).items():
                    out.bands[a][q][i] = curve
        if plan.mult_setup:
            cand, base, losses, ref = plan.mult_setup
            fc, fb = rep[cand].frontier, rep[base].frontier
            if fc is not None and fb is not None:
                out.mult_curve[i] = multiplier(fc, fb, losses)
                out.mult_ref[i] = multiplier(fc, fb, ref)
    return out


def _bootstrap(plan: _BootPlan, n_boot: int, workers: int, progress) -> _BootSamples:
    """Replicates in chunks, in worker processes when workers > 1; chunks are concatenated in order."""
    chunks = 4 * workers if workers > 1 else 20  # several per worker balance the load; 20 for progress
    edges = np.unique(np.linspace(0, n_boot, min(chunks, max(n_boot, 1)) + 1).astype(int))
    spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    parts: list[_BootSamples] = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for part, (_, hi) in zip(pool.map(_replicates, [plan] * len(spans), *zip(*spans)), spans):
                parts.append(part)
                if progress is not None:
                    progress(hi, n_boot)
    else:
        for lo, hi in spans:
            parts.append(_replicates(plan, lo, hi))
            if progress is not None:
                progress(hi, n_boot)
    if not parts:
        return _replicates(plan, 0, 0)
    return _BootSamples(
        values=np.concatenate([p.values for p in parts]),
        bands={
            a: {q: np.concatenate([p.bands[a][q] for p in parts]) for q in FRONTIER_LAWS} for a in plan.grids
        },
        mult_curve=np.concatenate([p.mult_curve for p in parts]),
        mult_ref=np.concatenate([p.mult_ref for p in parts]),
    )


PARALLEL_MIN_WORK = 20_000  # replicates x runs below which worker processes cost more than they save


def fit_runs(data: FitData, options: FitOptions = FitOptions(), progress=None) -> FitReport:
    """Point estimates, bootstrap intervals, bands and the multiplier. `progress(done, n_boot)` if given."""
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
    grids = {}
    for a, f in fits.items():
        if f.power_laws["n_star"] is not None:
            c = np.array([cell.c_star for cell in f.valid_cells])
            grids[a] = np.geomspace(c.min() / BAND_MARGIN, c.max() * BAND_MARGIN, BAND_POINTS)
    rng = np.random.default_rng(options.seed)
    plan = _BootPlan(
        per_arm=per_arm,
        fits=fits,
        resamples={
            a: resample_within_groups([g for _, g in budget_groups(per_arm[a].budget)], options.n_boot, rng)
            for a in arms
        },
        key_index={k: i for i, k in enumerate(estimates)},
        grids=grids,
        mult_setup=_multiplier_setup(fits, options, warnings),
    )
    workers = options.workers
    if workers is None:
        workers = cpu_count() if options.n_boot * len(data) >= PARALLEL_MIN_WORK else 1
    boot = _bootstrap(plan, options.n_boot, workers, progress)

    intervals = {k: percentile_interval(boot.values[:, i], options.level) for k, i in plan.key_index.items()}
    bands = {}
    for a, grid in grids.items():
        lows, highs = {}, {}
        for q in FRONTIER_LAWS:
            lows[q], highs[q] = percentile_band(boot.bands[a][q], options.level)
        bands[a] = Bands(compute=grid, low=lows, high=highs)
    mult = None
    if plan.mult_setup:
        cand, base, losses, ref = plan.mult_setup
        fc, fb = fits[cand].frontier, fits[base].frontier
        assert fc is not None and fb is not None  # mult_setup is planned only for arms with frontiers
        low, high = percentile_band(boot.mult_curve, options.level)
        mult = MultiplierFit(
            candidate=cand,
            baseline=base,
            range=_common_range(fits, cand, base),
            value=float(multiplier(fc, fb, ref)),
            interval=percentile_interval(boot.mult_ref, options.level),
            losses=losses,
            curve=multiplier(fc, fb, losses),
            curve_low=low,
            curve_high=high,
        )
        estimates[Key("multiplier", None, None, "value")] = mult.value
        intervals[Key("multiplier", None, None, "value")] = mult.interval
    return FitReport(
        data=data,
        options=options,
        arms=fits,
        estimates=estimates,
        intervals=intervals,
        bands=bands,
        multiplier=mult,
        warnings=warnings,
    )


def _common_range(fits: dict[str, ArmFit], cand: str, base: str) -> LossRange:
    return common_loss_range(
        np.array([c.l_star for c in fits[cand].valid_cells]),
        np.array([c.l_star for c in fits[base].valid_cells]),
    )


def _arms_are(arms: list[str], singular: str, plural: str) -> str:
    """'arm x has' or 'arms x and y have'."""
    return f"arm {arms[0]} {singular}" if len(arms) == 1 else f"arms {' and '.join(arms)} {plural}"


def _multiplier_setup(fits: dict[str, ArmFit], options: FitOptions, warnings: list[str]):
    """(candidate, baseline, loss grid, reference loss), or None with a warning saying why."""
    cand, base = options.candidate, options.baseline
    if cand == base:
        raise UserError(f"--candidate and --baseline are both {cand!r}: choose two different arms")
    missing = [a for a in (cand, base) if a not in fits]
    if missing:
        warnings.append(
            f"no compute multiplier: {_arms_are(missing, 'is', 'are')} not in the data "
            "(choose the pair with --candidate/--baseline)"
        )
        return None
    lacking = [a for a in (cand, base) if fits[a].frontier is None]
    if lacking:
        warnings.append(
            f"no compute multiplier: {_arms_are(lacking, 'has', 'have')} fewer than 2 valid budgets"
        )
        return None
    span = _common_range(fits, cand, base)
    if span.extrapolated:
        warnings.append(
            f"{cand} and {base} frontiers cover no common loss: the multiplier is extrapolated "
            f"between losses {span.low:.3f} and {span.high:.3f}"
        )
    return cand, base, span.grid(), span.reference
