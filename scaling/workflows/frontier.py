"""The speed-quality frontier of a sweep, as a function (`scaling pareto` is its adapter).

    result = measure_frontier("tiny", FrontierOptions(steps=(8, 16, 32)))
    result.table        # pyarrow table of pareto.parquet (analysis/pareto.py: COLUMNS)

Per (arm, budget) the compute-optimal done run is sampled at each step count (AR: one pass of T),
throughput and generative perplexity under an AR judge are measured (trainer/frontier.py), the
non-dominated points are flagged, and results/<sweep>/pareto.parquet and plots/pareto.{png,pdf}
are written (docs/methods.md describes the measurement and the columns).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from analysis import pareto
from analysis.report import load_fits
from scaling import atomic, paths
from scaling.arms import arm_info
from scaling.collect import parquet_bytes
from scaling.errors import UserError
from trainer import data
from trainer.accelerator import autocast_for, device_name, resolve_device
from trainer.arms import get_arm
from trainer.checkpoint import load_final_model
from trainer.frontier import judge_nll, measure_sampling
from trainer.sampling import SampleOptions

FIRST_TOKEN_PREFIX = 10_000_000  # tokens of the train split counted for AR's first-token unigram


@dataclass(frozen=True)
class FrontierOptions:
    steps: tuple[int, ...] = (8, 16, 32, 64, 128)  # diffusion step counts; AR always takes T
    batch: int = 16  # sequences sampled per call
    samples: int = 64  # per (model, steps), after one warm-up batch
    top_p: float = 1.0
    judge: str | None = None  # a run key or AR run folder; None: the compute-optimal AR at the largest budget
    arms: tuple[str, ...] = ()  # () : every arm with done runs
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        if not self.steps or min(self.steps) < 1:
            raise UserError(f"steps {list(self.steps)}: give step counts >= 1")
        for name in ("batch", "samples"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} {getattr(self, name)}: give a count >= 1")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p}: give a mass in (0, 1]")
        for arm in self.arms:
            arm_info(arm)


@dataclass
class Frontier:
    table: pa.Table
    path: Path  # pareto.parquet
    figures: list[Path] = field(default_factory=list)
    data_gen_ppl: float | None = None  # the judge's perplexity on validation text


def measure_frontier(sweep: str, options: FrontierOptions, say: Callable[[str], None] = print) -> Frontier:
    sweep_dir = paths.sweep_dir(sweep)
    runs_dir = sweep_dir / "runs"
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir} does not exist: train the sweep first (`scaling sweep {sweep}`)")
    runs, notes = pareto.done_runs(runs_dir)
    if options.arms:
        runs = [r for r in runs if r.arm in options.arms]
    if not runs:
        raise UserError(f"no done runs in {runs_dir}: finish the sweep first (`scaling status {sweep}`)")
    fits_path = sweep_dir / "fits" / "fits.json"
    fits = load_fits(fits_path) if fits_path.exists() else None
    choices = pareto.choose_models(runs, fits)
    for note in notes:
        say(f"note: {note}")
    for c in choices:
        if not c.from_fit:
            say(f"note: {c.arm} at {c.budget:.3g} FLOPs: fallback to the {c.selection}")

    if os.environ.get("SCALING_THREADS"):
        torch.set_num_threads(int(os.environ["SCALING_THREADS"]))
    device = resolve_device(options.device)
    judge_spec, judge = load_final_model(_judge_dir(options.judge, runs_dir, choices), device)
    if arm_info(judge_spec.arm).family != "ar":
        raise UserError(
            f"--judge {judge_spec.run_key} is a {judge_spec.arm} run: the judge must be an AR model"
        )
    judge_precision = autocast_for(judge_spec.precision, device)
    shards = data.open_shards(data.prepare_data(judge_spec.data, log=lambda m: None))
    counts = np.bincount(np.asarray(shards.train[:FIRST_TOKEN_PREFIX]), minlength=judge_spec.model.vocab)
    first_token = torch.from_numpy(counts / counts.sum())
    say(f"judge: {judge_spec.run_key} (val_loss from its run), device: {device_name(device)}")

    rows: list[dict] = []
    sample_len = 0  # the samples' length: the first model's seq_len
    for c in choices:
        spec, model = load_final_model(c.run.run_dir, device)
        mine, theirs = spec.data, judge_spec.data
        if (mine.corpus, mine.tokenizer, mine.vocab_size) != (
            theirs.corpus,
            theirs.tokenizer,
            theirs.vocab_size,
        ):
            raise UserError(
                f"{spec.run_key} and the judge {judge_spec.run_key} use different data or tokenizers: "
                "choose a judge trained on the same data spec (--judge)"
            )
        T = spec.model.seq_len
        sample_len = sample_len or T
        if judge_spec.model.seq_len < T:
            raise UserError(
                f"the judge's seq_len {judge_spec.model.seq_len} is shorter than the samples' {T}: "
                "choose a judge with a longer context (--judge)"
            )
        arm = get_arm(spec.arm, spec.model.vocab)
        is_ar = arm_info(spec.arm).family == "ar"
        for steps in [T] if is_ar else sorted(set(options.steps)):
            sample = SampleOptions(steps, options.top_p, first_token=first_token if is_ar else None)
            m = measure_sampling(
                arm,
                model,
                T,
                sample,
                options.batch,
                options.samples,
                options.seed,
                device,
                autocast_for(spec.precision, device),
            )
            nll = judge_nll(judge, m.tokens, options.batch, device, judge_precision)
            row = {
                "arm": c.arm,
                "family": arm_info(c.arm).family,
                "budget": c.budget,
                "model": c.run.model,
                "run_key": c.run.run_key,
                "params_non_embedding": c.run.params,
                "val_loss": c.run.val_loss,
                "selection": c.selection,
                "steps": steps,
                "nfe": m.nfe,
                "batch": options.batch,
                "samples": len(m.tokens),
                "top_p": options.top_p,
                "tokens_per_s": m.tokens_per_s,
                "sample_seconds": m.seconds,
                "gen_ppl": float(np.exp(nll)),
                "entropy": pareto.unigram_entropy(m.tokens.numpy()),
                "judge": judge_spec.run_key,
                "device": device_name(device),
            }
            rows.append(row)
            say(
                f"{c.arm:9s} {c.run.model:10s} {c.budget:.3g} FLOPs  steps {steps:4d}  {m.tokens_per_s:10,.0f} tok/s  "
                f"gen_ppl {row['gen_ppl']:8.3f}  entropy {row['entropy']:.3f}"
            )
        del model

    # the judge's perplexity on validation text of the samples' length: the reference level of the plot
    n_windows = min(options.samples, shards.val.size // sample_len) if sample_len else 0
    data_ppl = None
    if n_windows:
        windows = torch.from_numpy(data.validation_windows(shards.val, sample_len, n_windows))
        data_ppl = float(np.exp(judge_nll(judge, windows, options.batch, device, judge_precision)))
    meta: dict[str, object] = {
        "sweep": sweep,
        "judge": judge_spec.run_key,
        "data_gen_ppl": data_ppl,
        "seed": options.seed,
        "fits": "yes" if fits is not None else "no (fallback: lowest val_loss)",
    }
    table = pareto.build_table(rows, meta)
    out = sweep_dir / "pareto.parquet"
    atomic.write_bytes(out, parquet_bytes(table))
    figures = pareto.plot_frontier(table, sweep_dir / "plots", data_ppl)
    return Frontier(table, out, figures, data_ppl)


def _judge_dir(judge: str | None, runs_dir: Path, choices) -> Path:
    if judge is None:
        return pareto.default_judge(choices).run.run_dir
    for candidate in (Path(judge), runs_dir / judge):
        if (candidate / "spec.yaml").exists():
            return candidate
    raise UserError(f"--judge {judge}: neither a run folder nor a run key in {runs_dir}")
