"""`sizes: auto` against hand-placed windows, on a surrogate of the CPU profiles; prints figures.

  .venv/bin/python bench/auto_sizes.py [--trials 10] [--sweeps tiny cpu]

No training: each arm's loss is the Approach 3 law fitted to that arm's 180 runs of the cpu profile
(docs/results/cpu/runs.parquet), times exp(sigma z) with sigma the law's own residual RMS in ln L
(run-to-run noise of the same size as the real runs'). For each sweep the hand-placed config
(sweeps/<name>.yaml as committed before `sizes: auto`, `--hand` overrides) and `sizes: auto` are
planned, their runs answered by the surrogate (through run folders, as the trainer leaves them, so
scaling/workflows/adaptive.py reads what a real sweep gives it), and every (arm, budget) cell is
fitted: the grid counts the cells convex with the vertex inside the sampled sizes, per trial.
A surrogate is not the real sweep: the real check is a trained sweep (the closing note of issue 16).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.isoflop import fit_cells  # noqa: E402
from analysis.parametric import fit_parametric  # noqa: E402
from analysis.synthetic import Law, write_run_folder  # noqa: E402
from analysis.table import load_runs  # noqa: E402
from scaling import paths, store  # noqa: E402
from scaling.config import load_sweep  # noqa: E402
from scaling.plan import Plan, plan_sweep  # noqa: E402
from scaling.workflows.adaptive import placed_plan  # noqa: E402

ONE_LAYER = ["d8-l1", "d12-l1", "d16-l1", "d24-l1", "d32-l1", "d48-l1", "d64-l1"]
TWO_LAYERS = ["d12-l2", "d16-l2", "d24-l2", "d32-l2", "d48-l2", "d64-l2", "d96-l2", "d128-l2"]
# the hand-placed windows of sweeps/tiny.yaml and sweeps/cpu.yaml before `sizes: auto`
HAND = {
    "tiny": [
        "sizes=[{budget: 1e11, models: [d8-l1, d12-l1, d16-l1, d24-l1, d32-l1]}, "
        "{budget: 2e11, models: [d8-l1, d12-l1, d16-l1, d24-l1, d48-l1]}, "
        "{budget: 4e11, models: [d12-l1, d16-l1, d24-l1, d32-l1, d48-l1]}]",
        "++arm_sizes.ar=[{models: [d12-l2, d16-l2, d24-l2, d32-l2, d48-l2]}, "
        "{budget: 4e11, models: [d16-l2, d24-l2, d32-l2, d48-l2, d64-l2]}]",
    ],
    "cpu": [
        "sizes=[{budget: 2e11, models: [d8-l1, d12-l1, d16-l1, d24-l1, d32-l1, d48-l1]}, "
        "{budget: 5e11, models: [d8-l1, d12-l1, d16-l1, d24-l1, d32-l1, d48-l1]}, "
        "{budget: 1.25e12, models: [d12-l1, d16-l1, d24-l1, d32-l1, d48-l1, d64-l1]}]",
        "++arm_sizes.ar=[{budget: 2e11, models: [d12-l2, d16-l2, d24-l2, d32-l2, d48-l2, d64-l2]}, "
        "{budget: 5e11, models: [d16-l2, d24-l2, d32-l2, d48-l2, d64-l2, d96-l2]}, "
        "{budget: 1.25e12, models: [d24-l2, d32-l2, d48-l2, d64-l2, d96-l2, d128-l2]}]",
    ],
}


# what sweeps/<name>.yaml says with `sizes: auto` (applied when the file is still hand-placed)
AUTO = {
    "tiny": [
        "sizes=auto",
        "~arm_sizes",
        "auto_sizes.models=[d8-l1, d12-l1, d16-l1, d24-l1, d32-l1, d48-l1]",
        "auto_sizes.arm_models.ar=[d12-l2, d16-l2, d24-l2, d32-l2, d48-l2, d64-l2]",
    ],
    "cpu": [
        "sizes=auto",
        "~arm_sizes",
        "auto_sizes.n_sizes=6",
        "auto_sizes.models=[d8-l1, d12-l1, d16-l1, d24-l1, d32-l1, d48-l1, d64-l1]",
        "auto_sizes.arm_models.ar=[d12-l2, d16-l2, d24-l2, d32-l2, d48-l2, d64-l2, d96-l2, d128-l2]",
    ],
}


@dataclass(frozen=True)
class NoisyLaw(Law):
    """A law whose every (N, D) point carries fixed multiplicative noise, seeded by the point."""

    sigma: float = 0.0
    trial: int = 0

    def loss(self, n, d):
        clean = super().loss(n, d)
        key = hashlib.sha256(f"{self.trial} {float(n):.6g} {float(d):.6g}".encode()).digest()
        z = np.random.default_rng(int.from_bytes(key[:8], "little")).standard_normal()
        return clean * np.exp(self.sigma * z)


def surrogate_laws() -> dict[str, tuple[Law, float]]:
    data, _ = load_runs(ROOT / "docs" / "results" / "cpu" / "runs.parquet")
    out = {}
    for arm in data.arms:
        d = data.of_arm(arm)
        law = fit_parametric(d.n, d.d, d.loss)
        sigma = float(np.sqrt(np.mean((np.log(d.loss) - np.log(law.predict(d.n, d.d))) ** 2)))
        out[arm] = (Law(law.E, law.A, law.B, law.alpha, law.beta), sigma)
    return out


def answer(plan: Plan, laws: dict[str, tuple[Law, float]], trial: int, noise_scale: float = 1.0) -> int:
    """Writes a finished run folder for every planned run that has none; returns how many."""
    written = 0
    for d in plan.details:
        folder = paths.run_dir(plan.sweep.name, d.run_key)
        if (folder / store.RESULT_FILE).exists():
            continue
        law, sigma = laws[d.spec.arm]
        # two seeds of one size are two noisy draws
        noisy = NoisyLaw(
            law.E,
            law.A,
            law.B,
            law.alpha,
            law.beta,
            sigma=noise_scale * sigma,
            trial=1000 * trial + d.spec.seed,
        )
        write_run_folder(paths.runs_dir(plan.sweep.name), d.spec, law=noisy, evals=1)
        written += 1
    return written


def grid(plan: Plan) -> dict[tuple[str, float], bool]:
    """(arm, budget) -> convex with the vertex inside, from the plan's runs' results."""
    out = {}
    for arm in plan.sweep.arms:
        rows = [d for d in plan.details if d.spec.arm == arm]
        loss = [store.read_result(paths.run_dir(plan.sweep.name, d.run_key)) for d in rows]
        b = np.array([d.spec.budget_flops for d in rows])
        n = np.array([float(d.params_non_embedding) for d in rows])
        t = np.array([float(d.tokens) for d in rows])
        v = np.array([r.val_loss if r is not None and r.val_loss is not None else np.nan for r in loss])
        cells, _ = fit_cells(arm, b, n, t, b, v)
        out.update({(arm, c.budget): c.valid for c in cells})
    return out


def run(name: str, laws, trial: int, auto: bool, noise_scale: float) -> tuple[dict, Plan]:
    is_auto = load_sweep(name).sizes == "auto"
    overrides = ([] if is_auto else AUTO[name]) if auto else (HAND[name] if is_auto else [])
    cfg = load_sweep(name, overrides)
    if not auto:
        plan = plan_sweep(cfg, 1e12)
        answer(plan, laws, trial, noise_scale)
        return grid(plan), plan
    for _ in range(4 * len(cfg.budgets)):
        plan = placed_plan(cfg, 1e12)
        if not answer(plan, laws, trial, noise_scale) and not plan.pending:
            break
    return grid(plan), plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--sweeps", nargs="+", default=["tiny", "cpu"])
    p.add_argument("--noise-scale", type=float, default=1.0, help="the surrogate's noise times this")
    args = p.parse_args()
    laws = surrogate_laws()
    print("surrogate: Approach 3 per arm on docs/results/cpu/runs.parquet, noise sigma in ln L:")
    print("  " + ", ".join(f"{a} {s:.3f}" for a, (_, s) in laws.items()))
    for name in args.sweeps:
        totals: dict[str, list[int]] = {"hand-placed": [], "auto": []}
        runs: dict[str, int] = {}
        example: dict[str, dict] = {}
        plans: dict[str, Plan] = {}
        for trial in range(args.trials):
            for label, auto in (("hand-placed", False), ("auto", True)):
                with tempfile.TemporaryDirectory() as d:
                    os.environ["SCALING_RESULTS"] = d
                    cells, plan = run(name, laws, trial, auto, args.noise_scale)
                runs[label] = len(plan.details)
                totals[label].append(sum(cells.values()))
                if trial == 0:
                    example[label], plans[label] = cells, plan
        n_cells = len(example["auto"])
        print(f"\n{name}: cells ok (convex, vertex inside the sizes) out of {n_cells}, {args.trials} trials")
        for label, counts in totals.items():
            print(
                f"  {label:11s}: mean {np.mean(counts):.1f}, min {min(counts)}, all ok in {sum(c == n_cells for c in counts)} "
                f"trials; {runs[label]} runs in the last trial"
            )
        budgets = sorted({b for _, b in example["auto"]})
        arms = list(dict.fromkeys(a for a, _ in example["auto"]))
        print("  trial 0 (hand-placed | auto):")
        for arm in arms:
            cols = [
                f"{'ok' if example['hand-placed'].get((arm, b)) else 'FLAG'}|{'ok' if example['auto'].get((arm, b)) else 'FLAG'}"
                for b in budgets
            ]
            print(f"    {arm:10s} " + "  ".join(f"{c:9s}" for c in cols))
        print("  trial 0, the sizes auto chose (hand-placed in brackets where they differ):")
        for arm in arms:
            for b in budgets:
                mine = _models(plans["auto"], arm, b)
                hand = _models(plans["hand-placed"], arm, b)
                print(
                    f"    {arm:10s} {b:.3g}: {', '.join(mine)}"
                    + ("" if mine == hand else f"  [{', '.join(hand)}]")
                )


def _models(plan: Plan, arm: str, budget: float) -> list[str]:
    rows = [d for d in plan.details if (d.spec.arm, d.spec.budget_flops) == (arm, budget)]
    return list(dict.fromkeys(d.spec.model.name for d in sorted(rows, key=lambda d: d.params_non_embedding)))


if __name__ == "__main__":
    main()
