"""`scaling prepare [SWEEP [overrides]] | [--corpus ... --tokenizer ...]`: tokenize a corpus into
train/validation shards (idempotent: a prepared folder is reported, not rebuilt)."""

from __future__ import annotations

import argparse

from scaling.errors import UserError

DEFAULTS = {"corpus": "shakespeare", "tokenizer": "bytes", "vocab_size": None, "val_fraction": 0.05}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", help="prepare the data of this sweep config (name or YAML path)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the sweep, e.g. data.tokenizer=bpe")
    p.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="prepare the data of every sweep of the combinations, e.g. -m data.vocab_size=512,1024",
    )
    p.add_argument("--corpus", help="shakespeare (bundled, default), a .txt file or a folder of .txt files")
    p.add_argument("--tokenizer", help="bytes (default), bpe (trained on the corpus), hf:PATH or spm:PATH")
    p.add_argument("--vocab-size", type=int, help="tokenizer vocabulary without [MASK] (bytes 256, bpe 4096)")
    p.add_argument(
        "--val-fraction", type=float, help="share of the corpus held out by document (default 0.05)"
    )
    p.add_argument("--out", help="shard folder (default: $SCALING_DATA/<corpus>-<tokenizer><vocab>-<hash>)")


def run(args: argparse.Namespace) -> int:
    from trainer import data

    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if args.sweep:
        if given or args.out:
            raise UserError(
                "give either a SWEEP (change its data with overrides like data.vocab_size=512) or --corpus/--tokenizer options, not both"
            )
        from scaling.config import load_sweeps

        sweeps = load_sweeps(args.sweep, args.overrides, multirun=args.multirun)
        configs: dict = {}  # sweeps that differ elsewhere share their data
        for cfg in sweeps:
            d = cfg.data
            configs.setdefault((d.corpus, d.tokenizer, d.vocab_size, d.val_fraction), d)
        folders = [data.prepare_data(d) for d in configs.values()]
    else:
        if args.overrides or args.multirun:
            raise UserError(
                f"unexpected arguments {' '.join(args.overrides) or '-m'}: overrides and -m need a SWEEP"
            )
        fields = DEFAULTS | given
        folders = [data.prepare(**fields, out=args.out)]
    for folder in folders:
        train, val = (data.read_sidecar(folder, s) for s in data.SPLITS)
        print(
            f"{folder}: {train['tokenizer']} vocab {train['vocab_size']}, train {train['tokens']:,} tokens "
            f"({train['documents']} documents), val {val['tokens']:,} tokens ({val['documents']} documents)"
        )
    return 0
