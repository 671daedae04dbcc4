"""A sweep from config to ended runs, as functions a notebook can call as well as the CLI.

    outcome = run_sweep(load_sweep("tiny"))             # plan, prepare, submit, watch
    outcome = run_sweep(cfg, wait=False)                 # submit and return
    views, warnings = sweep_views(sweep_dir("tiny"))    # scaling.executors: reconciled states
    cancelled, job_ids = cancel_sweep("tiny")

`run_sweep` plans the sweep, prepares its data once, then submits every run that has not ended and
whose job is not queued or running (asked of the queue, so a second call while jobs run submits
nothing), and with `wait` watches the run folders until no run is active. Idempotent: a done run
is never rerun; deleting a run's result.json (or its folder) reruns only that run.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import TextIO

from scaling import locks, nodes, packing, paths, placement, store
from scaling.config import SweepConfig
from scaling.errors import UserError
from scaling.executors import Executor, Run, RunView, cancel_jobs, executor_for, reconcile, sweep_views
from scaling.placement import Placement
from scaling.plan import Plan, summary_lines
from scaling.spec import budget_tag
from scaling.tables import duration, render
from scaling.workflows.adaptive import placed_plan
from scaling.workflows.live import sweep_eta
from trainer.data import read_sidecar

STATUS_COLUMNS = ["arm", "model", "budget", "state", "job_id", "requeues", "step", "last_loss", "reason"]
SUMMARY_COLUMNS = ["arm", "model", "budget", "state", "requeues", "step", "last_loss", "reason"]
LOCK_FILE = ".sweep.lock"
LOCK_WAIT_S = 120  # a second `scaling sweep` waits this long for the first to record its jobs
EXIT_CODES = {"dry-run": 0, "submitted": 0, "ended": 0, "unfinished": 1, "timeout": 1, "interrupted": 130}


@dataclass
class SweepOutcome:
    """What a call of run_sweep did. `result`: dry-run | submitted (not waiting) | ended (every
    run done or diverged) | unfinished (some failed or were cancelled) | timeout | interrupted."""

    plan: Plan
    result: str
    submitted: dict[str, str] = field(default_factory=dict)  # run_key -> job id
    resources: dict[str, dict] = field(default_factory=dict)  # run_key -> executor resources (to submit)
    placements: dict[str, Placement] = field(default_factory=dict)  # run_key -> GPUs, settings, time
    views: list[RunView] = field(default_factory=list)  # the runs' last reconciled states

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]


def run_sweep(
    cfg: SweepConfig,
    executor: Executor | None = None,
    *,
    wait: bool = True,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
    progress: TextIO | None = None,
) -> SweepOutcome:
    """Plans, prepares and submits the sweep (see the module docstring); `say` receives the
    report lines, `progress` (default stdout) the progress line while waiting."""
    executor = executor or executor_for(cfg.cluster)
    executor.check()
    sweep_dir = paths.sweep_dir(cfg.name)
    store.check_layout(sweep_dir)
    # with sizes: auto, the budgets the finished lower budgets place (scaling/workflows/adaptive.py)
    plan = placed_plan(cfg, None if dry_run else prepare_sweep_data(cfg))
    for line in summary_lines(plan):
        say(line)
    runs = [Run(paths.run_dir(cfg.name, d.run_key), d.spec, d.params_total) for d in plan.details]
    # each run's GPUs, micro-batch, checkpointing, sharding, GPU-hours and time limit (not in its key)
    placements = {r.run_key: executor.place(r) for r in runs}
    runs = [replace(r, spec=placement.apply(r.spec, placements[r.run_key])) for r in runs]
    # from reading the runs' states to recording their jobs, one sweep call at a time: a second
    # call waits, then finds them queued (two calls would otherwise train every run twice)
    lock = (
        nullcontext() if dry_run else locks.exclusive(sweep_dir / LOCK_FILE, f"sweep {cfg.name}", LOCK_WAIT_S)
    )
    with lock:
        existing = [r.run_dir for r in runs if (r.run_dir / store.SPEC_FILE).exists()]
        views, warnings = reconcile(existing, write=not dry_run)
        for w in warnings:
            say(f"warning: {w}")
        state = {v.run_dir: v.state for v in views}
        exclusion = executor.exclusion(nodes.failures(v.status for v in views))
        note = nodes.summary(exclusion)
        if note:
            say(note)
        todo = [r for r in runs if state.get(r.run_dir, "planned") not in store.ENDED | store.ACTIVE]
        # live jobs no folder records (a sweep killed while submitting): the queue's word wins
        recorded = {v.run_key: v.status.job_id for v in views}
        adopted = {
            key: job_id
            for key, job_id in ({} if dry_run else executor.adopt(sweep_dir, todo)).items()
            if recorded.get(key) != job_id  # a job a folder names already trained that run
        }
        todo = [r for r in todo if r.run_key not in adopted]
        resources = {r.run_key: executor.resources(r) for r in todo}  # a run nothing fits fails here
        ended = sum(state.get(r.run_dir) in store.ENDED for r in runs)
        active = sum(state.get(r.run_dir) in store.ACTIVE for r in runs) + len(adopted)
        resuming = sum(store.has_checkpoint(r.run_dir) for r in todo)
        resume_note = f", {resuming} of them resuming from a checkpoint" if resuming else ""
        say(
            f"{ended} ended, {active} queued or running, {len(todo)} to submit ({executor.name}){resume_note}"
        )
        outcome = SweepOutcome(plan, "dry-run", resources=resources, views=views, placements=placements)
        if dry_run:
            # small runs that share a GPU: their job's time limit, and which group (scaling/packing.py)
            groups = executor.pack(todo)
            in_jobs, pack = packing.in_jobs(groups, placements), packing.labels(groups)
            if todo:
                columns = ["run_key", "steps", *next(iter(resources.values())), *placement.COLUMNS]
                columns += ["pack"] if any(pack.values()) else []
                rows = [
                    {
                        "run_key": r.run_key,
                        "steps": r.spec.steps,
                        **resources[r.run_key],
                        **placement.row(in_jobs[r.run_key]),
                        "pack": pack[r.run_key],
                    }
                    for r in todo
                ]
                say(render(rows, columns))
            for line in placement.totals(
                [r.spec for r in runs], [placements[r.run_key] for r in runs], cfg.data.train_tokens
            ) + packing.totals(groups, placements):
                say(line)
            return outcome
        flagged = [r for r in todo if placements[r.run_key].problems]
        if flagged:
            raise UserError(
                f"{len(flagged)} run(s) cannot be submitted as planned, e.g. {flagged[0].run_key}: "
                f"{placements[flagged[0].run_key].problems[0]} (`scaling sweep {cfg.name} --dry-run` lists them)"
            )

        store.init_layout(sweep_dir)
        store.write_plan_manifest(sweep_dir, [r.run_key for r in runs])
        if exclusion.failures:
            nodes.record(sweep_dir, exclusion)
        for r in runs:
            store.ensure_run(r.run_dir, r.spec)
            if not (r.run_dir / store.STATUS_FILE).exists():
                store.write_status(r.run_dir, "planned")
        folders = {r.run_key: r.run_dir for r in runs}

        def record(job_ids: dict[str, str]) -> None:
            """Each batch of jobs is recorded as soon as the queue accepted it (a later refusal
            must not leave accepted jobs unrecorded, to be submitted again)."""
            for key, job_id in job_ids.items():
                store.mark_submitted(folders[key], job_id)
            outcome.submitted.update(job_ids)

        if adopted:
            say(
                f"adopted {len(adopted)} run(s) the queue already holds but no folder recorded: "
                f"job(s) {_job_summary(sorted(set(adopted.values())))}"
            )
            record(adopted)
        executor.submit(sweep_dir, todo, record, exclusion.excluded)
    if todo:
        jobs = sorted({outcome.submitted[r.run_key] for r in todo})
        say(f"submitted {len(todo)} run(s): job(s) {_job_summary(jobs)}")
    if not wait:
        outcome.result = "submitted"
        say(
            f"not waiting: watch with `scaling status {cfg.name} --runs`, stop with `scaling cancel {cfg.name}`"
        )
        return outcome
    outcome.result, outcome.views = watch(executor, [r.run_dir for r in runs], cfg.name, say, progress)
    if plan.pending and outcome.result == "ended":  # sizes: auto: the next budgets can be placed now
        return run_sweep(cfg, executor, wait=wait, say=say, progress=progress)
    return outcome


def prepare_sweep_data(cfg: SweepConfig) -> float:
    """Tokenizes the sweep's corpus once (idempotent; on a SLURM cluster as its own job); returns
    the training split's token count."""
    from scaling.workflows.prepare import prepare_for_sweep

    return float(read_sidecar(prepare_for_sweep(cfg))["tokens"])


