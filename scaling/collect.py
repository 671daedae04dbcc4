"""Run folders -> runs.parquet (one row per run) and curves.parquet (one row per run and logged
point: training rows from metrics.jsonl, validation rows from evals.jsonl, told apart by `kind`).

The schema lives here as data (RUNS_COLUMNS, CURVES_COLUMNS) and is documented column by column in
docs/results-schema.md; a test keeps the two in step. A run folder that is incomplete or malformed
becomes a row with status `incomplete` or `malformed`, a `problem` text and a warning: collection
never stops on one bad folder. Rows are built as plain column lists (no per-row pandas) so that
10,000 folders collect in seconds.
"""

from __future__ import annotations

import io
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from scaling import atomic
from scaling.arms import ARMS
from scaling.errors import UserError
from scaling.flops import CONVENTIONS, ModelShape, params_non_embedding, params_total, train_flops_per_seq
from scaling.host import cpu_count
from scaling.spec import RunSpec
from scaling.store import SPEC_FILE, STATES, STATUS_FILE, MalformedFile, RunResult, load_json, load_result

SCHEMA_VERSION = 1  # runs.parquet
# curves.parquet: 2 since its rows include training points (`kind`); version 1 held validation rows only
CURVES_SCHEMA_VERSION = 2
SCHEMA_METADATA_KEY = b"scaling.schema_version"
CURVE_KINDS = ("train", "val")

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = pa.timestamp("us", tz="UTC")
FLOPS_COLUMNS = tuple(f"flops_{c}" for c in CONVENTIONS)

RUNS_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("schema_version", pa.int32()),
    ("run_key", pa.string()),
    ("sweep", pa.string()),
    ("arm", pa.string()),
    ("family", pa.string()),
    ("objective", pa.string()),
    ("model", pa.string()),
    ("d_model", pa.int64()),
    ("n_layers", pa.int64()),
    ("n_heads", pa.int64()),
    ("vocab", pa.int64()),
    ("seq_len", pa.int64()),
    ("params_total", pa.int64()),
    ("params_non_embedding", pa.int64()),
    ("budget_flops", pa.float64()),
    ("flops_convention", pa.string()),
    ("steps", pa.int64()),
    ("tokens", pa.int64()),
    ("global_batch", pa.int64()),
    ("lr", pa.float64()),
    ("seed", pa.int64()),
    *((c, pa.float64()) for c in FLOPS_COLUMNS),
    ("status", pa.string()),
    ("in_plan", pa.bool_()),
    ("val_loss", pa.float64()),
    ("val_loss_stderr", pa.float64()),
    ("val_ppl", pa.float64()),
    ("train_loss", pa.float64()),
    ("steps_done", pa.int64()),
    ("diverged_step", pa.int64()),
    ("wall_s", pa.float64()),
    ("tokens_per_s", pa.float64()),
    ("mfu", pa.float64()),
    ("device", pa.string()),
    ("job_id", pa.string()),
    ("requeues", pa.int64()),
    ("git_sha", pa.string()),
    ("created_at", _TIMESTAMP),
    ("finished_at", pa.string()),
    ("problem", pa.string()),
)

CURVES_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("schema_version", pa.int32()),
    ("run_key", pa.string()),
    ("arm", pa.string()),
    ("budget_flops", pa.float64()),
    ("params_non_embedding", pa.int64()),
    ("kind", pa.string()),
    ("step", pa.int64()),
    ("tokens", pa.int64()),
    *((c, pa.float64()) for c in FLOPS_COLUMNS),
    ("val_loss", pa.float64()),
    ("val_loss_stderr", pa.float64()),
    ("train_loss", pa.float64()),
    ("lr", pa.float64()),
    ("grad_norm", pa.float64()),
    ("tokens_per_s", pa.float64()),
    ("wall_s", pa.float64()),
)
# the values a row of each kind carries beside step, tokens and FLOPs (the others are null)
CURVE_VALUES = {
    "train": ("train_loss", "lr", "grad_norm", "tokens_per_s", "wall_s"),
    "val": ("val_loss", "val_loss_stderr"),
}

# Beside the run states of scaling/store.py, the collector assigns `incomplete` (status.json says
# ended, result.json is missing) and `malformed` (unreadable spec or result).
COLLECTOR_STATES = ("incomplete", "malformed")


