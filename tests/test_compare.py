"""scaling compare: the multiplier between any two arms, within a table and across tables."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.synthetic import exact_parabola_runs, isoflop_runs, to_table
from scaling.cli import main


def _run(capsys, *argv):
    code = main([*map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_same_arm_in_two_tables_exact_ratio(tmp_path, capsys):
    """One arm in two tables (two learning rates, say) whose frontiers differ by exactly 1.3 in
    compute: the multiplier curve is 1.3 over the whole common range."""
    pq.write_table(to_table(exact_parabola_runs(1.3, "mdlm-ce")), tmp_path / "fast.parquet")
    pq.write_table(to_table(exact_parabola_runs(1.0, "mdlm-ce")), tmp_path / "slow.parquet")
    code, out, err = _run(
        capsys,
        "compare",
        "--candidate",
        f"{tmp_path / 'fast.parquet'}:mdlm-ce",
        "--baseline",
        f"{tmp_path / 'slow.parquet'}:mdlm-ce",
        "--bootstrap",
        10,
        "--out",
        tmp_path / "cmp",
    )
    assert code == 0, err
    record = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    (pair,) = record["pairs"]
    assert (pair["candidate"], pair["baseline"]) == ("fast:mdlm-ce", "slow:mdlm-ce")
    assert pair["value"] == pytest.approx(1.3, rel=1e-9)
    np.testing.assert_allclose(pair["curve"]["value"], 1.3, rtol=1e-9)
    assert "fast:mdlm-ce is 30.0%" in out and "more FLOPs-efficient than slow:mdlm-ce" in out
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.json", "compare.png", "compare.pdf"}


def test_every_arm_against_a_baseline_with_noise(tmp_path, capsys):
    """Without --candidate every other arm of the table is compared; with 0.5% noise the interval
    contains the true factor (1.2 and 1/1.1 under C = 6ND)."""
    table = to_table(
        isoflop_runs(arm="base", noise=0.005, seed=1),
        isoflop_runs(arm="better", noise=0.005, seed=2, compute_scale=1.2),
        isoflop_runs(arm="worse", noise=0.005, seed=3, compute_scale=1 / 1.1),
    )
    pq.write_table(table, tmp_path / "runs.parquet")
    code, out, err = _run(
        capsys,
        "compare",
        "--runs",
        tmp_path / "runs.parquet",
        "--baseline",
        "base",
        "--bootstrap",
        60,
        "--out",
        tmp_path / "o",
    )
    assert code == 0, err
    pairs = {p["candidate"]: p for p in json.loads((tmp_path / "o" / "compare.json").read_text())["pairs"]}
    assert set(pairs) == {"better", "worse"}
    for arm, truth in (("better", 1.2), ("worse", 1 / 1.1)):
        low, high = pairs[arm]["ci"]
        assert low <= truth <= high, (arm, pairs[arm]["value"], low, high)
    assert "worse is" in out and "less FLOPs-efficient than base" in out


def test_bad_comparisons_are_one_line_errors(tmp_path, capsys):
    pq.write_table(to_table(isoflop_runs(arm="a"), isoflop_runs(arm="b")), tmp_path / "runs.parquet")
    runs = tmp_path / "runs.parquet"
    budget_axis = to_table(isoflop_runs(arm="a"))
    pq.write_table(budget_axis, tmp_path / "other.parquet")
    for argv, message in (
        (["--runs", runs, "--candidate", "a", "--baseline", "a"], "compared with itself"),
        (["--runs", runs, "--candidate", "c", "--baseline", "a"], "arm 'c' is not in"),
        (["--candidate", "a", "--baseline", "b"], "name its source"),
        (
            ["--runs", runs, "--candidate", f"{tmp_path / 'missing.parquet'}:a", "--baseline", "a"],
            "does not exist",
        ),
        (["--runs", runs, "--baseline", "a", "--bootstrap", "-2"], "--bootstrap -2"),
    ):
        code, _, err = _run(capsys, "compare", *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
