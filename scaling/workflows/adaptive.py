"""`sizes: auto`: each budget's sizes placed by the fits of the finished lower budgets.

    plan = placed_plan(cfg, train_tokens)     # what run_sweep submits now
    plan.pending                              # (arm, budget) still waiting for lower budgets

Budgets are placed in increasing order (scaling/plan.py). For each arm, once every planned run of
its lower budgets has ended, its next budget's window is centred on the N* predicted there:
- from 2+ lower vertices inside their sizes: the power law N* ~ C^a through them, the window
  widened to cover the 95% bootstrap interval of ln N* (up to auto_sizes.max_span);
- from 1: that vertex moved by C^0.5 (Chinchilla's exponent), widened by +-0.25 ln(C / C_1) for
  the exponent nobody measured yet;
- from none: the last window moved by C^0.5, shifted toward the side the flagged vertex lies on,
  at the widest span.
A finished cell whose vertex fell outside its sizes first gets EXTRA_SIZES more sizes beyond that
side (up to MAX_EXTENSIONS times), and the budgets above it wait for them. Everything is recomputed from the run folders
on every call, so a second call plans the same runs.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.bootstrap import percentile_interval, resample_within_groups
from analysis.fit import FitData
from analysis.isoflop import budget_groups, fit_cells, fit_power_law
from analysis.replicates import arm_replicates, counts
from scaling import paths, store
from scaling.config import AUTO, SweepConfig
from scaling.flops import params_non_embedding
from scaling.plan import Plan, PlannedRun, Window, plan_sweep
from scaling.spec import budget_tag

N_BOOT = 200  # resamples for the interval of the predicted ln N*
SEED = 0
CHINCHILLA_EXPONENT = 0.5  # N* ~ C^0.5 when one lower budget cannot measure the exponent
EXPONENT_DOUBT = 0.25  # ... give or take this much
EXTRA_SIZES = 2  # sizes added beyond the side of a vertex that fell outside its window ...
MAX_EXTENSIONS = 2  # ... at most this many times per cell


def _ended(details: list[PlannedRun], sweep: str) -> tuple[bool, list[tuple[PlannedRun, float]]]:
    """(every run has ended, the done runs with their validation loss)."""
    done = []
    for d in details:
        result = store.read_result(paths.run_dir(sweep, d.run_key))
        if result is None:
            return False, []
        if result.status == "done" and result.val_loss is not None and math.isfinite(result.val_loss):
            done.append((d, float(result.val_loss)))
    return True, done


def _fit_data(arm: str, runs: list[tuple[PlannedRun, float]]) -> FitData:
    order = sorted(runs, key=lambda r: (r[0].spec.budget_flops, r[0].params_non_embedding))
    return FitData(
        arm=np.array([arm] * len(order), dtype=object),
        budget=np.array([r[0].spec.budget_flops for r in order]),
        n=np.array([float(r[0].params_non_embedding) for r in order]),
        d=np.array([float(r[0].tokens) for r in order]),
        loss=np.array([r[1] for r in order]),
        compute=np.array([r[0].spec.budget_flops for r in order]),  # placement works on planned budgets
        run_key=np.array([r[0].run_key for r in order], dtype=object),
        flops="budget",
        source="run folders",
    )


def _extension(cfg: SweepConfig, window: Window, side: str, details: list[PlannedRun]) -> Window:
    """The window with EXTRA_SIZES targets beyond its smallest or largest size."""
    ln_n = sorted(math.log(d.params_non_embedding) for d in details)
    step = cfg.auto_sizes.span / max(1, cfg.auto_sizes.n_sizes - 1)
    edge, sign = (ln_n[0], -1) if side == "below" else (ln_n[-1], 1)
    extra = window.extra + tuple(edge + sign * step * (i + 1) for i in range(EXTRA_SIZES))
    return Window(
        window.centre,
        window.half_width,
        window.why + f"; the vertex fell {side} these sizes: {EXTRA_SIZES} sizes added {side}",
        extra,
    )


def _next_window(cfg: SweepConfig, budget: float, data: FitData, last: tuple[float, Window]) -> Window:
    """The window of `budget` from the arm's finished lower budgets."""
    a = cfg.auto_sizes
    cells, _ = fit_cells("arm", data.budget, data.n, data.d, data.compute, data.loss)
    valid = [c for c in cells if c.valid]
    if len(valid) >= 2:
        law = fit_power_law(np.array([c.budget for c in valid]), np.array([c.n_star for c in valid]))
        assert law is not None  # two valid budgets
        centre = math.log(law(budget))
        index = resample_within_groups(
            [g for _, g in budget_groups(data.budget)], N_BOOT, np.random.default_rng(SEED)
        )
        reps = arm_replicates(data, cells, None, None, counts(index, len(data)))
        iv = percentile_interval(np.log(reps.law("n_star", np.array([budget]))[:, 0]))
        spread = (iv.high - iv.low) / 2 if iv.defined else a.max_span / 2
        half = min(a.max_span / 2, max(a.span / 2, spread + a.span / 4))
        why = (
            f"N* {math.exp(centre):.3g} predicted by the power law through {len(valid)} lower vertices "
            f"(95% {math.exp(iv.low):.3g}-{math.exp(iv.high):.3g})"
            if iv.defined
            else f"N* {math.exp(centre):.3g} predicted by the power law through {len(valid)} lower vertices (interval n/a)"
        )
        return Window(centre, half, why)
    if len(valid) == 1:
        c = valid[0]
        ratio = math.log(budget / c.budget)
        centre = math.log(c.n_star) + CHINCHILLA_EXPONENT * ratio
        half = min(a.max_span / 2, a.span / 2 + EXPONENT_DOUBT * ratio)
        return Window(
            centre,
            half,
            f"N* {math.exp(centre):.3g} from the vertex at {budget_tag(c.budget)} (N* {c.n_star:.3g}) "
            f"scaled by C^{CHINCHILLA_EXPONENT:g}, widened for the unmeasured exponent",
        )
    low_budget, low_window = last
    centre = low_window.centre + CHINCHILLA_EXPONENT * math.log(budget / low_budget)
    flagged = [c for c in cells if c.budget == low_budget]
    side = ""
    if flagged and "vertex-outside" in flagged[0].flags:
        side = "below" if flagged[0].parabola.vertex_x < flagged[0].ln_n_min else "above"
        centre += (-1 if side == "below" else 1) * a.span / 2
    return Window(
        centre,
        a.max_span / 2,
        f"no lower vertex inside its sizes: the {budget_tag(low_budget)} window moved by C^{CHINCHILLA_EXPONENT:g}"
        + (f", shifted {side}" if side else "")
        + ", at the widest span",
    )