@dataclass
class Collection:
    runs: pa.Table
    curves: pa.Table
    warnings: list[str] = field(default_factory=list)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.runs.column("status").to_pylist():
            counts[s] = counts.get(s, 0) + 1
        return dict(sorted(counts.items()))


def _schema(columns, extra: dict[bytes, bytes] | None = None, version: int = SCHEMA_VERSION) -> pa.Schema:
    meta = {SCHEMA_METADATA_KEY: str(version).encode(), **(extra or {})}
    return pa.schema([pa.field(n, t) for n, t in columns], metadata=meta)


class _Bad(Exception):
    """A folder problem: the message becomes the row's `problem` and a warning."""


def _read_log(path: Path) -> list[dict]:
    """The rows of metrics.jsonl or evals.jsonl that have an integer step; a torn last line (kill
    mid-append) or garbage is skipped, as scaling.atomic.read_jsonl does. A training log holds a
    few hundred lines: parsed as one JSON array (one call), line by line only when that fails."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    try:
        parsed = json.loads(b"[" + b",".join(line for line in lines if line.strip()) + b"]")
    except (ValueError, UnicodeDecodeError):
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except (ValueError, UnicodeDecodeError):
                continue
    return [r for r in parsed if isinstance(r, dict) and _int(r.get("step")) is not None]


@lru_cache(maxsize=4096)
def _shape_facts(shape: ModelShape, arm: str) -> tuple[int, int, tuple[float, ...]]:
    """Parameters and training FLOPs per sequence under every convention (shapes repeat across runs)."""
    return (
        params_total(shape),
        params_non_embedding(shape),
        tuple(train_flops_per_seq(shape, c, arm) for c in CONVENTIONS),
    )


def _float(x) -> float | None:
    if type(x) is float:  # the common case, first: collect converts millions of logged values
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _int(x) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _str(x) -> str | None:
    return None if x is None else str(x)


class _Columns:
    """Column lists for both tables, appended to one run folder at a time."""

    def __init__(self) -> None:
        self.runs: dict[str, list] = {n: [] for n, _ in RUNS_COLUMNS}
        self.curves: dict[str, list] = {n: [] for n, _ in CURVES_COLUMNS}

    def add_run(self, row: dict) -> None:
        for name, values in self.runs.items():
            values.append(row.get(name))


def _load_spec(folder: Path) -> tuple[RunSpec, str]:
    """The spec and its run key (from_dict checks a written run_key against the contents, so a
    written key is not hashed a second time)."""
    try:
        text = (folder / SPEC_FILE).read_bytes()
    except FileNotFoundError:
        raise _Bad("spec.yaml is missing") from None
    try:
        d = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        raise _Bad("spec.yaml is not valid YAML") from None
    try:
        spec = RunSpec.from_dict(d)
    except (UserError, TypeError, ValueError, AttributeError) as e:
        raise _Bad(f"spec.yaml is not a valid run spec ({e})") from None
    written = d.get("run_key")
    return spec, written if isinstance(written, str) else spec.run_key


def _status(result: RunResult | None, status: dict | None) -> tuple[str, str | None]:
    """(status, problem): result.json decides when present; status.json otherwise."""
    if result is not None:
        if result.status == "done" and not (result.val_loss is not None and math.isfinite(result.val_loss)):
            return "malformed", "result.json says done but has no finite val_loss"
        return result.status, None
    if status is None:
        return "planned", None
    state = status.get("state")
    if state in ("done", "diverged"):
        return "incomplete", f"status.json says {state} but result.json is missing"
    if state in STATES:
        return state, None
    return "malformed", f"status.json has unknown state {state!r}"


def _collect_one(folder: Path, sweep: str, cols: _Columns) -> str | None:
    """Appends the folder's run row and curve rows; returns a warning or None."""
    row: dict = {"schema_version": SCHEMA_VERSION, "run_key": folder.name, "sweep": sweep}
    try:
        row["created_at"] = datetime.fromtimestamp((folder / SPEC_FILE).stat().st_mtime, tz=timezone.utc)
    except OSError:
        pass
    problems: list[str] = []
    fatal = False  # an unusable spec or result.json: the row is `malformed`; a bad status.json is not
    spec = status = result = None
    try:
        spec, key = _load_spec(folder)
        if spec.arm not in ARMS:
            raise _Bad(f"spec.yaml names unknown arm {spec.arm!r}")
        _spec_columns(spec, row)
        if key != folder.name:
            raise _Bad(f"the folder name differs from the spec's run key {key}")
    except _Bad as e:
        problems.append(str(e))
        fatal = True
    try:
        status = load_json(folder / STATUS_FILE)
    except MalformedFile as e:
        problems.append(str(e))
    try:
        result = load_result(folder)
    except MalformedFile as e:
        problems.append(str(e))
        fatal = True
    state, problem = _status(result, status)
    if problem:
        problems.append(problem)
    row["status"] = "malformed" if fatal else state
    if status is not None:
        row["job_id"] = _str(status.get("job_id"))
        row["requeues"] = _int(status.get("requeues"))
    if result is not None:
        _result_columns(result, row)
    logs = {"train": _read_log(folder / "metrics.jsonl"), "val": _read_log(folder / "evals.jsonl")}
    if row.get("steps_done") is None and logs["val"]:
        row["steps_done"] = logs["val"][-1]["step"]
    row["problem"] = "; ".join(problems) or None
    cols.add_run(row)
    if spec is not None and "arm" in row:
        for kind in CURVE_KINDS:
            _curve_rows(spec, row, kind, logs[kind], cols)
    return None if not problems else f"{folder.name}: {row['status']}: {row['problem']}"


