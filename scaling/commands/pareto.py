"""`scaling pareto SWEEP`: sample each arm's compute-optimal model per budget with several step
counts, measure sampling throughput and generative perplexity under an AR judge, and write
results/<sweep>/pareto.parquet and results/<sweep>/plots/pareto.{png,pdf}
(scaling.workflows.frontier.measure_frontier; docs/methods.md describes the measurement)."""

from __future__ import annotations

import argparse

from analysis import pareto
from scaling.errors import UserError
from scaling.workflows.frontier import FrontierOptions, measure_frontier

DEFAULT_STEPS = ",".join(map(str, FrontierOptions.steps))


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


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        raise UserError(f"--steps {text!r}: give comma-separated integers, e.g. 8,16,32") from None


def run(args: argparse.Namespace) -> int:
    options = FrontierOptions(
        steps=_steps(args.steps),
        batch=args.batch,
        samples=args.samples,
        top_p=args.top_p,
        judge=args.judge,
        arms=tuple(a.strip() for a in (args.arms or "").split(",") if a.strip()),
        seed=args.seed,
        device=args.device,
    )
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    frontier = measure_frontier(args.sweep, options, say)
    say("")
    say(pareto.format_table(frontier.table))
    data_ppl = frontier.data_gen_ppl
    say(
        "\n* = on the Pareto frontier"
        + (f"; validation text under the judge: gen_ppl {data_ppl:.3f}" if data_ppl else "")
    )
    for path in [frontier.path, *frontier.figures]:
        say(f"wrote {path}")
    return 0
