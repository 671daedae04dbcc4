"""Where a run's metrics go: the run folder's jsonl logs always, and the trackers of `spec.loggers`
(scaling/trackers.py) beside them.

    loggers = open_loggers(spec, run_dir, start=step, main=env.is_main)  # checks before any write
    loggers.train(row)   # a metrics.jsonl row: step, tokens, flops, train_loss, lr, grad_norm, ...
    loggers.eval(row)    # an evals.jsonl row: step, tokens, flops, val_loss, val_loss_stderr
    loggers.close(error) # at the end of the process's part of the run (error: why it stopped, if so)

- TensorBoard (torch.utils.tensorboard.SummaryWriter) writes into `<run_dir>/tensorboard/`; a
  resumed run purges the steps after its checkpoint, which it logs again.
- Weights & Biases: one W&B run per run folder, named by the run key, grouped by the sweep, tagged
  with arm, budget and model, the spec as its config; its id is kept in `<run_dir>/trackers.json`
  so that a resumed process continues the same W&B run. Offline (files in `<run_dir>/wandb/`,
  `wandb sync` uploads them) unless a project is configured (scaling/trackers.py).
- Only rank 0 logs; on the other ranks every call does nothing. Writers start at the first row,
  so that opening (which checks names and packages) writes nothing.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

from scaling import atomic, store
from scaling.errors import UserError
from scaling.spec import RunSpec, budget_tag
from scaling.trackers import Tracker, missing_package, parse_trackers

TRACKERS_FILE = "trackers.json"  # {"wandb_id": ...}: what a resumed run needs to continue its tracker runs
TENSORBOARD_DIR = "tensorboard"
WANDB_PROJECT = "dllm-scaling"  # the offline runs' project when none is configured
# metrics.jsonl / evals.jsonl fields -> tracker keys
TRAIN_KEYS = {
    "train_loss": "train/loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "train/tokens_per_s",
    "mfu": "train/mfu",
}
EVAL_KEYS = {"val_loss": "val/loss", "val_loss_stderr": "val/loss_stderr"}


def open_loggers(spec: RunSpec, run_dir: Path, start: int, main: bool = True) -> Loggers:
    """The run's loggers; UserError (before anything is written) for an unknown tracker or a
    missing package."""
    trackers = parse_trackers(spec.loggers, where="the spec's loggers") if main else []
    for t in trackers:
        _import(t.kind)  # the package's own import errors too, before the run folder is touched
    return Loggers(spec, Path(run_dir), start, trackers, main)


class Loggers:
    def __init__(self, spec: RunSpec, run_dir: Path, start: int, trackers: list[Tracker], main: bool):
        self.spec, self.run_dir, self.start, self.main = spec, run_dir, start, main
        self.trackers = [t for t in trackers if t.kind != "jsonl"]
        self.writers: list[Any] | None = None  # started at the first row

    def train(self, row: dict) -> None:
        self._log("metrics.jsonl", row, TRAIN_KEYS)

    def eval(self, row: dict) -> None:
        self._log("evals.jsonl", row, EVAL_KEYS)

    def _log(self, log: str, row: dict, keys: dict[str, str]) -> None:
        if not self.main:
            return
        atomic.append_jsonl(self.run_dir / log, row)
        if not self.trackers:
            return
        if self.writers is None:
            self.writers = [self._start(t) for t in self.trackers]
        values = {tag: float(row[k]) for k, tag in keys.items() if _number(row.get(k))}
        values["progress/tokens"] = float(row["tokens"])
        flops = row.get("flops")
        if isinstance(flops, dict) and _number(flops.get(self.spec.flops_convention)):
            values[f"progress/flops_{self.spec.flops_convention}"] = float(flops[self.spec.flops_convention])
        for w in self.writers:
            w.log(values, row["step"])

    def _start(self, tracker: Tracker):
        if tracker.kind == "tensorboard":
            return _TensorBoard(self.spec, self.run_dir, self.start)
        return _WandB(self.spec, self.run_dir, tracker, self.start)

    def close(self, error: BaseException | None = None) -> None:
        """Flushes and closes the trackers; `error` is why the process stops early, if it does
        (a preemption: the W&B run is marked preempting, and a resumed process continues it)."""
        writers, self.writers = self.writers or [], None
        for w in writers:
            w.close(error)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _import(kind: str):
    try:
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter
        import wandb

        return wandb
    except ImportError:
        raise UserError(missing_package(kind, "the spec's loggers")) from None


class _TensorBoard:
    def __init__(self, spec: RunSpec, run_dir: Path, start: int):
        SummaryWriter = _import("tensorboard")
        # events of steps after the checkpoint (logged before a preemption) are hidden: they are logged again
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start + 1 if start else None)
        if not start:
            self.writer.add_text("spec", "```\n" + spec.to_yaml() + "```", 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def close(self, error: BaseException | None) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, spec: RunSpec, run_dir: Path, tracker: Tracker, start: int):
        wandb = _import("wandb")
        try:
            saved = store.load_json(run_dir / TRACKERS_FILE) or {}
        except store.MalformedFile:  # torn: the resumed process starts a new W&B run
            saved = {}
        run_id = saved.get("wandb_id")
        if not isinstance(run_id, str):
            run_id = secrets.token_hex(6)  # W&B ids: letters and digits, unique per project
            atomic.write_json(run_dir / TRACKERS_FILE, {**saved, "wandb_id": run_id})
        _distinct_second(run_dir / "wandb", run_id)
        entity, _, project = (tracker.project or "").rpartition("/")
        configured = bool(project or os.environ.get("WANDB_PROJECT"))
        try:
            self.run = wandb.init(
                project=project or os.environ.get("WANDB_PROJECT") or WANDB_PROJECT,
                entity=entity or None,
                # offline unless a project is configured; WANDB_MODE, when set, decides
                mode=None if configured or os.environ.get("WANDB_MODE") else "offline",
                dir=str(run_dir),
                id=run_id,
                resume="allow",
                name=spec.run_key,
                group=spec.sweep or None,
                job_type="train",
                tags=[spec.arm, budget_tag(spec.budget_flops), spec.model.name],
                config=spec.to_dict(),
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as e:  # wandb raises its own error types for login and network problems
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"W&B did not start ({first}): `wandb login`, or log offline with train.loggers=[wandb]"
            ) from None

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self, error: BaseException | None) -> None:
        from trainer.loop import Preempted  # the loop imports this module

        preempted = isinstance(error, Preempted)
        if preempted:
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if error is None or preempted else 1)


def _distinct_second(folder: Path, run_id: str) -> None:
    """W&B names a process's folder by the second it starts and the run id: a process resuming
    within the second its predecessor started would write into its folder. Waits for the next one."""
    while any(folder.glob(f"*-{time.strftime('%Y%m%d_%H%M%S')}-{run_id}")):
        time.sleep(0.1)