def _spec_columns(spec: RunSpec, row: dict) -> None:
    m = spec.model
    total, non_emb, per_seq = _shape_facts(m, spec.arm)
    info = ARMS.get(spec.arm)
    row.update(
        arm=spec.arm,
        family=info.family if info else None,
        objective=info.objective if info else None,
        model=m.name,
        d_model=m.d_model,
        n_layers=m.n_layers,
        n_heads=m.n_heads,
        vocab=m.vocab,
        seq_len=m.seq_len,
        params_total=total,
        params_non_embedding=non_emb,
        budget_flops=float(spec.budget_flops),
        flops_convention=spec.flops_convention,
        steps=spec.steps,
        tokens=spec.steps * spec.global_batch * m.seq_len,
        global_batch=spec.global_batch,
        lr=float(spec.optim.lr),
        seed=spec.seed,
    )
    for col, f in zip(FLOPS_COLUMNS, per_seq):
        row[col] = f * spec.global_batch * spec.steps


def _result_columns(result: RunResult, row: dict) -> None:
    for key in ("val_loss", "val_loss_stderr", "val_ppl", "train_loss", "wall_s", "tokens_per_s", "mfu"):
        row[key] = getattr(result, key)
    row.update(
        steps_done=result.steps,
        diverged_step=result.diverged_step,
        device=result.device,
        git_sha=result.git_sha,
        finished_at=result.finished_at,
    )


def _curve_rows(spec: RunSpec, run_row: dict, kind: str, logged: list[dict], cols: _Columns) -> None:
    """The rows of one kind, one per logged step (a step logged twice, by a resumed run, keeps its
    last line), appended column by column: a run logs about 200 training rows, and 10,000 runs are
    collected at once."""
    by_step = {e["step"]: e for e in logged}
    steps = sorted(by_step)
    rows = [by_step[s] for s in steps]
    n = len(rows)
    if not n:
        return
    _, _, per_seq = _shape_facts(spec.model, spec.arm)
    tokens_per_step = spec.global_batch * spec.model.seq_len
    c = cols.curves
    for name, value in (
        ("schema_version", CURVES_SCHEMA_VERSION),
        ("run_key", run_row["run_key"]),
        ("arm", spec.arm),
        ("budget_flops", run_row["budget_flops"]),
        ("params_non_embedding", run_row["params_non_embedding"]),
        ("kind", kind),
    ):
        c[name].extend([value] * n)
    c["step"].extend(steps)
    c["tokens"].extend([_int(e.get("tokens")) or s * tokens_per_step for s, e in zip(steps, rows)])
    for k, names in CURVE_VALUES.items():
        for name in names:
            c[name].extend([_float(e.get(name)) for e in rows] if k == kind else [None] * n)
    flops: list[dict] = [f if isinstance(f := e.get("flops"), dict) else {} for e in rows]
    for conv, col, f in zip(CONVENTIONS, FLOPS_COLUMNS, per_seq):
        per_step = f * spec.global_batch
        logged_values = (_float(d.get(conv)) for d in flops)
        c[col].extend([v if v is not None else per_step * s for v, s in zip(logged_values, steps)])


