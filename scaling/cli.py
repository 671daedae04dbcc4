"""The `scaling` command line. Each subcommand lives in scaling/commands/<name>.py and exposes
`configure(parser)` and `run(args) -> int`; modules are imported only when their command runs,
so `scaling --help` stays fast (no torch import)."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from scaling.errors import UserError

# name -> one-line help; the stages in the order data flows through them.
COMMANDS: dict[str, str] = {
    "ladder": "list the model shapes of a ladder with their parameters and FLOPs",
    "plan": "plan an IsoFLOP sweep: one run spec per (arm, budget, model)",
    "prepare": "tokenize a corpus into train/validation shards",
    "train": "train one run spec into a run folder (resumes from its checkpoint)",
    "sweep": "plan, prepare the data and train every run of a sweep (local or SLURM)",
    "status": "show the state of a sweep's runs (--watch: redraw with tokens/s and ETA)",
    "cancel": "cancel a sweep's queued and running jobs",
    "collect": "gather run folders into runs.parquet and curves.parquet",
    "fit": "fit IsoFLOP parabolas, power laws and the parametric law with bootstrap CIs",
    "predict": "predict N*, D*, L*, the shape, steps and GPU-hours at budgets nobody trained",
    "backtest": "hold out each arm's largest budget, predict it from the rest, report the errors",
    "compare": "compute multiplier between any two arms, of one sweep or of two, as a curve with bands",
    "plot": "draw a fit's figures and the training curves, write report.md (--run: one run's curves)",
    "pareto": "measure sampling speed against generative perplexity and plot the frontier",
    "doctor": "show the torch, CUDA, GPUs and kernels a run on this machine would use",
    "preflight": "check a cluster before a sweep: sbatch --test-only and a short job per resource class",
}

EPILOG = """\
typical flow:
  scaling plan tiny                  # what would run
  scaling sweep tiny                 # train everything (cluster=slurm for SLURM)
  scaling collect tiny && scaling fit tiny && scaling plot tiny
Overrides use Hydra syntax, e.g. `scaling plan paper budgets=[6e18,1e19] arms=[mdlm-ce]`."""


def _load(name: str):
    return importlib.import_module(f"scaling.commands.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling",
        description="IsoFLOP scaling-law sweeps for autoregressive and discrete diffusion language models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == only:
            _load(name).configure(p)
    return parser


def _version() -> str:
    from scaling import __version__

    return __version__


FREE_SPACE = {errno.ENOSPC, errno.EDQUOT}


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error, with what to do about it."""
    where = f"{e.filename}: " if e.filename else ""
    what = e.strerror or str(e)
    if e.errno in FREE_SPACE:
        return f"{where}{what}: free space and run the same command again (finished work and checkpoints are kept)"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where}{what}: make the folder writable (or point SCALING_RESULTS/SCALING_DATA elsewhere) and run again"
    return f"{where}{what} (SCALING_DEBUG=1 shows where)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    only = command if command in COMMANDS else None
    parser = build_parser(only)
    args, extra = parser.parse_known_args(argv)
    # Hydra overrides may follow options (`scaling sweep tiny --dry-run cluster=slurm`)
    stray = [a for a in extra if a.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        parser.parse_args(argv)  # reports the unrecognized arguments and exits 2
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_load(args.command).run(args) or 0)
    except UserError as e:
        print(f"scaling {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only or unreachable file system: the machine, not the input
        if os.environ.get("SCALING_DEBUG"):
            raise
        print(f"scaling {args.command}: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
