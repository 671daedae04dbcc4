"""`scaling train SPEC.yaml [--out RUN_DIR]`: train one run spec into a run folder.

Resumes from the folder's newest checkpoint, returns at once when result.json exists, and after
SIGTERM/SIGUSR2 (or a first Ctrl-C) checkpoints at the next step boundary and exits with
scaling.store.EXIT_PREEMPTED (75) so that an executor can requeue it. Launch under torchrun (or srun with several tasks) for DDP.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling.errors import UserError
from scaling.spec import load_spec
from scaling.store import EXIT_PREEMPTED
from trainer.distributed import is_main
from trainer.loop import Preempted, train


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a run spec YAML (`scaling plan SWEEP --specs DIR` writes them)")
    p.add_argument(
        "--out", help="the run folder (default: the spec's folder when the spec is a run folder's spec.yaml)"
    )


def run(args: argparse.Namespace) -> int:
    spec_path = Path(args.spec)
    spec = load_spec(spec_path)
    if args.out:
        out = Path(args.out)
    elif spec_path.name == "spec.yaml":
        out = spec_path.resolve().parent
    else:
        raise UserError("give the run folder with --out RUN_DIR")
    try:
        result = train(spec, out)
    except Preempted as e:
        if is_main():
            print(f"scaling train: {e}; run the same command to resume", flush=True)
        return EXIT_PREEMPTED
    if not is_main():
        return 0
    if result.status == "done":
        print(f"{out}: done, val_loss {result.val_loss:.4f} +- {result.val_loss_stderr:.4f}")
    else:
        print(f"{out}: diverged at step {result.diverged_step}")
    return 0
