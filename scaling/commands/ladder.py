"""`scaling ladder NAME`: the shapes of a ladder with parameter and FLOPs counts."""

from __future__ import annotations

import argparse

from scaling.errors import UserError
from scaling.flops import CONVENTIONS, fwd_flops_per_seq, params_non_embedding, params_total
from scaling.ladder import available_ladders, load_ladder
from scaling.tables import FORMATS, render

COLUMNS = [
    "name",
    "d_model",
    "n_layers",
    "n_heads",
    "vocab",
    "seq_len",
    "params_total",
    "params_non_embedding",
    *[f"fwd_flops_per_seq_{c}" for c in CONVENTIONS],
]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name", help=f"a ladder in sweeps/ladder/ ({', '.join(available_ladders())}) or a YAML path"
    )
    p.add_argument(
        "--vocab", type=int, default=32001, help="model vocabulary including [MASK] (default 32001)"
    )
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence (default 2048)")
    p.add_argument(
        "--arm",
        default="mdlm-elbo",
        help="arm for the `causal` convention (default mdlm-elbo: bidirectional)",
    )
    p.add_argument("--format", choices=FORMATS, default="table")


def rows(name: str, vocab: int, seq_len: int, arm: str) -> list[dict]:
    if vocab <= 0 or seq_len <= 0:
        raise UserError(f"--vocab and --seq-len must be > 0, got {vocab} and {seq_len}")
    out = []
    for spec in load_ladder(name):
        shape = spec.with_data(vocab, seq_len)
        row = {
            **shape.to_dict(),
            "params_total": params_total(shape),
            "params_non_embedding": params_non_embedding(shape),
        }
        for c in CONVENTIONS:
            row[f"fwd_flops_per_seq_{c}"] = fwd_flops_per_seq(shape, c, arm)
        out.append(row)
    return out


def run(args: argparse.Namespace) -> int:
    print(render(rows(args.name, args.vocab, args.seq_len, args.arm), COLUMNS, args.format))
    return 0
