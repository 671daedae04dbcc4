"""`scaling pareto SWEEP`: sample each arm's compute-optimal model per budget with several step
counts, measure sampling throughput and generative perplexity under an AR judge, and write
results/<sweep>/pareto.parquet and results/<sweep>/plots/pareto.{png,pdf} (analysis/pareto.py;
docs/methods.md describes the measurement and the columns)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from scaling import atomic, paths
from scaling.errors import UserError

DEFAULT_STEPS = "8,16,32,64,128"
FIRST_TOKEN_PREFIX = 10_000_000  # tokens of the train split counted for AR's first-token unigram


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep name: reads results/<sweep>/runs/ and fits/fits.json")
    parser.add_argument(
        "--steps",
        default=DEFAULT_STEPS,
        help=f"comma-separated diffusion step counts (default {DEFAULT_STEPS}); AR always takes T",
    )
    parser.add_argument("--batch", type=int, default=16, help="sequences sampled per call (default 16)")
    parser.add_argument(
        "--samples",
        type=int,
        default=64,
        help="samples per (model, steps) for quality and timing, after one warm-up batch (default 64)",
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    parser.add_argument(
        "--judge",
        help="AR model scoring the samples: a run key of the sweep or an AR run folder "
        "(default: the compute-optimal AR model at the largest budget)",
    )
    parser.add_argument("--arms", help="comma-separated arms to sample (default: every arm with done runs)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")


def _steps(text: str) -> list[int]:
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--steps {text!r}: give comma-separated integers, e.g. 8,16,32") from None
    if not steps or steps[0] < 1:
        raise UserError(f"--steps {text!r}: give step counts >= 1")
    return steps


def _check(args: argparse.Namespace) -> list[int]:
    steps = _steps(args.steps)
    for name in ("batch", "samples"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: give a count >= 1")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p {args.top_p}: give a mass in (0, 1]")
    return steps


def _fits(sweep_dir: Path) -> dict | None:
    from scaling.commands.plot import load_fits

    path = sweep_dir / "fits" / "fits.json"
    return load_fits(path) if path.exists() else None


def _judge_dir(args: argparse.Namespace, runs_dir: Path, choices) -> Path:
    from analysis.pareto import default_judge

    if args.judge is None:
        return default_judge(choices).run.run_dir
    for candidate in (Path(args.judge), runs_dir / args.judge):
        if (candidate / "spec.yaml").exists():
            return candidate
    raise UserError(f"--judge {args.judge}: neither a run folder nor a run key in {runs_dir}")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    return device


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from analysis import pareto
    from scaling.arms import arm_info
    from scaling.collect import parquet_bytes
    from trainer import data
    from trainer.arms import get_arm
    from trainer.checkpoint import load_final_model
    from trainer.loop import autocast_for, device_name
    from trainer.sampling import SampleOptions

    steps_list = _check(args)
    sweep_dir = paths.sweep_dir(args.sweep)
    runs_dir = sweep_dir / "runs"
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir} does not exist: train the sweep first (`scaling sweep {args.sweep}`)")
    runs, notes = pareto.done_runs(runs_dir)
    if args.arms:
        wanted = {arm_info(a.strip()).name for a in args.arms.split(",") if a.strip()}
        runs = [r for r in runs if r.arm in wanted]
    if not runs:
        raise UserError(f"no done runs in {runs_dir}: finish the sweep first (`scaling status {args.sweep}`)")
    fits = _fits(sweep_dir)
    choices = pareto.choose_models(runs, fits)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    for note in notes:
        say(f"note: {note}")
    for c in choices:
        if not c.from_fit:
            say(f"note: {c.arm} at {c.budget:.3g} FLOPs: fallback to the {c.selection}")

    if os.environ.get("SCALING_THREADS"):
        torch.set_num_threads(int(os.environ["SCALING_THREADS"]))
    device = _device(args.device)
    judge_spec, judge = load_final_model(_judge_dir(args, runs_dir, choices), device)
    if arm_info(judge_spec.arm).family != "ar":
        raise UserError(
            f"--judge {judge_spec.run_key} is a {judge_spec.arm} run: the judge must be an AR model"
        )
    judge_precision = autocast_for(judge_spec, device)
    shards = data.open_shards(data.prepare_data(judge_spec.data, log=lambda m: None))
    counts = np.bincount(np.asarray(shards.train[:FIRST_TOKEN_PREFIX]), minlength=judge_spec.model.vocab)
    first_token = torch.from_numpy(counts / counts.sum())
    say(f"judge: {judge_spec.run_key} (val_loss from its run), device: {device_name(device)}")

    rows, sample_len = [], None
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
        for steps in [T] if is_ar else steps_list:
            options = SampleOptions(steps, args.top_p, first_token=first_token if is_ar else None)
            m = pareto.measure_sampling(
                arm,
                model,
                T,
                options,
                args.batch,
                args.samples,
                args.seed,
                device,
                autocast_for(spec, device),
            )
            nll = pareto.judge_nll(judge, m.tokens, args.batch, device, judge_precision)
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
                "batch": args.batch,
                "samples": len(m.tokens),
                "top_p": args.top_p,
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
    n_windows = min(args.samples, shards.val.size // sample_len)
    data_ppl = None
    if n_windows:
        windows = torch.from_numpy(data.validation_windows(shards.val, sample_len, n_windows))
        data_ppl = float(np.exp(pareto.judge_nll(judge, windows, args.batch, device, judge_precision)))
    meta = {
        "sweep": args.sweep,
        "judge": judge_spec.run_key,
        "data_gen_ppl": data_ppl,
        "seed": args.seed,
        "fits": "yes" if fits is not None else "no (fallback: lowest val_loss)",
    }
    table = pareto.build_table(rows, meta)
    out = sweep_dir / "pareto.parquet"
    atomic.write_bytes(out, parquet_bytes(table))
    figures = pareto.plot_frontier(table, sweep_dir / "plots", data_ppl)
    say("")
    say(pareto.format_table(table))
    say(
        "\n* = on the Pareto frontier"
        + (f"; validation text under the judge: gen_ppl {data_ppl:.3f}" if data_ppl else "")
    )
    say(f"wrote {out}")
    for f in figures:
        say(f"wrote {f}")
    return 0