def _job_summary(ids: list[str]) -> str:
    return ", ".join(ids) if len(ids) <= 6 else f"{', '.join(ids[:3])}, ... {ids[-1]} ({len(ids)})"


def watch(
    executor: Executor,
    run_dirs,
    sweep: str,
    say: Callable[[str], None] = print,
    progress: TextIO | None = None,
) -> tuple[str, list[RunView]]:
    """Polls the runs until none is active; returns (result, last views) as in SweepOutcome. On
    Ctrl-C the executor's jobs are stopped unless it is detached (their jobs go on)."""
    line = ProgressLine(progress)
    deadline = time.monotonic() + executor.wait_timeout_h * 3600
    try:
        while True:
            views, _ = reconcile(run_dirs)
            line.update(views)
            if not any(v.state in store.ACTIVE for v in views):
                break
            if time.monotonic() > deadline:
                line.close()
                say(
                    f"stopped waiting after {executor.wait_timeout_h:g} h (cluster.wait_timeout_h); the jobs go on: "
                    f"`scaling status {sweep} --runs`"
                )
                return "timeout", views
            time.sleep(executor.poll_s)
    except KeyboardInterrupt:
        line.close()
        views, _ = reconcile(run_dirs)
        active = sorted({v.status.job_id for v in views if v.state in store.ACTIVE and v.status.job_id})
        if executor.detached:
            say(
                f"interrupted: the jobs go on; `scaling status {sweep}` watches them, `scaling cancel {sweep}` stops them"
            )
        else:
            say("interrupted: stopping...")
            executor.cancel(active)
        views, _ = reconcile(run_dirs)
        _report(views, say)
        return "interrupted", views
    line.close()
    executor.settle(timeout=60)
    _report(views, say)
    return ("ended" if all(v.state in store.ENDED for v in views) else "unfinished"), views


