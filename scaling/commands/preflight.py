"""`scaling preflight SWEEP [overrides] cluster=...`: check the cluster before the sweep's jobs go
out (scaling.workflows.preflight): sbatch --test-only and one short job per resource class that
checks imports, GPUs, an all-reduce across its ranks, the prepared data and the results folder.
One line per check; exit code 1 when any failed."""

from __future__ import annotations

import argparse

from scaling.commands.plan import add_sweep_arguments
from scaling.config import load_sweep
from scaling.workflows.preflight import run_preflight


def configure(p: argparse.ArgumentParser) -> None:
    add_sweep_arguments(p)


def run(args: argparse.Namespace) -> int:
    findings = run_preflight(load_sweep(args.sweep, args.overrides))
    width = max((len(f.where) for f in findings), default=0)
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'} {f.where:<{width}}  {f.check}: {f.detail}")
    failed = sum(not f.ok for f in findings)
    print(
        f"preflight: {len(findings) - failed} of {len(findings)} checks passed"
        + (f", {failed} failed" if failed else "")
    )
    return 1 if failed else 0
