"""The run store: `results/<sweep>/runs/<run_key>/` folders and their `status.json`.

The run folder is the single source of truth (docs/run-folder.md). Executors, the job wrapper on
the compute node and the trainer all change a run's state through `write_status`, which merges
the given fields into the current status under a file lock and writes atomically, so that a
late "queued" from the submitting process cannot overwrite the node's "running". The trainer
writes `result.json` through `write_result` (a `RunResult`) and everything that reads it goes
through `read_result`. `scaling train`'s exit codes are part of the same contract.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaling import atomic, locks, records
from scaling.errors import UserError
from scaling.spec import SPEC_VERSION, RunSpec, load_spec

STORE_VERSION = 2  # 2: run keys of spec version 2
STATES = ("planned", "queued", "running", "requeued", "done", "failed", "diverged", "cancelled")
ENDED = frozenset({"done", "diverged"})  # result.json exists
TERMINAL = frozenset({"done", "diverged", "failed", "cancelled"})
ACTIVE = frozenset({"queued", "running", "requeued"})  # a job (or process) is responsible for the run

STATUS_FILE = "status.json"
SPEC_FILE = "spec.yaml"
RESULT_FILE = "result.json"
MARKER_FILE = "store.json"  # results/<sweep>/store.json: the layout version of the folder
PLAN_FILE = "plan.json"  # results/<sweep>/plan.json: the run keys of the sweep's latest plan
CHECKPOINT_DIR = "checkpoints"  # <run_dir>/checkpoints/step-<N>.pt (written by trainer.checkpoint)
HEARTBEAT_FILE = "heartbeat"  # touched by a training trainer every few seconds; a job's watchdog reads it

# How `scaling train` ends (docs/run-folder.md): 0 the run ended (result.json) or had ended,
# 2 bad input (scaling.errors.UserError), EXIT_PREEMPTED checkpointed after a stop signal.
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: run the same command again to resume
JOB_ID_ENV = "SCALING_JOB_ID"  # set by an executor for the trainer it starts: the job the run belongs to


class MalformedFile(ValueError):
    """A run-folder file exists but cannot be read as what it should hold; the message says why."""


def load_json(path: Path) -> dict | None:
    """A JSON object from `path`; None when the file does not exist, MalformedFile when it is not
    a readable JSON object (torn write, binary garbage, another type)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedFile(f"{path.name} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise MalformedFile(f"{path.name} is not a JSON object")
    return obj


@dataclass(frozen=True)
class RunStatus:
    state: str = "planned"
    job_id: str | None = None
    requeues: int = 0
    reason: str | None = None
    updated_at: float | None = None
    host: str | None = None
    stalls: int = 0  # requeues of the current job because its trainer stopped beating
    failed_nodes: list[str] = field(default_factory=list)  # a node per failure or stall (bad nodes)


def read_status(run_dir: str | Path) -> RunStatus:
    """The run's status.json; a missing, torn or mis-typed file reads as `planned`."""
    try:
        d = load_json(Path(run_dir) / STATUS_FILE)
        return RunStatus() if d is None else records.from_dict(RunStatus, d, STATUS_FILE, ignore_unknown=True)
    except (MalformedFile, records.RecordError):
        return RunStatus()


def write_status(
    run_dir: str | Path,
    state: str,
    *,
    if_job: str | None = None,
    if_state: Collection[str] | None = None,
    **fields,
) -> RunStatus:
    """Sets the state and merges `fields` (job_id, requeues, reason, stalls) into status.json;
    `failed_on=NODE` adds the node to failed_nodes.

    Fields not given keep their value, except `reason`, which is cleared on every write that
    does not give one (a reason describes the current state only). With `if_job`, nothing is
    written unless the run still belongs to that job: a job that outlived a resubmission of its
    run must not overwrite the new job's state. With `if_state`, nothing is written unless the
    run is still in one of those states: a writer that read the state a while ago (a poll of the
    queue) must not overwrite what another process wrote since (`scaling cancel`).
    """
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    unknown = set(fields) - {"job_id", "requeues", "reason", "stalls", "failed_on"}
    if unknown:
        raise ValueError(f"unknown status field(s): {', '.join(sorted(unknown))}")
    run_dir = Path(run_dir)
    with _locked(run_dir):
        current = read_status(run_dir)
        if if_job is not None and current.job_id not in (None, if_job):
            return current
        if if_state is not None and current.state not in if_state:
            return current
        return _write(run_dir, current, state, fields)


def mark_running(run_dir: str | Path, job_id: str | None, **fields) -> bool:
    """`running` under `job_id` (None: a trainer started by hand), unless `scaling cancel` has
    cancelled the run in that very job: a cancel can land between a job's start and its
    trainer's, and the job's SIGTERM is then on its way. False when nothing was written."""
    run_dir = Path(run_dir)
    with _locked(run_dir):
        current = read_status(run_dir)
        if job_id is not None and current.state == "cancelled" and current.job_id == job_id:
            return False
        _write(run_dir, current, "running", ({"job_id": job_id} if job_id else {}) | fields)
        return True


def mark_submitted(run_dir: str | Path, job_id: str) -> RunStatus:
    """`queued` with the job id, unless the job already started and wrote a later state itself."""
    run_dir = Path(run_dir)
    with _locked(run_dir):
        current = read_status(run_dir)
        if current.job_id == job_id and current.state != "queued":
            return current
        return _write(run_dir, current, "queued", {"job_id": job_id, "requeues": 0, "stalls": 0})


def _write(run_dir: Path, current: RunStatus, state: str, fields: dict) -> RunStatus:
    node = fields.pop("failed_on", None)
    merged = asdict(current) | {"reason": None} | fields
    if node:
        merged["failed_nodes"] = [*current.failed_nodes, node]
    merged.update(state=state, updated_at=round(time.time(), 3), host=socket.gethostname())
    status = RunStatus(**merged)
    atomic.write_json(run_dir / STATUS_FILE, asdict(status))
    return status


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".status.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class RunResult:
    """result.json: how a run ended (docs/run-folder.md). Losses in nats per token; `flops` holds
    the run's training FLOPs under every counting convention of scaling.flops."""

    status: str  # done | diverged
    run_key: str
    steps: int  # steps trained (the diverging step's predecessor for a diverged run)
    tokens: int
    flops: dict[str, float]
    val_loss: float | None = None
    val_loss_stderr: float | None = None
    val_ppl: float | None = None
    train_loss: float | None = None  # mean of the last training losses
    wall_s: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None  # model FLOPs (causal convention) / (time x peak of the devices)
    device: str | None = None
    precision: str | None = None  # the arithmetic of the run: bf16 or fp32
    attention: str | None = None  # the attention backend: flash or sdpa
    compile_s: float | None = None  # torch.compile's first-step time, outside tokens_per_s and mfu
    max_memory_gb: float | None = None  # peak allocated memory of one device (CUDA only)
    checkpoint_s: float | None = None  # the longest checkpoint write: what a stop signal must wait for
    world_size: int = 1
    restarts: int = 0
    diverged_step: int | None = None
    finished_at: str | None = None
    git_sha: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ENDED:
            raise records.RecordError(f"status {self.status!r} is not one of {', '.join(sorted(ENDED))}")


def write_result(run_dir: str | Path, result: RunResult) -> None:
    atomic.write_json(Path(run_dir) / RESULT_FILE, asdict(result))


def load_result(run_dir: str | Path) -> RunResult | None:
    """result.json, None when absent; MalformedFile (with the reason) when it cannot be used."""
    d = load_json(Path(run_dir) / RESULT_FILE)
    if d is None:
        return None
    try:
        return records.from_dict(RunResult, d, RESULT_FILE, ignore_unknown=True)
    except records.RecordError as e:
        raise MalformedFile(str(e)) from None


# --- the trainer's claim on its run folder -----------------------------------------------------

OWNER_WAIT_S = 180  # a trainer waits this long for another to let go (it may be checkpointing)


def owner_file(run_dir: Path) -> Path:
    """`runs/.<run_key>.lock`: beside the folder, so that the folder holds the run's files only."""
    return run_dir.parent / f".{run_dir.name}.lock"


def hold_run(run_dir: str | Path, wait_s: float = OWNER_WAIT_S, say=print) -> AbstractContextManager[None]:
    """The trainer's exclusive claim on a run folder, for as long as it trains (scaling/locks.py's
    `held`). A second trainer waits up to `wait_s` (the first may be checkpointing after a stop
    signal), then fails with a one-line error."""
    return locks.held(owner_file(Path(run_dir)), "trainer", run_dir, wait_s, say)


def run_owner(run_dir: str | Path) -> str | None:
    """Who trains the run now (a live process holding hold_run's lock), None when nobody does."""
    return locks.holder_of(owner_file(Path(run_dir)))


def read_result(run_dir: str | Path) -> RunResult | None:
    """result.json if it is usable; a missing or damaged one reads as None (the run has not ended:
    `scaling train` finishes it again from its last checkpoint)."""
    try:
        return load_result(run_dir)
    except MalformedFile:
        return None


def last_jsonl(path: str | Path, tail_bytes: int = 8192) -> dict | None:
    """The last complete JSON line of a log that may be large and may end in a torn line."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(row, dict):
            return row
    return None


# --- the sweep folder -------------------------------------------------------------------------


def check_layout(sweep_dir: Path) -> None:
    """Refuses a results folder written by another layout version (before anything is written)."""
    try:
        marker = load_json(sweep_dir / MARKER_FILE)
    except MalformedFile as e:
        raise UserError(f"{sweep_dir / MARKER_FILE}: {e}: restore it or move the folder away") from None
    if marker is not None and marker.get("store_version") != STORE_VERSION:
        raise UserError(
            f"{sweep_dir} was written by an incompatible version (store_version "
            f"{marker.get('store_version')!r}, this tool reads {STORE_VERSION}): use that version or move the folder away"
        )
    runs = sweep_dir / "runs"
    if marker is None and runs.is_dir() and any(runs.iterdir()):
        raise UserError(
            f"{sweep_dir} has runs but no {MARKER_FILE}: it was not written by this tool; move it away"
        )


def init_layout(sweep_dir: Path) -> None:
    check_layout(sweep_dir)
    if not (sweep_dir / MARKER_FILE).exists():
        atomic.write_json(
            sweep_dir / MARKER_FILE, {"store_version": STORE_VERSION, "spec_version": SPEC_VERSION}
        )


def ensure_run(run_dir: Path, spec: RunSpec) -> None:
    """Creates the run folder with its spec; an existing spec.yaml of the same run is brought up to
    date (only settings outside the run key can differ: micro-batch, checkpoint cadence, ...), so a
    run resumed on other hardware trains with the settings planned for it."""
    path = run_dir / SPEC_FILE
    text = spec.to_yaml()
    if path.exists():
        try:
            same_run = load_spec(path).run_key == spec.run_key
        except UserError:  # damaged or another run's: left for the trainer and collect to report
            return
        if not same_run or path.read_text() == text:
            return
    atomic.write_text(path, text)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a (re)submitted run will resume rather than start from step 0."""
    return any((run_dir / CHECKPOINT_DIR).glob("step-*.pt"))


def load_run_spec(run_dir: Path) -> RunSpec:
    return load_spec(run_dir / SPEC_FILE)


def run_state(run_dir: Path) -> str:
    """result.json decides ended runs; a folder whose result was deleted must run again."""
    result = read_result(run_dir)
    if result is not None:
        return result.status
    state = read_status(run_dir).state
    return "planned" if state in ENDED else state


@dataclass(frozen=True)
class Progress:
    step: int
    steps: int
    last_loss: float | None
    flops_done: float  # training FLOPs so far under the spec's counting convention


def run_progress(run_dir: Path, spec: RunSpec) -> Progress:
    result = read_result(run_dir)
    if result is not None:
        # a diverged run stopped early: count what it spent; a done run spent its budget
        spent = _flops(result.flops, spec) if result.status == "diverged" else spec.budget_flops
        return Progress(result.steps, spec.steps, result.val_loss, spent)
    row = last_jsonl(run_dir / "metrics.jsonl")
    if row is None:
        return Progress(0, spec.steps, None, 0.0)
    step, loss = row.get("step"), _number(row.get("train_loss"))
    return Progress(step if type(step) is int else 0, spec.steps, loss, _flops(row.get("flops"), spec))


def _number(x: Any) -> float | None:
    """A number of a log line (damaged lines hold anything), else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _flops(flops: Any, spec: RunSpec) -> float:
    return (_number(flops.get(spec.flops_convention)) if isinstance(flops, dict) else None) or 0.0


def write_plan_manifest(sweep_dir: Path, run_keys: list[str]) -> None:
    """Records which run folders the sweep's current config plans; folders of an earlier config
    stay on disk (nothing is deleted) but collect marks them `in_plan = false` and fits skip them."""
    atomic.write_json(sweep_dir / PLAN_FILE, {"run_keys": sorted(run_keys)})


def read_plan_manifest(sweep_dir: Path) -> set[str] | None:
    """The run keys of the latest plan; None when plan.json is missing or damaged (every folder
    then counts, as before plan manifests existed)."""
    try:
        manifest = load_json(sweep_dir / PLAN_FILE)
    except MalformedFile:
        return None
    keys = None if manifest is None else manifest.get("run_keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return None
    return set(keys)