def run_folders(runs_dir: Path) -> list[Path]:
    """Every sub-folder of runs/ except hidden ones (temp files, editor droppings), sorted."""
    with os.scandir(runs_dir) as it:
        return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))


PARALLEL_MIN_FOLDERS = 2000  # below this, starting worker processes costs more than it saves


def _collect_chunk(folders: list[Path], sweep: str) -> tuple[dict, dict, list[str]]:
    cols = _Columns()
    warnings = [w for folder in folders if (w := _collect_one(folder, sweep, cols)) is not None]
    return cols.runs, cols.curves, warnings


def collect(
    runs_dir: Path, sweep: str, workers: int | None = None, plan_keys: set[str] | None = None
) -> Collection:
    """Reads every run folder under runs_dir; never raises for a bad folder. `in_plan` says
    whether a run belongs to the sweep's current plan (`plan_keys`; all runs when None).

    Large sweeps are read by one process per core (parsing YAML dominates); contiguous chunks of
    the sorted folders keep the rows in run_key order.
    """
    if not runs_dir.is_dir():
        raise UserError(f"no run folders: {runs_dir} does not exist; run `scaling sweep {sweep}` first")
    folders = run_folders(runs_dir)
    if not folders:
        raise UserError(f"no run folders in {runs_dir}; run `scaling sweep {sweep}` first")
    if workers is None:
        workers = min(cpu_count(), 8) if len(folders) >= PARALLEL_MIN_FOLDERS else 1
    if workers > 1:
        bounds = np.linspace(0, len(folders), workers + 1).astype(int)
        chunks = [folders[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_collect_chunk, chunks, [sweep] * len(chunks)))
    else:
        parts = [_collect_chunk(folders, sweep)]
    runs_cols = {n: [v for p in parts for v in p[0][n]] for n, _ in RUNS_COLUMNS}
    runs_cols["in_plan"] = [plan_keys is None or k in plan_keys for k in runs_cols["run_key"]]
    curves_cols = {n: [v for p in parts for v in p[1][n]] for n, _ in CURVES_COLUMNS}
    meta = {b"scaling.sweep": sweep.encode()}
    return Collection(
        runs=pa.Table.from_pydict(runs_cols, schema=_schema(RUNS_COLUMNS, meta)),
        curves=pa.Table.from_pydict(
            curves_cols, schema=_schema(CURVES_COLUMNS, meta, version=CURVES_SCHEMA_VERSION)
        ),
        warnings=[w for p in parts for w in p[2]],
    )


def run_curves(folder: Path) -> pa.Table:
    """The curves.parquet rows of one run folder, read straight from it (a run still training too)."""
    cols = _Columns()
    _collect_one(folder, "", cols)
    return pa.Table.from_pydict(cols.curves, schema=_schema(CURVES_COLUMNS, version=CURVES_SCHEMA_VERSION))


def read_curves(path: Path) -> pa.Table:
    """A curves.parquet written by `scaling collect`, checked for its schema version."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run `scaling collect` first") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path} is not a readable Parquet file ({e}): rerun `scaling collect`") from None
    version = (table.schema.metadata or {}).get(SCHEMA_METADATA_KEY)
    if version != str(CURVES_SCHEMA_VERSION).encode() or "kind" not in table.column_names:
        found = version.decode() if version else "none"
        raise UserError(
            f"{path} has curves schema version {found}, not {CURVES_SCHEMA_VERSION} (training points): "
            "rerun `scaling collect`"
        )
    return table


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_collection(collection: Collection, out_dir: Path) -> tuple[Path, Path]:
    """Both files are serialized before either is written, each atomically."""
    runs_bytes, curves_bytes = parquet_bytes(collection.runs), parquet_bytes(collection.curves)
    runs_path, curves_path = out_dir / "runs.parquet", out_dir / "curves.parquet"
    atomic.write_bytes(runs_path, runs_bytes)
    atomic.write_bytes(curves_path, curves_bytes)
    return runs_path, curves_path
