"""Speed of the analysis stage; prints figures, asserts nothing.

  .venv/bin/python bench/fit.py [--boot 1000] [--runs 200] [--folders 10000]
  .venv/bin/python bench/fit.py --against-today [--table FILE] [--repeats 2]
  .venv/bin/python bench/fit.py --smoke

Targets (issue 5, on 2 cores): the fit with 1,000 bootstraps of 200 runs (Approach 3 and
Approach 2 together) under 30 s; `collect` of 10,000 run folders under 10 s.
Issue 16: `scaling fit` of a tiny-shaped sweep (75 runs: 5 arms x 3 budgets x 5 sizes, 1,000
resamples) at least 5x faster than the code before the batched bootstrap (commit TODAY), with
the same point estimates; `--against-today` extracts that commit's analysis/ and scaling/ with
`git archive` and fits the same table with both versions in alternating subprocesses on the same
machine (default table: docs/results/cpu/runs.parquet cut to seed 0 and 5 sizes per cell, the
tiny profile's shape). `--smoke` times collect + fit + plot of a trained `smoke` sweep (trained
first into a temporary folder; target under 30 s).
Wall time depends on what else runs on the machine, so CPU time (this process and its workers)
is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.fit import FitOptions, fit_runs  # noqa: E402
from analysis.parametric import fit_parametric  # noqa: E402
from analysis.synthetic import isoflop_runs, run_specs, to_table, write_run_folder  # noqa: E402
from analysis.table import load_runs  # noqa: E402
from scaling.collect import collect, write_collection  # noqa: E402

TODAY = "657da804e2ad97eb42a32269edc16fa31bfd2206"  # the fit before the batched bootstrap (issue 16)
CPU_TABLE = ROOT / "docs" / "results" / "cpu" / "runs.parquet"


def cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_s()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_s() - self.cpu


def bench_fit(n_runs: int, n_boot: int, tmp: Path) -> None:
    per_budget = n_runs // 5
    table = to_table(isoflop_runs(sizes_per_budget=per_budget, noise=0.01, seed=0, arm="mdlm-ce"))
    pq.write_table(table, tmp / "runs.parquet")
    data, _ = load_runs(tmp / "runs.parquet")
    with Timer() as single:
        for _ in range(5):
            fit_parametric(data.n, data.d, data.loss)
    with Timer() as t:
        report = fit_runs(data, FitOptions(n_boot=n_boot, seed=0))
    parametric = report.arms["mdlm-ce"].parametric
    assert parametric is not None, "the synthetic sweep has runs enough for Approach 3"
    alpha = parametric.alpha
    print(f"Approach 3 point fit, {len(data)} runs: {1e3 * single.wall / 5:.1f} ms wall")
    print(
        f"fit with {n_boot} bootstraps (Approach 2 + 3), {len(data)} runs: {t.wall:.1f} s wall, "
        f"{t.cpu:.1f} s CPU (target < 30 s); alpha = {alpha:.3f}"
    )


def bench_collect(n_folders: int, tmp: Path) -> None:
    widths = (16, 24, 32, 40, 48, 56, 64, 80, 96, 128)
    arms = ("ar", "mdlm-elbo", "mdlm-ce", "duo", "eso")
    budgets = (1e12, 2e12, 3e12, 5e12, 1e13)
    seeds = tuple(range(int(np.ceil(n_folders / (len(widths) * len(arms) * len(budgets))))))
    specs = run_specs(arms=arms, budgets=budgets, widths=widths, seeds=seeds)[:n_folders]
    runs_dir = tmp / "sweep" / "runs"
    with Timer() as w:
        for s in specs:
            write_run_folder(runs_dir, s)
    print(f"wrote {len(specs)} synthetic run folders in {w.wall:.1f} s")
    with Timer() as t:
        col = collect(runs_dir, "bench")
        write_collection(col, tmp / "sweep")
    print(
        f"collect of {col.runs.num_rows} folders ({col.curves.num_rows} evaluations): {t.wall:.2f} s wall, "
        f"{t.cpu:.2f} s CPU (target < 10 s)"
    )
    with Timer() as t1:
        collect(runs_dir, "bench", workers=1)
    print(f"  same, one process: {t1.wall:.2f} s wall")


# --- against today's code ------------------------------------------------------------------------

# Run in a subprocess with PYTHONPATH set to one version of the code: fit, print timings and every
# point estimate and interval as JSON (keys joined with '|').
_FIT_ONE = """
import json, resource, sys, time
from analysis.fit import FitOptions, fit_runs
from analysis.table import load_runs
data, _ = load_runs(sys.argv[1])
wall = time.perf_counter()
report = fit_runs(data, FitOptions(n_boot=int(sys.argv[2]), seed=0))
wall = time.perf_counter() - wall
use = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
key = lambda k: "|".join("" if v is None else str(v) for v in k)
print(json.dumps({
    "wall": wall,
    "cpu": sum(u.ru_utime + u.ru_stime for u in use),
    "estimates": {key(k): v for k, v in report.estimates.items()},
    "intervals": {key(k): [iv.low, iv.high, iv.valid] for k, iv in report.intervals.items()},
}))
"""


def tiny_shaped_table(path: Path) -> None:
    """The cpu profile's runs cut to the tiny profile's shape: seed 0, 5 sizes per (arm, budget)
    (the largest budget keeps its 5 smallest sizes, the others their 5 largest)."""
    table = pq.read_table(CPU_TABLE)
    arm = np.array(table.column("arm").to_pylist())
    budget = table.column("budget_flops").to_numpy()
    n = table.column("params_non_embedding").to_numpy()
    seed = table.column("seed").to_numpy()
    keep = []
    for a in np.unique(arm):
        for b in np.unique(budget):
            rows = np.flatnonzero((arm == a) & (budget == b) & (seed == 0))
            rows = rows[np.argsort(n[rows])]
            keep += list(rows[:5] if b == budget.max() else rows[-5:])
    pq.write_table(table.take(pa.array(sorted(keep))), path)


def _fit_with(code_root: Path, table: Path, n_boot: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    out = subprocess.run(
        [sys.executable, "-c", _FIT_ONE, str(table), str(n_boot)],
        capture_output=True,
        text=True,
        env=env,
        cwd=code_root,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def bench_against_today(table: Path | None, n_boot: int, repeats: int, tmp: Path) -> None:
    if table is None:
        table = tmp / "tiny-shaped.parquet"
        tiny_shaped_table(table)
    old_root = tmp / "today"
    old_root.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", TODAY, "analysis", "scaling"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive, check=True)
    print(f"{table}: {pq.read_metadata(table).num_rows} runs, {n_boot} resamples; today = {TODAY[:9]}")
    times: dict[str, list[tuple[float, float]]] = {"today": [], "new": []}
    results = {}
    for i in range(repeats):
        for name, root in (
            (("today", old_root), ("new", ROOT)) if i % 2 == 0 else (("new", ROOT), ("today", old_root))
        ):
            r = _fit_with(root, table, n_boot)
            times[name].append((r["wall"], r["cpu"]))
            results[name] = r
            print(f"  {name:5s} run {i + 1}: {r['wall']:6.1f} s wall, {r['cpu']:6.1f} s CPU", flush=True)
    wall = {k: float(np.median([w for w, _ in v])) for k, v in times.items()}
    cpu = {k: float(np.median([c for _, c in v])) for k, v in times.items()}
    print(
        f"median: today {wall['today']:.1f} s wall / {cpu['today']:.1f} s CPU, new {wall['new']:.1f} s wall / "
        f"{cpu['new']:.1f} s CPU: {wall['today'] / wall['new']:.1f}x faster (wall), "
        f"{cpu['today'] / cpu['new']:.1f}x (CPU); target >= 5x"
    )
    old, new = results["today"], results["new"]
    shared = sorted(set(old["estimates"]) & set(new["estimates"]))
    rel = [
        abs(new["estimates"][k] - old["estimates"][k]) / max(abs(old["estimates"][k]), 1e-300)
        for k in shared
        if old["estimates"][k] is not None and np.isfinite(old["estimates"][k])
    ]
    print(f"point estimates: {len(shared)} shared, largest relative difference {max(rel):.2g}")
    moved = []
    for k in shared:
        (lo0, hi0, _), (lo1, hi1, _) = old["intervals"][k], new["intervals"][k]
        if not all(np.isfinite([lo0, hi0, lo1, hi1])) or hi0 <= lo0:
            continue
        moved.append((max(abs(lo1 - lo0), abs(hi1 - hi0)) / (hi0 - lo0), k))
    moved.sort(reverse=True)
    dropped = sum(
        1 for k in shared if np.isfinite(old["intervals"][k][0]) and not np.isfinite(new["intervals"][k][0])
    )
    print(
        f"intervals: median end shift {100 * np.median([m for m, _ in moved]):.1f}% of the width, "
        f"90th percentile {100 * np.percentile([m for m, _ in moved], 90):.1f}%; "
        f"{dropped} now n/a (fewer than half the resamples had a value)"
    )
    for m, k in moved[:5]:
        print(f"  largest: {k} moved {100 * m:.0f}% of its width")


def bench_smoke(tmp: Path) -> None:
    env = {**os.environ, "SCALING_RESULTS": str(tmp / "results"), "SCALING_DATA": str(tmp / "data")}
    scaling = [sys.executable, "-m", "scaling.cli"]
    with Timer() as t:
        subprocess.run([*scaling, "sweep", "smoke"], env=env, check=True, capture_output=True, cwd=ROOT)
    print(f"trained the smoke sweep in {t.wall:.0f} s")
    with Timer() as total:
        for stage in (["collect", "smoke"], ["fit", "smoke", "--force"], ["plot", "smoke"]):
            with Timer() as t:
                subprocess.run([*scaling, *stage], env=env, check=True, capture_output=True, cwd=ROOT)
            print(f"  scaling {' '.join(stage)}: {t.wall:.1f} s wall")
    print(f"collect + fit + plot of smoke: {total.wall:.1f} s wall, {total.cpu:.1f} s CPU (target < 30 s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boot", type=int, default=1000)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--folders", type=int, default=10_000)
    p.add_argument("--against-today", action="store_true", help="time today's fit and the new one")
    p.add_argument(
        "--table", type=Path, help="runs table for --against-today (default: tiny-shaped cpu runs)"
    )
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per version (--against-today)")
    p.add_argument("--smoke", action="store_true", help="time collect + fit + plot of a trained smoke sweep")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if args.against_today:
            bench_against_today(args.table, args.boot, args.repeats, Path(d))
        elif args.smoke:
            bench_smoke(Path(d))
        else:
            bench_fit(args.runs, args.boot, Path(d))
            if args.folders:
                bench_collect(args.folders, Path(d))


if __name__ == "__main__":
    main()
