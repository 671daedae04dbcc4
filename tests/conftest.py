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
        256,
        0.2,
        out=tmp_path_factory.mktemp("shards") / "bytes",
        log=lambda s: None,
    )
