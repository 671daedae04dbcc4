"""The Pareto frontier: flags on a hand-made table, the choice of models, the metrics, and
`scaling pareto` end to end on tiny models trained by the real loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_spec

from analysis.pareto import (
    COLUMNS,
    Run,
    build_table,
    choose_models,
    default_judge,
    pareto_flags,
    unigram_entropy,
)
from scaling import cli
from scaling.errors import UserError
from scaling.flops import ModelShape
from trainer import data
from trainer.checkpoint import load_final_model
from trainer.frontier import judge_nll
from trainer.loop import train

ARMS = ("ar", "mdlm-ce", "duo", "eso")
SIZES = (ModelShape("d16-l1", 16, 1, 2, 258, 32), ModelShape("d8-l1", 8, 1, 2, 258, 32))


def test_pareto_flags_on_a_hand_made_table():
    #            A    B    C    D    E (= A)  F    G        H
    tps = [100, 50, 50, 200, 100, 20, 300, 10]
    ppl = [10, 8, 12, 30, 10, 8, math.nan, 5]
    expected = [True, True, False, True, True, False, False, True]
    # C is dominated by A; F by B (faster at equal perplexity); a duplicate does not dominate its
    # twin; G has no perplexity; H is the slowest but the best
    assert pareto_flags(tps, ppl).tolist() == expected
    assert pareto_flags([], []).tolist() == []
    assert pareto_flags([1.0], [2.0]).tolist() == [True]


def test_table_flags_the_overall_and_the_per_arm_frontier():
    rows = [
        {"arm": "ar", "tokens_per_s": 10.0, "gen_ppl": 5.0},
        {"arm": "ar", "tokens_per_s": 5.0, "gen_ppl": 6.0},  # dominated by the first
        {"arm": "duo", "tokens_per_s": 100.0, "gen_ppl": 20.0},
        {"arm": "duo", "tokens_per_s": 8.0, "gen_ppl": 7.0},  # dominated by ar's first, not within duo
    ]
    table = build_table(rows, {"sweep": "x"})
    assert table.column_names == [n for n, _ in COLUMNS]
    assert table.column("pareto").to_pylist() == [True, False, True, False]
    assert table.column("pareto_arm").to_pylist() == [True, False, True, True]
    assert table.schema.metadata[b"scaling.pareto_schema_version"] == b"1"


def test_unigram_entropy_is_the_mean_entropy_of_each_samples_histogram():
    tokens = np.array([[0, 0, 1, 1], [3, 3, 3, 3], [0, 1, 2, 3]])
    assert unigram_entropy(tokens) == pytest.approx((math.log(2) + 0 + math.log(4)) / 3, abs=1e-12)


def _run(arm: str, budget: float, params: int, loss: float) -> Run:
    return Run(f"{arm}-{params}-{budget:g}", arm, budget, f"m{params}", params, loss, Path("."))


def test_models_come_from_the_fit_nearest_in_log_n_else_the_lowest_loss():
    runs = [_run("mdlm-ce", 1e9, n, loss) for n, loss in [(400_000, 3.0), (700_000, 3.1), (100_000, 3.5)]]
    runs += [_run("mdlm-ce", 3e9, n, loss) for n, loss in [(400_000, 2.9), (700_000, 2.8)]]
    runs += [_run("ar", 1e9, 100_000, 3.0), _run("ar", 3e9, 200_000, 2.5), _run("ar", 3e9, 300_000, 2.6)]
    cell = {"budget_flops": 1e9, "n_star": 540_000, "valid": True, "flags": []}
    fits = {
        "arms": {
            "mdlm-ce": {
                "cells": [
                    cell,
                    {"budget_flops": 3e9, "n_star": None, "valid": False, "flags": ["non-convex"]},
                ]
            }
        }
    }
    choices = {(c.arm, c.budget): c for c in choose_models(runs, fits)}
    # 540k is nearer 400k in N but nearer 700k in ln N
    assert choices["mdlm-ce", 1e9].run.params == 700_000 and choices["mdlm-ce", 1e9].from_fit
    assert choices["mdlm-ce", 3e9].run.params == 700_000  # lowest val_loss
    assert "non-convex" in choices["mdlm-ce", 3e9].selection and not choices["mdlm-ce", 3e9].from_fit
    assert "arm not in fits.json" in choices["ar", 3e9].selection
    assert [(c.arm, c.budget) for c in choose_models(runs, fits)] == [
        ("ar", 1e9),
        ("ar", 3e9),
        ("mdlm-ce", 1e9),
        ("mdlm-ce", 3e9),
    ]
    assert all("no fits.json" in c.selection for c in choose_models(runs, None))
    judge = default_judge(choose_models(runs, None))
    assert (judge.arm, judge.budget, judge.run.params) == ("ar", 3e9, 200_000)
    with pytest.raises(UserError, match="--judge"):
        default_judge(choose_models(runs[:5], None))


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, byte_shards) -> Path:
    """results/pt/runs/ with 4 arms x 2 sizes of d<=16, 1-layer, T=32 models, 40 steps each."""
    root = tmp_path_factory.mktemp("results")
    for arm in ARMS:
        for shape in SIZES:
            spec = tiny_spec(
                byte_shards, arm=arm, steps=40, model=shape, **{"eval.every": 40, "optim.lr": 1e-2}
            )
            train(spec, root / "pt" / "runs" / spec.run_key, log=lambda m: None)
    return root


def _pareto(monkeypatch, root: Path, *extra: str) -> int:
    monkeypatch.setenv("SCALING_RESULTS", str(root))
    return cli.main(["pareto", "pt", "--steps", "2,8", "--batch", "4", "--samples", "8", *extra])


def test_pareto_end_to_end_without_fits(monkeypatch, sweep, capsys):
    assert _pareto(monkeypatch, sweep) == 0
    out = capsys.readouterr().out
    assert "fallback to the lowest val_loss (no fits.json)" in out
    table = pq.read_table(sweep / "pt" / "pareto.parquet")
    assert table.column_names == [n for n, _ in COLUMNS]
    rows = table.to_pylist()
    assert sorted((r["arm"], r["steps"]) for r in rows) == sorted(
        [("ar", 32)] + [(a, s) for a in ARMS[1:] for s in (2, 8)]
    )
    ar = next(r for r in rows if r["arm"] == "ar")
    assert all(r["judge"] == ar["run_key"] for r in rows)  # the only AR budget's chosen model
    for r in rows:
        assert r["samples"] == 8 and r["batch"] == 4 and r["tokens_per_s"] > 0 and r["gen_ppl"] > 1
        assert 0 < r["entropy"] <= math.log(32)
        assert r["device"].startswith("cpu")
    assert (
        table.column("pareto").to_pylist()
        == pareto_flags(
            table.column("tokens_per_s").to_pylist(), table.column("gen_ppl").to_pylist()
        ).tolist()
    )
    assert any(table.column("pareto").to_pylist())
    for ext in ("png", "pdf"):
        assert (sweep / "pt" / "plots" / f"pareto.{ext}").stat().st_size > 1000


def test_pareto_takes_the_fitted_size_and_another_judge(monkeypatch, sweep):
    runs = sorted((sweep / "pt" / "runs").iterdir())
    small = next(p for p in runs if p.name.startswith("ar-d8-l1"))
    large = next(p for p in runs if p.name.startswith("ar-d16-l1"))
    fits = {
        "schema_version": 1,
        "arms": {"ar": {"cells": [{"budget_flops": 1e9, "n_star": 1.0, "valid": True, "flags": []}]}},
    }  # N* below every size
    (sweep / "pt" / "fits").mkdir(exist_ok=True)
    (sweep / "pt" / "fits" / "fits.json").write_text(json.dumps(fits))
    try:
        assert _pareto(monkeypatch, sweep, "--arms", "ar", "--judge", large.name) == 0
    finally:
        (sweep / "pt" / "fits" / "fits.json").unlink()
    (row,) = pq.read_table(sweep / "pt" / "pareto.parquet").to_pylist()
    assert row["run_key"] == small.name and row["selection"].startswith("fit: N* 1")
    assert row["judge"] == large.name


def test_judge_scores_validation_windows_at_the_runs_val_loss(sweep):
    """The AR judge's NLL of its own validation windows is its validation loss, exactly."""
    run = next(p for p in (sweep / "pt" / "runs").iterdir() if p.name.startswith("ar-"))
    spec, model = load_final_model(run)
    shards = data.open_shards(spec.data.shards)
    windows = torch.from_numpy(data.validation_windows(shards.val, spec.data.seq_len, spec.eval.sequences))
    val_loss = json.loads((run / "result.json").read_text())["val_loss"]
    assert judge_nll(model, windows, 3, torch.device("cpu"), torch.no_grad()) == pytest.approx(
        val_loss, abs=1e-5
    )


def test_bad_input_is_a_one_line_error(monkeypatch, sweep, capsys):
    assert _pareto(monkeypatch, sweep, "--steps", "8,x") == 2
    assert "--steps" in capsys.readouterr().err
    mdlm = next(p for p in (sweep / "pt" / "runs").iterdir() if p.name.startswith("mdlm-ce-"))
    assert _pareto(monkeypatch, sweep, "--arms", "ar", "--judge", mdlm.name) == 2
    assert "must be an AR model" in capsys.readouterr().err
    assert _pareto(monkeypatch, sweep, "--arms", "duo", "--judge", "nope") == 2
    assert "neither a run folder" in capsys.readouterr().err
    monkeypatch.setenv("SCALING_RESULTS", str(sweep))
    assert cli.main(["pareto", "absent"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _pareto(monkeypatch, sweep, "--arms", "duo") == 2  # no AR run to judge with
    assert "--judge" in capsys.readouterr().err
