"""The input of every fit: a runs table (runs.parquet or any parquet with the minimal columns),
validated and reduced to numpy arrays.

Minimal columns: arm, budget_flops, params_non_embedding, tokens, val_loss. With a `status`
column only `done` rows are fitted. The compute coordinate of each run is its achieved training
FLOPs under a counting convention (column flops_<convention>) or its planned budget_flops.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.errors import UserError
from scaling.flops import CONVENTIONS

MINIMAL_COLUMNS = ("arm", "budget_flops", "params_non_embedding", "tokens", "val_loss")
X_CHOICES = ("achieved", "budget")


@dataclass(frozen=True)
class FitData:
    """One row per run; arrays of equal length, sorted by arm, budget and size."""

    arm: np.ndarray  # str
    budget: np.ndarray  # planned budget: the IsoFLOP group of the run
    n: np.ndarray  # non-embedding parameters
    d: np.ndarray  # training tokens
    loss: np.ndarray  # validation loss, nats per token
    compute: np.ndarray  # the x axis: achieved FLOPs (convention) or budget_flops
    run_key: np.ndarray  # str; row numbers when the table has no run_key
    flops: str  # convention name, or "budget" when compute is the planned budget
    source: str

    def __len__(self) -> int:
        return len(self.loss)

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(self.arm.tolist()))

    def take(self, index: np.ndarray) -> FitData:
        return replace(
            self,
            arm=self.arm[index],
            budget=self.budget[index],
            n=self.n[index],
            d=self.d[index],
            loss=self.loss[index],
            compute=self.compute[index],
            run_key=self.run_key[index],
        )

    def of_arm(self, arm: str) -> FitData:
        return self.take(np.flatnonzero(self.arm == arm))


def read_table(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"runs table {path} does not exist: run `scaling collect SWEEP` first or pass --runs FILE"
        )
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path} is not a readable parquet file: {str(e).splitlines()[0]}") from None


def default_convention(table: pa.Table) -> str | None:
    """The sweep's planning convention (column flops_convention), None for a minimal table."""
    if "flops_convention" not in table.column_names:
        return None
    values = {v for v in table.column("flops_convention").to_pylist() if v is not None}
    if len(values) > 1:
        raise UserError(f"the table mixes planning conventions {sorted(values)}: choose one with --flops")
    return values.pop() if values else None


def load_runs(
    path: str | Path,
    flops: str | None = None,
    x: str = "achieved",
    arms: list[str] | None = None,
) -> tuple[FitData, list[str]]:
    """Reads and validates a runs table; returns the data and warnings (rows left out)."""
    table = read_table(path)
    missing = [c for c in MINIMAL_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(
            f"{path} lacks column(s) {', '.join(missing)}; a runs table needs {', '.join(MINIMAL_COLUMNS)}"
        )
    if x not in X_CHOICES:
        raise UserError(f"--x {x!r}: choose from {', '.join(X_CHOICES)}")
    if flops is not None and flops not in CONVENTIONS:
        raise UserError(f"--flops {flops!r}: choose from {', '.join(CONVENTIONS)}")
    warnings: list[str] = []
    convention = flops or default_convention(table)
    if x == "budget" or convention is None:
        if flops is not None and x == "budget":
            warnings.append(
                f"--x budget: the compute axis is the planned budget_flops, --flops {flops} is ignored"
            )
        compute_col, label = "budget_flops", "budget"
    else:
        compute_col, label = f"flops_{convention}", convention
        if compute_col not in table.column_names:
            raise UserError(
                f"--flops {convention} needs column {compute_col}, which {path} lacks: use --x budget"
            )

    if "in_plan" in table.column_names:
        in_plan = np.array([v is not False for v in table.column("in_plan").to_pylist()])
        if not in_plan.all():
            warnings.append(
                f"left out {int((~in_plan).sum())} run(s) not in the sweep's current plan (in_plan = false)"
            )
            table = table.filter(pa.array(in_plan))

    if "status" in table.column_names:
        status = np.array(table.column("status").to_pylist(), dtype=object)
        keep = status == "done"
        if not keep.all():
            left = {s: int((status == s).sum()) for s in dict.fromkeys(status[~keep].tolist())}
            warnings.append(
                "fitting done runs only; left out: " + ", ".join(f"{n} {s}" for s, n in left.items())
            )
        table = table.filter(pa.array(keep))

    arm = np.array(table.column("arm").to_pylist(), dtype=object)
    if any(a is None for a in arm):
        raise UserError(f"{path}: some rows have no arm")
    present = list(dict.fromkeys(arm.tolist()))
    if arms:
        unknown = [a for a in arms if a not in present]
        if unknown:
            raise UserError(
                f"arm(s) {', '.join(unknown)} not in the data; arms present: {', '.join(present)}"
            )
        keep = np.isin(arm, arms)
        table, arm = table.filter(pa.array(keep)), arm[keep]
    if len(arm) == 0:
        raise UserError(f"{path} has no runs to fit (no done runs with a finite val_loss)")
    if "run_key" in table.column_names:
        run_key = np.array(table.column("run_key").to_pylist(), dtype=object)
    else:
        run_key = np.array([f"row {i}" for i in range(table.num_rows)], dtype=object)
    cols = {
        c: _floats(table, c)
        for c in ("budget_flops", "params_non_embedding", "tokens", "val_loss", compute_col)
    }
    for name, values in cols.items():
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise UserError(
                f"{path}: {int(bad.sum())} row(s) have a non-positive or missing {name} "
                f"(first: {run_key[bad][0]}, value {values[bad][0]}); fix or drop them"
            )
    data = FitData(
        arm=arm,
        budget=cols["budget_flops"],
        n=cols["params_non_embedding"],
        d=cols["tokens"],
        loss=cols["val_loss"],
        compute=cols[compute_col],
        run_key=run_key,
        flops=label,
        source=str(path),
    )
    order = np.lexsort((data.n, data.budget, data.arm.astype(str)))
    return data.take(order), warnings


def _floats(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
        raise UserError(f"column {name} must be numeric, it is {col.type}")
    return col.to_numpy(zero_copy_only=False).astype(float)
