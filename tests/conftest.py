"""Shared fixtures: a small deterministic text corpus and its byte-level shards."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = "the of and to a in that is was he for it with as his on be at by I this had not are but from".split()


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    """A folder of 12 pseudo-English .txt documents (~60k characters), fixed by a seed."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(12):
        lines = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
            for _ in range(120)
        ]
        (folder / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def byte_shards(tmp_path_factory, text_corpus) -> Path:
    from trainer.data import prepare

    return prepare(
        str(text_corpus),
        "bytes",
        257,  # 256 bytes and the end-of-document id
        0.2,
        out=tmp_path_factory.mktemp("shards") / "bytes",
        log=lambda s: None,
    )


def tiny_spec(shards: Path, arm: str = "mdlm-elbo", steps: int = 6, **changes):
    """A RunSpec of a d=16, 1-layer, T=32 model on `shards` (byte-level); `changes` replace fields
    (optim.*, eval.* and model.* by dotted names, e.g. **{"optim.lr": 1e6})."""
    from dataclasses import replace

    from scaling.flops import ModelShape
    from scaling.spec import DataSpec, EvalSpec, OptimSpec, RunSpec
    from trainer.data import read_sidecar

    ident = read_sidecar(shards)["identity"]

    parts = {
        "model": ModelShape("d16-l1", 16, 1, 2, 258, 32),
        "optim": OptimSpec(lr=3e-3, min_lr=3e-4, warmup_steps=2),
        "data": DataSpec(
            ident["corpus"], ident["tokenizer"], ident["vocab_size"], 32, ident["val_fraction"], str(shards)
        ),
        "eval": EvalSpec(every=3, sequences=8, t_per_seq=2),
    }
    top = {"budget_flops": 1e9, "flops_convention": "attention", "global_batch": 4}
    for key, value in changes.items():
        group, _, name = key.partition(".")
        if name:
            parts[group] = replace(parts[group], **{name: value})
        elif key in parts:
            parts[key] = value
        else:
            top[key] = value
    return RunSpec(arm=arm, steps=steps, **parts, **top)