def _report(views: list[RunView], say: Callable[[str], None]) -> None:
    say(render(run_rows(views), SUMMARY_COLUMNS))
    say(counts_line(views))


class ProgressLine:
    """Runs done / total, FLOPs done / total, ETA: redrawn on a terminal; elsewhere printed when a
    run changes state and at least every HEARTBEAT_S while the sweep goes on.

    The ETA comes from the running trainers' own rates (scaling.workflows.live: their logs, from
    the first minute) until a run has ended during the watch; from then on from the FLOPs done per
    second since the watch began, which also counts start-up, queueing and evaluation."""

    HEARTBEAT_S = 60.0

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stdout  # looked up now: sys.stdout may have been replaced
        self.tty = self.stream.isatty()
        self.clock = clock
        self.start = clock()
        self.flops_at_start: float | None = None
        self.ended_at_start = 0
        self.last_key: tuple | None = None
        self.printed_at = -math.inf

    def text(self, views: list[RunView]) -> str:
        total = sum(v.spec.budget_flops for v in views)
        done_flops = sum(v.progress.flops_done for v in views)
        ended = sum(v.state in store.ENDED for v in views)
        if self.flops_at_start is None:
            self.flops_at_start, self.ended_at_start = done_flops, ended
        elapsed = self.clock() - self.start
        observed = (done_flops - self.flops_at_start) / elapsed if elapsed > 0 else 0.0
        if ended > self.ended_at_start and observed > 0:
            eta: float | None = max(0.0, total - done_flops) / observed
        else:
            eta = sweep_eta(views)
        pct = 100 * done_flops / total if total else 100.0
        return (
            f"{ended}/{len(views)} runs done | {done_flops:.3g}/{total:.3g} FLOPs ({pct:.0f}%) | "
            f"ETA {'?' if eta is None else duration(eta)} | {counts_line(views).split(': ', 1)[1]}"
        )

    def update(self, views: list[RunView]) -> None:
        line = self.text(views)
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            return
        key = tuple(sorted((v.run_key, v.state) for v in views))
        now = self.clock()
        if key != self.last_key or now - self.printed_at >= self.HEARTBEAT_S:
            print(line, file=self.stream, flush=True)
            self.last_key, self.printed_at = key, now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


# --- status and cancel ---------------------------------------------------------------------------


def counts_line(views: list[RunView]) -> str:
    counts = Counter(v.state for v in views)
    order = [s for s in store.STATES if counts[s]]
    return f"{len(views)} runs: " + ", ".join(f"{counts[s]} {s}" for s in order)


def run_rows(views: list[RunView]) -> list[dict]:
    """One row per run, in (arm, budget, size) order, for the status and summary tables."""
    rows = []
    for v in sorted(
        views, key=lambda v: (v.spec.arm, v.spec.budget_flops, v.spec.model.d_model, v.spec.model.n_layers)
    ):
        rows.append(
            {
                "run_key": v.run_key,
                "arm": v.spec.arm,
                "model": v.spec.model.name,
                "budget": budget_tag(v.spec.budget_flops),
                "state": v.state,
                "job_id": v.status.job_id,
                "requeues": v.status.requeues,
                "step": f"{v.progress.step}/{v.progress.steps}",
                "last_loss": v.progress.last_loss,
                "reason": v.status.reason if v.state in ("failed", "cancelled", "diverged") else None,
            }
        )
    return rows


def cancel_sweep(sweep: str) -> tuple[int, list[str], list[str]]:
    """Cancels the sweep's queued and running jobs and marks their runs cancelled (trainers get
    SIGTERM and checkpoint, so run_sweep resumes them). Returns (runs cancelled, job ids, warnings)."""
    views, warnings = sweep_views(paths.sweep_dir(sweep))
    active = [v for v in views if v.state in store.ACTIVE and v.status.job_id]
    job_ids = sorted({v.status.job_id for v in active if v.status.job_id})
    cancel_jobs(job_ids)
    cancelled = 0
    for v in active:
        if store.read_result(v.run_dir) is None:  # a run may finish while we cancel
            store.write_status(v.run_dir, "cancelled", reason="cancelled by `scaling cancel`")
            cancelled += 1
    return cancelled, job_ids, warnings
