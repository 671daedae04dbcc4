"""The speed-quality Pareto frontier: which model of each (arm, budget) is sampled, how throughput
and sample quality are measured, the non-dominated points, pareto.parquet and its figure.

- Model choice (pure): the compute-optimal N* of the arm's IsoFLOP cell at that budget
  (fits.json), rounded to the done run of that (arm, budget) nearest in ln N; without a valid
  cell, the run with the lowest val_loss at that budget (the choice records why).
- Throughput and generative perplexity are measured by trainer/frontier.py; the mean over samples
  of the entropy of each sample's token histogram (low entropy flags repetitive samples that a
  judge scores well) is computed here.
- Frontier: a point is non-dominated when no other point has at least its throughput and at most
  its generative perplexity, one of them strictly; `pareto` over all arms, `pareto_arm` within one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from scaling import store
from scaling.arms import ARMS, arm_info
from scaling.collect import run_folders
from scaling.errors import UserError
from scaling.flops import params_non_embedding
from scaling.spec import budget_tag

PARETO_SCHEMA_VERSION = 1
COLUMNS = (
    ("arm", pa.string()),
    ("family", pa.string()),
    ("budget", pa.float64()),
    ("model", pa.string()),
    ("run_key", pa.string()),
    ("params_non_embedding", pa.int64()),
    ("val_loss", pa.float64()),
    ("selection", pa.string()),
    ("steps", pa.int64()),
    ("nfe", pa.float64()),
    ("batch", pa.int64()),
    ("samples", pa.int64()),
    ("top_p", pa.float64()),
    ("tokens_per_s", pa.float64()),
    ("sample_seconds", pa.float64()),
    ("gen_ppl", pa.float64()),
    ("entropy", pa.float64()),
    ("judge", pa.string()),
    ("device", pa.string()),
    ("pareto", pa.bool_()),
    ("pareto_arm", pa.bool_()),
)


# --- which model of each (arm, budget) ---------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A done run of the sweep."""

    run_key: str
    arm: str
    budget: float
    model: str
    params: int  # non-embedding parameters, the N axis of the fits
    val_loss: float
    run_dir: Path


@dataclass(frozen=True)
class Choice:
    arm: str
    budget: float
    run: Run
    selection: str  # how the run was chosen, for the table and the printout
    from_fit: bool


def done_runs(runs_dir: Path) -> tuple[list[Run], list[str]]:
    """Every run folder whose result.json says done with a finite val_loss; notes on unreadable ones."""
    runs, notes = [], []
    for folder in run_folders(runs_dir):
        result = store.read_result(folder)
        loss = None if result is None or result.status != "done" else result.val_loss
        if loss is None or not math.isfinite(loss):
            continue
        try:
            spec = store.load_run_spec(folder)
        except UserError as e:
            notes.append(f"skipped {folder.name}: {e}")
            continue
        runs.append(
            Run(
                spec.run_key,
                spec.arm,
                spec.budget_flops,
                spec.model.name,
                params_non_embedding(spec.model),
                float(loss),
                folder,
            )
        )
    return runs, notes


def _cell(fits: dict | None, arm: str, budget: float) -> tuple[dict | None, str]:
    """The arm's IsoFLOP cell at this budget if it is valid, else None and why not."""
    if fits is None:
        return None, "no fits.json"
    arm_fit = fits.get("arms", {}).get(arm)
    if arm_fit is None:
        return None, "arm not in fits.json"
    cell = next(
        (c for c in arm_fit.get("cells", []) if math.isclose(c["budget_flops"], budget, rel_tol=1e-9)), None
    )
    if cell is None:
        return None, "no IsoFLOP parabola at this budget"
    if not cell.get("valid") or not cell.get("n_star"):
        return None, f"IsoFLOP cell flagged ({', '.join(cell.get('flags') or ['invalid'])})"
    return cell, ""


def choose_models(runs: list[Run], fits: dict | None) -> list[Choice]:
    """One run per (arm, budget) that has done runs, in the order of scaling.arms.ARMS then budget."""
    groups: dict[tuple[str, float], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.arm, r.budget), []).append(r)
    order = {a: i for i, a in enumerate(ARMS)}
    choices = []
    for (arm, budget), group in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0])
    ):
        cell, why = _cell(fits, arm, budget)
        if cell is not None:
            n_star = cell["n_star"]
            run = min(group, key=lambda r: (abs(math.log(r.params / n_star)), r.run_key))
            text = f"fit: N* {n_star:.3g}, nearest trained N {run.params:.3g}"
        else:
            run = min(group, key=lambda r: (r.val_loss, r.run_key))
            text = f"lowest val_loss ({why})"
        choices.append(Choice(arm, budget, run, text, cell is not None))
    return choices


def default_judge(choices: list[Choice]) -> Choice:
    """The compute-optimal AR model at the sweep's largest budget."""
    ar = [c for c in choices if arm_info(c.arm).family == "ar"]
    if not ar:
        raise UserError(
            "the sweep has no done AR run to judge samples with: pass --judge RUN_DIR (an AR run folder)"
        )
    return max(ar, key=lambda c: c.budget)


# --- sample statistics -------------------------------------------------------------------------


def unigram_entropy(tokens: np.ndarray) -> float:
    """Mean over samples [n, T] of the entropy (nats) of each sample's token histogram."""
    tokens = np.asarray(tokens)
    entropies = []
    for row in tokens:
        p = np.unique(row, return_counts=True)[1] / row.size
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


