"""`scaling sweep SWEEP [overrides] [cluster=local|slurm] [--dry-run] [--no-wait]`.

Plans the sweep, prepares its data once, then submits every run that has not ended and whose job
is not queued or running (asked of the queue, so a second invocation while jobs run submits
nothing), and watches the run folders until no run is active. Idempotent: a done run is never
rerun; deleting a run's result.json (or its folder) reruns only that run.
"""

from __future__ import annotations

import argparse
import sys
import time

from scaling import paths, store
from scaling.commands.plan import add_sweep_arguments, print_summary
from scaling.commands.status import counts_line, run_rows
from scaling.config import load_sweep
from scaling.executors import Executor, Run, make_executor, parse_cluster, reconcile
from scaling.plan import plan_sweep
from scaling.tables import duration, render

SUMMARY_COLUMNS = ["arm", "model", "budget", "state", "requeues", "step", "last_loss", "reason"]


def configure(p: argparse.ArgumentParser) -> None:
    add_sweep_arguments(p)
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be submitted, with resources; submit nothing"
    )
    p.add_argument(
        "--no-wait", action="store_true", help="submit and return; watch with `scaling status SWEEP`"
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_sweep(args.sweep, args.overrides)
    cluster = parse_cluster(cfg.cluster)
    executor = make_executor(cfg.cluster)
    executor.check()
    sweep_dir = paths.sweep_dir(cfg.name)
    store.check_layout(sweep_dir)
    train_tokens = None if args.dry_run else _prepare(cfg)
    plan = plan_sweep(cfg, train_tokens)
    print_summary(plan, stream=sys.stdout)
    runs = [Run(paths.run_dir(cfg.name, d.run_key), d.spec, d.params_total) for d in plan.details]
    existing = [r.run_dir for r in runs if (r.run_dir / store.SPEC_FILE).exists()]
    views, warnings = reconcile(existing, write=not args.dry_run)
    for w in warnings:
        print(f"warning: {w}")
    state = {v.run_dir: v.state for v in views}
    todo = [r for r in runs if state.get(r.run_dir, "planned") not in store.ENDED | store.ACTIVE]
    resources = {r.run_key: executor.resources(r) for r in todo}  # a run no entry fits fails here
    ended = sum(state.get(r.run_dir) in store.ENDED for r in runs)
    active = sum(state.get(r.run_dir) in store.ACTIVE for r in runs)
    resuming = sum(store.has_checkpoint(r.run_dir) for r in todo)
    resume_note = f", {resuming} of them resuming from a checkpoint" if resuming else ""
    print(f"{ended} ended, {active} queued or running, {len(todo)} to submit ({executor.name}){resume_note}")
    if args.dry_run:
        if todo:
            print(render(_dry_rows(todo, resources), ["run_key", "steps", *next(iter(resources.values()))]))
        return 0

    store.init_layout(sweep_dir)
    store.write_plan_manifest(sweep_dir, [r.run_key for r in runs])
    for r in runs:
        store.ensure_run(r.run_dir, r.spec)
        if not (r.run_dir / store.STATUS_FILE).exists():
            store.write_status(r.run_dir, "planned")
    job_ids = executor.submit(sweep_dir, todo)
    for r in todo:
        store.mark_submitted(r.run_dir, job_ids[r.run_key])
    if todo:
        print(f"submitted {len(todo)} run(s): job(s) {_job_summary(sorted(set(job_ids.values())))}")
    if args.no_wait:
        print(
            f"not waiting: watch with `scaling status {cfg.name} --runs`, stop with `scaling cancel {cfg.name}`"
        )
        return 0
    return watch(executor, [r.run_dir for r in runs], cluster.poll_s, cluster.wait_timeout_h, cfg.name)


def _prepare(cfg) -> float:
    from trainer.data import prepare_data, read_sidecar

    return float(read_sidecar(prepare_data(cfg.data))["tokens"])


def _dry_rows(todo: list[Run], resources: dict[str, dict]) -> list[dict]:
    return [{"run_key": r.run_key, "steps": r.spec.steps, **resources[r.run_key]} for r in todo]


def _job_summary(ids: list[str]) -> str:
    return ", ".join(ids) if len(ids) <= 6 else f"{', '.join(ids[:3])}, ... {ids[-1]} ({len(ids)})"


class ProgressLine:
    """Runs done / total, FLOPs done / total, ETA: redrawn on a terminal, else printed on change."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout  # looked up now: sys.stdout may have been replaced
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.flops_at_start: float | None = None
        self.last_key = None

    def update(self, views) -> None:
        total = sum(v.spec.budget_flops for v in views)
        done_flops = sum(v.progress.flops_done for v in views)
        ended = sum(v.state in store.ENDED for v in views)
        if self.flops_at_start is None:
            self.flops_at_start = done_flops
        elapsed = time.monotonic() - self.start
        rate = (done_flops - self.flops_at_start) / elapsed if elapsed > 0 else 0.0
        eta = duration((total - done_flops) / rate) if rate > 0 else "?"
        pct = 100 * done_flops / total if total else 100.0
        line = (
            f"{ended}/{len(views)} runs done | {done_flops:.3g}/{total:.3g} FLOPs ({pct:.0f}%) | "
            f"ETA {eta} | {counts_line(views).split(': ', 1)[1]}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            return
        key = tuple(sorted((v.run_key, v.state) for v in views))
        if key != self.last_key:
            print(line, file=self.stream, flush=True)
            self.last_key = key

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def watch(executor: Executor, run_dirs, poll_s: float, timeout_h: float, sweep: str) -> int:
    progress = ProgressLine()
    deadline = time.monotonic() + timeout_h * 3600
    try:
        while True:
            views, _ = reconcile(run_dirs)
            progress.update(views)
            if not any(v.state in store.ACTIVE for v in views):
                break
            if time.monotonic() > deadline:
                progress.close()
                print(
                    f"stopped waiting after {timeout_h:g} h (cluster.wait_timeout_h); the jobs go on: "
                    f"`scaling status {sweep} --runs`"
                )
                return 1
            time.sleep(poll_s)
    except KeyboardInterrupt:
        progress.close()
        views, _ = reconcile(run_dirs)
        active = sorted({v.status.job_id for v in views if v.state in store.ACTIVE and v.status.job_id})
        print(
            "interrupted: stopping..."
            if executor.name == "local"
            else f"interrupted: the jobs go on; `scaling status {sweep}` watches them, `scaling cancel {sweep}` stops them"
        )
        executor.interrupt(active)
        views, _ = reconcile(run_dirs)
        _summary(views)
        return 130
    progress.close()
    executor.settle(timeout=60)
    _summary(views)
    return 0 if all(v.state in store.ENDED for v in views) else 1


def _summary(views) -> None:
    print(render(run_rows(views), SUMMARY_COLUMNS))
    print(counts_line(views))
