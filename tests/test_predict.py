"""scaling predict and scaling backtest against known synthetic truths, and their command lines."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.backtest import backtest, split_largest
from analysis.fit import FitOptions, fit_runs
from analysis.predict import compute_relation, parametric_optimum, predict
from analysis.synthetic import CHINCHILLA_LAW, isoflop_runs, to_table
from analysis.table import load_runs
from scaling.cli import main


@pytest.fixture(scope="module")
def chinchilla(tmp_path_factory):
    """The published law, 5 budgets x 9 sizes, C = 6ND: noise-free and with 0.5% noise."""
    folder = tmp_path_factory.mktemp("chinchilla")
    pq.write_table(to_table(isoflop_runs(arm="mdlm-ce")), folder / "exact.parquet")
    pq.write_table(to_table(isoflop_runs(arm="mdlm-ce", noise=0.005, seed=3)), folder / "noisy.parquet")
    return folder


def test_parametric_optimum_is_the_closed_form_under_6nd(chinchilla):
    data, _ = load_runs(chinchilla / "exact.parquet")
    relation = compute_relation(data)
    assert relation.intercept == pytest.approx(np.log(6)) and relation.slope == pytest.approx(0, abs=1e-12)
    law = {k: np.array([getattr(CHINCHILLA_LAW, k)]) for k in ("E", "A", "B", "alpha", "beta")}
    for c in (1e19, 1e22, 1e25):
        n, d, loss = (x[0] for x in parametric_optimum(law, c, relation))
        assert n == pytest.approx(CHINCHILLA_LAW.n_opt(c), rel=1e-6)
        assert n * d * 6 == pytest.approx(c, rel=1e-9)
        assert loss == pytest.approx(CHINCHILLA_LAW.loss(n, d), rel=1e-12)
        # it is the minimum along the IsoFLOP curve
        for f in (0.9, 1.1):
            assert loss < CHINCHILLA_LAW.loss(n * f, c / (6 * n * f))


def test_predictions_at_an_untrained_budget_contain_the_truth(chinchilla):
    data, _ = load_runs(chinchilla / "noisy.parquet")
    report = fit_runs(data, FitOptions(n_boot=60, seed=1))
    c = 3e20  # three times the largest budget
    (p,) = predict(report, [c])
    truth_n = float(CHINCHILLA_LAW.n_opt(c))
    truth_l = float(CHINCHILLA_LAW.loss(truth_n, c / (6 * truth_n)))
    for approach in (p.approach2, p.approach3):
        assert approach["n_star"].interval.contains(truth_n), approach["n_star"]
        assert approach["n_star"].value == pytest.approx(truth_n, rel=0.15)
        assert approach["l_star"].value == pytest.approx(truth_l, abs=0.02)
    assert p.approach3["l_star"].interval.contains(truth_l)
    assert p.disagree == []


def test_the_approaches_disagreeing_is_said(chinchilla):
    """Far beyond the data the log-log frontier (E = 0, Approach 2 with its 5 budgets' saturating
    form left out) and the parametric law (E = 1.69) part ways on L*, beyond both intervals."""
    data, _ = load_runs(chinchilla / "noisy.parquet")
    three = data.take(np.flatnonzero(data.budget <= 3e19))  # 3 budgets: the frontier is the log-log line
    report = fit_runs(three, FitOptions(n_boot=60, seed=2))
    (p,) = predict(report, [1e27])
    assert "l_star" in p.disagree
    assert p.approach2["l_star"].value < p.approach3["l_star"].value


def test_backtest_on_the_synthetic_grid(chinchilla):
    data, _ = load_runs(chinchilla / "noisy.parquet")
    train, held = split_largest(data)
    assert set(held.budget) == {1e20} and 1e20 not in set(train.budget)
    (result,) = backtest(fit_runs(train, FitOptions(n_boot=60, seed=3)), held)
    assert result.cell is not None and result.cell.valid
    truth = float(CHINCHILLA_LAW.n_opt(result.compute))
    for approach in ("approach2", "approach3"):
        check = result.checks[approach]["n_star"]
        assert check.truth == result.cell.n_star
        assert abs(check.error) < 0.15 and check.predicted.value == pytest.approx(truth, rel=0.15)
        assert abs(result.checks[approach]["l_star"].difference) < 0.02
    # the runs' own noise (0.5% of the loss) is all that is left: within 4 standard deviations
    assert result.run_errors is not None and np.abs(result.run_errors).max() < 4 * 0.005 * held.loss.max()


def _run(capsys, *argv):
    code = main([*map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_and_backtest_command_lines(chinchilla, tmp_path, capsys):
    runs = chinchilla / "noisy.parquet"
    code, out, err = _run(
        capsys, "predict", "--runs", runs, "--budget", "1e21", "--budget", "3e21", "--bootstrap", 20
    )
    assert code == 0, err
    assert "mdlm-ce at 1e21 FLOPs" in out and "mdlm-ce at 3e21 FLOPs" in out
    assert "Approach 2 (power laws)" in out and "Approach 3 (parametric)" in out
    assert "give SWEEP rather than --runs" in out and "bootstrap 100%" in err
    code, out, _ = _run(
        capsys,
        "predict",
        "--runs",
        runs,
        "--budget",
        "1e21",
        "--bootstrap",
        0,
        "--format",
        "json",
        "--out",
        tmp_path / "p.json",
    )
    rows = json.loads(out)
    assert rows == json.loads((tmp_path / "p.json").read_text())
    # ten times beyond the largest budget, from runs with 0.5% noise
    assert rows[0]["approach3"]["n_star"]["value"] == pytest.approx(CHINCHILLA_LAW.n_opt(1e21), rel=0.3)
    for argv, message in (
        (["--budget", "-1"], "--budget -1.0"),
        (["--budget", "1e21", "--gpu", "Z80"], "unknown accelerator 'Z80'"),
        (["--budget", "1e21", "--mfu", "2"], "--mfu 2.0"),
    ):
        code, _, err = _run(capsys, "predict", "--runs", runs, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, out, err = _run(capsys, "backtest", "--runs", runs, "--bootstrap", 20)
    assert code == 0, err
    assert (
        "A2 power laws" in out
        and "A3 parametric" in out
        and "fitted values inside the predicted intervals" in out
    )
    single = to_table(isoflop_runs(arm="x", budgets=(1e19,), sizes_per_budget=5))
    pq.write_table(single, tmp_path / "one.parquet")
    code, _, err = _run(capsys, "backtest", "--runs", tmp_path / "one.parquet")
    assert code == 2 and "a backtest needs two or more" in err


def test_predict_shapes_steps_and_gpu_hours_from_the_sweep_config(chinchilla):
    """With a sweep config, N* becomes the nearest ladder shape and a generated one, each planned
    as the planner plans it, and GPU-hours are its FLOPs (attention convention) / (peak x MFU)."""
    from scaling.config import load_sweep
    from scaling.hardware import peak_bf16
    from scaling.placement import run_flops
    from scaling.plan import model_vocab, plan_run
    from scaling.workflows.fit import FitRequest
    from scaling.workflows.predict import PredictRequest, predict_budgets

    cfg = load_sweep("smoke")
    small = to_table(isoflop_runs(arm="mdlm-ce", budgets=(1e8, 2e8, 4e8), law=CHINCHILLA_LAW))
    path = chinchilla / "small.parquet"
    pq.write_table(small, path)
    result = predict_budgets(
        PredictRequest(FitRequest(runs=path, n_boot=0), budgets=(1e9,), gpu="H100", mfu=0.4), cfg
    )
    shapes = result.rows[0]["shapes"]
    ladder = {s["name"] for s in cfg.ladder}
    assert shapes["nearest_ladder"]["model"] in ladder
    generated = shapes["generated"]
    from scaling.flops import ModelShape

    shape = ModelShape(
        generated["model"],
        generated["d_model"],
        generated["n_layers"],
        generated["n_heads"],
        model_vocab(cfg),
        cfg.data.seq_len,
    )
    planned = plan_run(cfg, "mdlm-ce", 1e9, shape, seed=0, train_tokens=0)
    assert generated["steps"] == planned.spec.steps > 0
    assert generated["tokens"] == planned.spec.steps * cfg.train.global_batch * cfg.data.seq_len
    assert generated["gpu_hours"] == pytest.approx(run_flops(planned.spec) / (peak_bf16("H100") * 0.4) / 3600)
    assert "GPU-hours on H100 at MFU 0.4 (estimate)" in result.text
