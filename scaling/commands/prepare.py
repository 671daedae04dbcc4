"""`scaling prepare [SWEEP [overrides]] | [--corpus ... --tokenizer ...]`: tokenize a corpus into
sharded token files with N worker processes (docs/data.md). Idempotent and resumable: a prepared
folder is reported, not rebuilt; an interrupted one is completed. With a SWEEP whose cluster is
SLURM, the preparation runs as its own job; `--dry-run` reports files, bytes, estimated tokens and
time with N workers instead."""

from __future__ import annotations

import argparse

from scaling.errors import UserError

DEFAULTS = {
    "corpus": "shakespeare",
    "tokenizer": "bytes",
    "vocab_size": None,
    "val_fraction": None,  # 0.07, or 0 with --val-files
    "val_files": "",
    "text_field": "text",
}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", help="prepare the data of this sweep config (name or YAML path)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the sweep, e.g. data.tokenizer=bpe")
    p.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="prepare the data of every sweep of the combinations, e.g. -m data.vocab_size=512,1024",
    )
    p.add_argument(
        "--corpus",
        help="shakespeare (bundled, default), a .txt/.jsonl[.gz|.zst]/.parquet file, a folder or glob of them, "
        "or a Hugging Face dataset saved to disk",
    )
    p.add_argument("--tokenizer", help="bytes (default), bpe (trained on the corpus), hf:PATH or spm:PATH")
    p.add_argument(
        "--vocab-size", type=int, help="tokenizer ids with the end-of-document id (bytes 257, bpe 4096)"
    )
    p.add_argument(
        "--val-fraction", type=float, help="share of the documents held out by hash (default 0.07)"
    )
    p.add_argument("--val-files", help="a validation corpus (file, folder or glob) instead of --val-fraction")
    p.add_argument("--text-field", help="the JSON field or column holding the text (default text)")
    p.add_argument(
        "--out", help="prepared folder (default: $SCALING_DATA/<corpus>-<tokenizer><vocab>-<hash>)"
    )
    p.add_argument(
        "--workers", type=int, default=0, help="tokenizer processes (default: the cores available)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="report files, bytes, estimated tokens and time with --workers processes; prepare nothing",
    )


def run(args: argparse.Namespace) -> int:
    from scaling.spec import data_folder
    from scaling.workflows.prepare import estimate_for, prepare_for_sweep
    from trainer import data

    if args.workers < 0:
        raise UserError(f"--workers must be >= 0 (0: the cores available), got {args.workers}")
    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if args.sweep:
        if given or args.out:
            raise UserError(
                "give either a SWEEP (change its data with overrides like data.vocab_size=512) or --corpus/--tokenizer options, not both"
            )
        from dataclasses import replace

        from scaling.config import load_sweeps

        sweeps = load_sweeps(args.sweep, args.overrides, multirun=args.multirun)
        configs: dict = {}  # sweeps that differ elsewhere share their data
        for cfg in sweeps:
            if args.workers:
                cfg.data = replace(cfg.data, workers=args.workers)
            configs.setdefault(data_folder(cfg.data), cfg)
        if args.dry_run:
            return _dry_run(
                [(c.data, data_folder(c.data)) for c in configs.values()], args.workers, estimate_for
            )
        folders = [prepare_for_sweep(cfg) for cfg in configs.values()]
    else:
        if args.overrides or args.multirun:
            raise UserError(
                f"unexpected arguments {' '.join(args.overrides) or '-m'}: overrides and -m need a SWEEP"
            )
        fields = DEFAULTS | given
        if fields["val_fraction"] is None:
            fields["val_fraction"] = 0.0 if fields["val_files"] else 0.07
        if fields["vocab_size"] is None:
            from trainer.tokenizers import default_vocab_size

            fields["vocab_size"] = default_vocab_size(fields["tokenizer"])
        source = data.Source(**fields)
        source.check()
        if args.dry_run:
            from pathlib import Path

            out = Path(args.out) if args.out else data_folder(source)
            return _dry_run([(source, out)], args.workers, estimate_for)
        folders = [data.prepare(**fields, out=args.out, workers=args.workers)]
    for folder in folders:
        train, val = (data.read_sidecar(folder, s) for s in data.SPLITS)
        print(
            f"{folder}: {train['tokenizer']} vocab {train['vocab_size']} (end-of-document {train['eos_id']}), "
            f"train {train['tokens']:,} tokens ({train['documents']:,} documents), "
            f"val {val['tokens']:,} tokens ({val['documents']:,} documents)"
        )
    return 0


def _dry_run(items, workers: int, estimate_for) -> int:
    for d, folder in items:
        e = estimate_for(d, workers, folder)
        minutes = e.seconds / 60
        print(
            f"{folder}: {e.files} files, {e.bytes / 1e9:.3g} GB in {e.pieces} pieces ({e.done} already prepared); "
            f"~{e.tokens:.3g} tokens; {e.tokens_per_s:,.0f} tokens/s per worker on a "
            f"{e.sample_chars / 1e6:.3g} M-character sample: ~{minutes:.3g} min with {e.workers} workers"
        )
    return 0