def placement_windows(cfg: SweepConfig, plan: Plan) -> dict[tuple[str, float], Window]:
    """Windows for every budget whose lower budgets have ended (and extensions of finished cells
    whose vertex fell outside), from the run folders of the sweep."""
    windows = dict(plan.windows)
    budgets = sorted(cfg.budgets)
    for arm in cfg.arms:
        runs: list[tuple[PlannedRun, float]] = []
        for i, budget in enumerate(budgets):
            window = windows.get((arm, budget))
            if window is None:
                if i == 0:
                    break
                lower = budgets[i - 1]
                windows[arm, budget] = _next_window(
                    cfg, budget, _fit_data(arm, runs), (lower, windows[arm, lower])
                )
                break  # its runs have not ended yet: the budgets above wait
            details = [d for d in plan.details if (d.spec.arm, d.spec.budget_flops) == (arm, budget)]
            ended, done = _ended(details, cfg.name)
            if not ended:
                break
            runs += done
            if len(window.extra) < EXTRA_SIZES * MAX_EXTENSIONS:
                cell_data = _fit_data(arm, done)
                cells, _ = fit_cells(
                    arm, cell_data.budget, cell_data.n, cell_data.d, cell_data.compute, cell_data.loss
                )
                if cells and "vertex-outside" in cells[0].flags:
                    c = cells[0]
                    side = "below" if c.parabola.vertex_x < c.ln_n_min else "above"
                    windows[arm, budget] = _extension(cfg, window, side, details)
                    break  # the added sizes run first
    return windows


def placed_plan(cfg: SweepConfig, train_tokens: float | None = None) -> Plan:
    """The sweep's plan with every budget placed that can be placed now (plan_sweep when the sizes
    are not `auto`)."""
    if cfg.sizes != AUTO:
        return plan_sweep(cfg, train_tokens)
    windows: dict[tuple[str, float], Window] = {}
    plan = plan_sweep(cfg, train_tokens, windows)
    for _ in range(2 * len(cfg.budgets) + 1):  # each round places at most one more window per arm
        new = placement_windows(cfg, plan)
        if new == plan.windows:
            break
        plan = plan_sweep(cfg, train_tokens, new)
    return plan


def sizes_of(plan: Plan, arm: str, budget: float) -> list[float]:
    """The non-embedding parameter counts planned for one (arm, budget)."""
    return sorted(
        {
            float(params_non_embedding(d.spec.model))
            for d in plan.details
            if (d.spec.arm, d.spec.budget_flops) == (arm, budget)
        }
    )