# --- the frontier and the table -----------------------------------------------------------------


def pareto_flags(throughput, ppl) -> np.ndarray:
    """True for points not dominated by another (higher-or-equal throughput and lower-or-equal
    perplexity, one strictly). Points with a missing or non-finite value are never on it."""
    x, y = np.asarray(throughput, dtype=float), np.asarray(ppl, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    flags = ok.copy()
    for i in np.flatnonzero(ok):
        better = ok & (x >= x[i]) & (y <= y[i]) & ((x > x[i]) | (y < y[i]))
        flags[i] = not better.any()
    return flags


def build_table(rows: list[dict], meta: dict[str, object]) -> pa.Table:
    """pareto.parquet from measured rows (every column but the two flags), flags computed here."""
    cols = {name: [r.get(name) for r in rows] for name, _ in COLUMNS}
    cols["pareto"] = pareto_flags(cols["tokens_per_s"], cols["gen_ppl"]).tolist()
    arms = np.array(cols["arm"], dtype=object)
    arm_flags = np.zeros(len(rows), dtype=bool)
    for a in set(cols["arm"]):
        m = arms == a
        arm_flags[m] = pareto_flags(
            np.array(cols["tokens_per_s"], dtype=float)[m], np.array(cols["gen_ppl"], dtype=float)[m]
        )
    cols["pareto_arm"] = arm_flags.tolist()
    metadata = {b"scaling.pareto_schema_version": str(PARETO_SCHEMA_VERSION).encode()}
    metadata.update({f"scaling.{k}".encode(): str(v).encode() for k, v in meta.items()})
    schema = pa.schema([pa.field(n, t) for n, t in COLUMNS], metadata=metadata)
    return pa.Table.from_pydict(cols, schema=schema)


def format_table(table: pa.Table) -> str:
    """The rows as aligned text, frontier points marked with '*'."""
    header = ["", "arm", "budget", "model", "steps", "nfe", "tok/s", "gen_ppl", "entropy"]
    d = table.to_pydict()
    lines = [header]
    for i in range(table.num_rows):
        lines.append(
            [
                "*" if d["pareto"][i] else "",
                d["arm"][i],
                budget_tag(d["budget"][i]),
                d["model"][i],
                str(d["steps"][i]),
                f"{d['nfe'][i]:.3g}",
                f"{d['tokens_per_s'][i]:,.0f}",
                f"{d['gen_ppl'][i]:.3f}",
                f"{d['entropy'][i]:.3f}",
            ]
        )
    widths = [max(len(r[j]) for r in lines) for j in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) if j >= 4 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in lines
    )


# --- the figure --------------------------------------------------------------------------------


def plot_frontier(table: pa.Table, out_dir: Path, data_ppl: float | None = None) -> list[Path]:
    """Throughput (x, log) against generative perplexity (y, log): one colour and marker per arm,
    a line through each arm's own non-dominated points, the overall frontier as a grey staircase
    with ringed points labelled by step count. PNG and PDF."""
    from analysis.plots import ARM_COLOURS, STYLE, WIDTH, log_ticks, plt, save

    d = table.to_pydict()
    x, y = np.array(d["tokens_per_s"], dtype=float), np.array(d["gen_ppl"], dtype=float)
    arms = [a for a in ARMS if a in set(d["arm"])] + sorted(set(d["arm"]) - set(ARMS))
    markers = "osD^vP*X"
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH * 0.75, 3.2), layout="constrained")
        front = np.flatnonzero(np.array(d["pareto"]))
        front = front[np.argsort(x[front])]
        if len(front):  # with throughput >= x, the best perplexity is that of the next frontier point
            ax.step(x[front], y[front], where="pre", color="0.75", lw=4, zorder=1, label="Pareto frontier")
        for k, a in enumerate(arms):
            m = np.array([arm == a for arm in d["arm"]])
            colour, marker = ARM_COLOURS[k % len(ARM_COLOURS)], markers[k % len(markers)]
            ax.plot(x[m], y[m], marker, color=colour, ms=3.5, alpha=0.45, mec="none", zorder=2)
            own = np.flatnonzero(m & np.array(d["pareto_arm"]))
            own = own[np.argsort(x[own])]
            ax.plot(x[own], y[own], "-" + marker, color=colour, ms=4, lw=1.1, zorder=3, label=a)
        for i in front:
            ax.plot(x[i], y[i], "o", mfc="none", mec="k", ms=7, mew=0.8, zorder=4)
            ax.annotate(
                str(d["steps"][i]), (x[i], y[i]), xytext=(3, 3), textcoords="offset points", fontsize=6
            )
        if data_ppl is not None and math.isfinite(data_ppl):
            ax.axhline(data_ppl, color="0.4", ls=":", lw=0.8, label="validation data")
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_ticks(ax.xaxis)  # throughput in powers of ten, as every figure's log axes
        log_ticks(ax.yaxis, plain=True)  # plain numbers: perplexities span about a decade
        first = {k: (v[0] if v else "-") for k, v in d.items()}
        ax.set_xlabel(f"sampling throughput (tokens/s; batch {first['batch']}, {first['device']})")
        ax.set_ylabel("generative perplexity")
        ax.set_title(f"judge: {first['judge']}", fontsize=6.5)
        fig.legend(loc="outside right upper")
        return save(fig, out_dir, "pareto")
