"""FLOPs and parameter accounting against closed forms and the study's released counts."""

import csv
from pathlib import Path

import pytest

from scaling.errors import UserError
from scaling.flops import (
    CONVENTIONS,
    ModelShape,
    conditioning_flops_per_seq,
    fwd_flops_per_seq,
    params_non_embedding,
    params_total,
    train_flops_per_seq,
)
from scaling.ladder import load_ladder

REFERENCE = list(csv.DictReader(open(Path(__file__).parent / "reference_flops.csv")))


def shape_of(row) -> ModelShape:
    return ModelShape(
        row["name"],
        int(row["d_model"]),
        int(row["n_layers"]),
        int(row["n_heads"]),
        int(row["vocab"]),
        int(row["seq_len"]),
    )


@pytest.mark.parametrize("row", REFERENCE, ids=[r["name"] for r in REFERENCE])
def test_params_match_the_study_release(row):
    # The study released totals rounded to ~5-6 significant figures; non-embedding = total - V*d.
    shape = shape_of(row)
    assert params_total(shape) == pytest.approx(int(row["total_params"]), rel=5e-5, abs=0)
    assert params_non_embedding(shape) == pytest.approx(int(row["non_embed_params"]), rel=5e-5, abs=0)
    assert params_total(shape) - params_non_embedding(shape) == shape.vocab * shape.d_model


@pytest.mark.parametrize("row", REFERENCE, ids=[r["name"] for r in REFERENCE])
def test_reference_flops_is_the_study_formula(row):
    shape = shape_of(row)
    d, L, V, T = shape.d_model, shape.n_layers, shape.vocab, shape.seq_len
    assert fwd_flops_per_seq(shape, "reference") == 2 * T * (12 * L * d * d + d * V)
    # the released figures add small terms of the real backbone: within 0.3%
    assert fwd_flops_per_seq(shape, "reference") == pytest.approx(float(row["fwd_flops_per_seq"]), rel=3e-3)


def test_small_shape_params_by_hand():
    # d=16, 1 layer, V=10, conditioning width c = 16, sinusoid 32.
    s = ModelShape("t", 16, 1, 2, 10, 8)
    d, c, V = 16, 16, 10
    block = 4 * d * d + (8 * d * d + 4 * d + d) + 2 * d + (c * 6 * d + 6 * d)
    time = 2 * c * c + c + c * c + c
    final = d + (c * 2 * d + 2 * d) + (d * V + V)
    assert params_total(s) == V * d + block + time + final
    assert params_non_embedding(s) == block + time + final


def test_conventions_relations():
    s = ModelShape("t", 64, 2, 2, 257, 128)
    ref = fwd_flops_per_seq(s, "reference")
    att = fwd_flops_per_seq(s, "attention", "mdlm-ce")
    attention_products = 4 * 128 * 128 * 64 * 2
    assert att - ref > attention_products  # plus the per-sequence conditioning matmuls
    assert att - ref - attention_products < 0.01 * ref
    # causal halves the attention products for causal arms only
    assert fwd_flops_per_seq(s, "causal", "mdlm-ce") == att
    assert fwd_flops_per_seq(s, "causal", "ar") == att - attention_products // 2
    assert fwd_flops_per_seq(s, "causal", "eso") == att - attention_products // 2
    assert fwd_flops_per_seq(s, "6N") == 2 * 128 * params_non_embedding(s)
    for c in CONVENTIONS:
        assert train_flops_per_seq(s, c, "ar") == 3 * fwd_flops_per_seq(s, c, "ar")


def test_attention_share_matches_design_ratio():
    # docs/methods.md ("FLOPs and parameters"): attention is T/(6d) of the weight matmuls per layer: 1.33x at d=256, T=2048.
    for d in (256, 2176):
        s = ModelShape("t", d, 3, 4, 1, 2048)
        attention = (
            fwd_flops_per_seq(s, "attention")
            - fwd_flops_per_seq(s, "reference")
            - conditioning_flops_per_seq(s)
        )
        blocks = fwd_flops_per_seq(s, "reference") - 2 * 2048 * d * 1  # minus the (V=1) head
        assert attention / blocks == pytest.approx(2048 / (6 * d))


def test_paper_ladder_is_the_study_ladder():
    shared = list(csv.DictReader(open(Path(__file__).parent / "reference_flops.csv")))
    ladder = load_ladder("paper")
    assert [(s.name, s.d_model, s.n_layers, s.n_heads) for s in ladder] == [
        (r["name"], int(r["d_model"]), int(r["n_layers"]), int(r["n_heads"])) for r in shared
    ]


@pytest.mark.parametrize(
    "bad", [dict(d_model=0), dict(n_heads=3), dict(seq_len=-1), dict(vocab=0), dict(d_model=24, n_heads=8)]
)
def test_bad_shapes_are_user_errors(bad):
    kwargs = dict(name="x", d_model=16, n_layers=1, n_heads=2, vocab=10, seq_len=8) | bad
    with pytest.raises(UserError):
        ModelShape(**kwargs)


def test_unknown_convention():
    with pytest.raises(UserError, match="unknown FLOPs convention"):
        fwd_flops_per_seq(ModelShape("t", 16, 1, 2, 10, 8), "kaplan")
