"""Speed of the analysis stage; prints figures, asserts nothing.

  .venv/bin/python bench/fit.py [--boot 1000] [--runs 200] [--folders 10000]

Targets (issue 5, on 2 cores): the fit with 1,000 bootstraps of 200 runs (Approach 3 and
Approach 2 together) under 30 s; `collect` of 10,000 run folders under 10 s. Wall time depends on
what else runs on the machine, so CPU time (this process and its workers) is printed beside it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.fit import FitOptions, fit_runs  # noqa: E402
from analysis.parametric import fit_parametric  # noqa: E402
from analysis.synthetic import isoflop_runs, run_specs, to_table, write_run_folder  # noqa: E402
from analysis.table import load_runs  # noqa: E402
from scaling.collect import collect, write_collection  # noqa: E402


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boot", type=int, default=1000)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--folders", type=int, default=10_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench_fit(args.runs, args.boot, Path(d))
        if args.folders:
            bench_collect(args.folders, Path(d))


if __name__ == "__main__":
    main()
