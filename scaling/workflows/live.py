"""What the runs of a sweep are doing now, from the trainers' own logs: each running run's speed
and ETA, the sweep's ETA, and `scaling status SWEEP --watch`.

    speed = run_speed(view)                       # tokens/s, FLOPs/s, seconds left of one run
    eta_s = sweep_eta(views)                       # from the running trainers' rates
    watch_status(load, interval=5)                 # redraws the table until no run is active

A running trainer appends a metrics.jsonl row every steps/200 steps (docs/run-folder.md) with its
cumulative FLOPs, `wall_s` (wall time of the run, restarts included) and `tokens_per_s` (timed
training steps only). A run's rate is measured between the first and the last row of its log, so
it counts validations and checkpoints (not the process's start-up); with a single row, its
`tokens_per_s` stands in. The sweep's ETA assumes that the runs waiting in the queue take the
places of those that end, at the same total rate.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from scaling import store
from scaling.executors import RunView
from scaling.tables import duration, render

LIVE_COLUMNS = ["arm", "model", "budget", "state", "step", "last_loss", "tokens_per_s", "eta", "reason"]


@dataclass(frozen=True)
class Speed:
    tokens_per_s: float | None = None
    flops_per_s: float | None = None  # training FLOPs per second under the spec's convention
    eta_s: float | None = None  # seconds until the run's last step at that rate


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _first_row(path) -> dict | None:
    try:
        with open(path, "rb") as f:
            row = json.loads(f.readline())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) else None


def run_speed(view: RunView) -> Speed:
    """The rate of a running run (nothing for the others)."""
    if view.state != "running":
        return Speed()
    log = view.run_dir / "metrics.jsonl"
    last = store.last_jsonl(log)
    if last is None or not _number(last.get("step")) or not _number(last.get("tokens")):
        return Speed()
    spec = view.spec
    steps_per_s = None
    first = _first_row(log)
    if first is not None and all(_number(r.get(k)) for r in (first, last) for k in ("step", "wall_s")):
        if last["step"] > first["step"] and last["wall_s"] > first["wall_s"]:
            steps_per_s = (last["step"] - first["step"]) / (last["wall_s"] - first["wall_s"])
    tokens_per_step = spec.global_batch * spec.model.seq_len
    if steps_per_s is None and _number(last.get("tokens_per_s")) and last["tokens_per_s"] > 0:
        steps_per_s = last["tokens_per_s"] / tokens_per_step
    if not steps_per_s:
        return Speed()
    flops = last.get("flops")
    done = flops.get(spec.flops_convention) if isinstance(flops, dict) else None
    flops_per_step = done / last["step"] if _number(done) and last["step"] > 0 else None
    return Speed(
        tokens_per_s=steps_per_s * tokens_per_step,
        flops_per_s=steps_per_s * flops_per_step if flops_per_step else None,
        eta_s=max(0.0, (spec.steps - last["step"]) / steps_per_s),
    )


def sweep_eta(views: list[RunView], speeds: dict[str, Speed] | None = None) -> float | None:
    """Seconds until every run has ended: the FLOPs left of the runs that have not ended over the
    running trainers' total rate; None when no trainer has logged a rate yet."""
    speeds = speeds if speeds is not None else {v.run_key: run_speed(v) for v in views}
    rate = sum(s.flops_per_s or 0.0 for s in speeds.values())
    if rate <= 0:
        return None
    left = sum(
        max(0.0, v.spec.budget_flops - v.progress.flops_done) for v in views if v.state not in store.ENDED
    )
    return left / rate


def live_rows(views: list[RunView], rows: list[dict]) -> list[dict]:
    """`rows` (run_rows of scaling.workflows.sweep, keyed by run_key) with tokens/s and ETA."""
    speed = {v.run_key: run_speed(v) for v in views}
    out = []
    for r in rows:
        s = speed.get(r["run_key"], Speed())
        out.append(
            {
                **r,
                "tokens_per_s": None if s.tokens_per_s is None else round(s.tokens_per_s),
                "eta": None if s.eta_s is None else duration(s.eta_s),
            }
        )
    return out


def watch_status(
    load: Callable[[], tuple[list[dict], str]],
    interval: float = 5.0,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    max_refreshes: int | None = None,
) -> int:
    """Redraws the table `load()` returns (rows with LIVE_COLUMNS, and the lines under it) every
    `interval` seconds until no row is queued or running, or Ctrl-C; returns the exit code (0).
    On a terminal the screen is redrawn in place; elsewhere every refresh is printed in turn."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    refreshes = 0
    try:
        while True:
            rows, footer = load()
            stamp = datetime.fromtimestamp(clock()).strftime("%H:%M:%S")
            text = "\n".join(
                [f"{stamp}  every {interval:g}s, Ctrl-C to stop", render(rows, LIVE_COLUMNS), footer]
            )
            stream.write(("\033[H\033[2J" if tty else "") + text + "\n" + ("" if tty else "\n"))
            stream.flush()
            refreshes += 1
            if not any(r["state"] in store.ACTIVE for r in rows):
                stream.write("no run is queued or running\n")
                return 0
            if max_refreshes is not None and refreshes >= max_refreshes:
                return 0
            sleep(interval)
    except KeyboardInterrupt:
        stream.write("\n")
        return 0
