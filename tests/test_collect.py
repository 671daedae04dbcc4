"""`scaling collect`: run folders -> runs.parquet and curves.parquet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.synthetic import run_specs, write_run_folder
from scaling.cli import main
from scaling.collect import (
    CURVE_VALUES,
    CURVES_COLUMNS,
    CURVES_SCHEMA_VERSION,
    FLOPS_COLUMNS,
    RUNS_COLUMNS,
    SCHEMA_METADATA_KEY,
    SCHEMA_VERSION,
    collect,
    read_curves,
    run_curves,
    write_collection,
)
from scaling.errors import UserError
from scaling.flops import CONVENTIONS, params_non_embedding, params_total, train_flops_per_seq

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """A sweep folder with healthy, unfinished and broken runs; returns (runs_dir, facts)."""
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path / "results"))
    runs = tmp_path / "results" / "demo" / "runs"
    specs = run_specs(arms=("ar", "mdlm-ce"), budgets=(1e12,), widths=(16, 24, 32))
    losses = {s.run_key: write_run_folder(runs, s, "done") for s in specs[:4]}
    write_run_folder(runs, specs[4], "diverged")
    write_run_folder(runs, specs[5], "running")
    extra = run_specs(arms=("duo",), budgets=(1e12,), widths=(16, 24, 32, 48))
    write_run_folder(runs, extra[0], "done")
    (runs / extra[0].run_key / "result.json").unlink()  # status says done, result is missing
    write_run_folder(runs, extra[1], "done")
    (runs / extra[1].run_key / "result.json").write_text('{"status": "done", "val_lo')  # torn
    write_run_folder(runs, extra[2], "done")
    (runs / extra[2].run_key / "status.json").write_text("not json")  # result decides: still done
    losses[extra[2].run_key] = json.loads((runs / extra[2].run_key / "result.json").read_text())["val_loss"]
    (runs / "garbage").mkdir()
    (runs / "garbage" / "spec.yaml").write_text("arm: [unclosed")
    (runs / "no-spec").mkdir()
    renamed = runs / "renamed-run"
    write_run_folder(runs, extra[3], "done")
    (runs / extra[3].run_key).rename(renamed)
    (runs / ".tmp-folder").mkdir()  # hidden: ignored
    return runs, {"specs": specs, "extra": extra, "losses": losses}


def test_rows_statuses_and_values(sweep):
    runs, facts = sweep
    col = collect(runs, "demo")
    t = col.runs.to_pydict()
    by_key = {k: {c: t[c][i] for c in t} for i, k in enumerate(t["run_key"])}
    assert len(by_key) == col.runs.num_rows == 12  # every folder but the hidden one, no duplicates
    specs, extra = facts["specs"], facts["extra"]
    expected = {s.run_key: "done" for s in specs[:4]}
    expected |= {
        specs[4].run_key: "diverged",
        specs[5].run_key: "running",
        extra[0].run_key: "incomplete",
        extra[1].run_key: "malformed",
        extra[2].run_key: "done",
        "garbage": "malformed",
        "no-spec": "malformed",
        "renamed-run": "malformed",
    }
    assert {k: r["status"] for k, r in by_key.items()} == expected
    # one warning per problem folder, naming it
    warned = {w.split(":")[0] for w in col.warnings}
    assert warned == {
        extra[0].run_key,
        extra[1].run_key,
        extra[2].run_key,
        "garbage",
        "no-spec",
        "renamed-run",
    }
    for key, loss in facts["losses"].items():
        assert by_key[key]["val_loss"] == loss
    s = specs[0]
    row = by_key[s.run_key]
    assert row["params_total"] == params_total(s.model)
    assert row["params_non_embedding"] == params_non_embedding(s.model)
    assert row["tokens"] == s.steps * s.global_batch * s.model.seq_len
    for conv, c in zip(CONVENTIONS, FLOPS_COLUMNS):
        assert row[c] == train_flops_per_seq(s.model, conv, s.arm) * s.global_batch * s.steps
    assert row["flops_convention"] == "reference" and row["sweep"] == "demo"
    assert (row["arm"], row["family"], row["objective"]) == ("ar", "ar", "nll")
    assert (row["job_id"], row["requeues"], row["git_sha"], row["device"]) == ("123", 1, "abc1234", "cpu")
    assert row["schema_version"] == SCHEMA_VERSION and row["problem"] is None
    assert by_key[specs[4].run_key]["val_loss"] is None and by_key[specs[4].run_key]["diverged_step"] > 0
    assert by_key["garbage"]["arm"] is None and "YAML" in by_key["garbage"]["problem"]


def test_curves(sweep):
    runs, facts = sweep
    col = collect(runs, "demo")
    c = col.curves.to_pydict()
    s = facts["specs"][0]
    rows = [i for i, k in enumerate(c["run_key"]) if k == s.run_key and c["kind"][i] == "val"]
    assert len(rows) == 3 and [c["step"][i] for i in rows] == sorted(c["step"][i] for i in rows)
    last = rows[-1]
    assert c["step"][last] == s.steps and c["val_loss"][last] == facts["losses"][s.run_key]
    assert (
        c["flops_attention"][last]
        == train_flops_per_seq(s.model, "attention", s.arm) * s.global_batch * s.steps
    )
    keys = list(zip(c["run_key"], c["kind"], c["step"]))
    assert len(keys) == len(set(keys))


def test_training_and_validation_points_of_a_trained_run(tmp_path, byte_shards):
    """A real run folder: every metrics.jsonl row becomes a `train` row and every evals.jsonl row a
    `val` row, with the trainer's own values; a run still training is read the same way."""
    from conftest import tiny_spec

    from trainer.loop import train

    spec = tiny_spec(byte_shards, arm="ar", steps=6)
    run = tmp_path / "runs" / spec.run_key
    train(spec, run, log=lambda m: None)
    table = collect(tmp_path / "runs", "t").curves
    assert table.equals(run_curves(run))
    c = table.to_pylist()
    for kind, log in (("train", "metrics.jsonl"), ("val", "evals.jsonl")):
        logged = [json.loads(line) for line in (run / log).read_text().splitlines()]
        got = [r for r in c if r["kind"] == kind]
        assert [r["step"] for r in got] == [r["step"] for r in logged] and len(got) >= 2
        for row, line in zip(got, logged):
            assert row["tokens"] == line["tokens"]
            assert [row[col] for col in FLOPS_COLUMNS] == [line["flops"][conv] for conv in CONVENTIONS]
            for name in CURVE_VALUES[kind]:
                assert row[name] == line[name], name
            other = [n for k, names in CURVE_VALUES.items() if k != kind for n in names]
            assert all(row[n] is None for n in other)
    assert {r["kind"] for r in c} == {"train", "val"}
    assert all(r["schema_version"] == CURVES_SCHEMA_VERSION for r in c)


def test_resumed_run_keeps_last_training_row_of_a_step(tmp_path):
    spec = run_specs(arms=("ar",), budgets=(1e12,), widths=(16,))[0]
    write_run_folder(tmp_path, spec, "running")
    rows = [{"step": s, "tokens": s * 8, "train_loss": 5.0 - s, "lr": 1e-3} for s in (1, 2, 3)]
    lines = [json.dumps(r) for r in rows] + [json.dumps(rows[1] | {"train_loss": 9.0}), '{"step": 4, "tra']
    (tmp_path / spec.run_key / "metrics.jsonl").write_text("\n".join(lines))
    c = [r for r in collect(tmp_path, "x").curves.to_pylist() if r["kind"] == "train"]
    assert [(r["step"], r["train_loss"]) for r in c] == [(1, 4.0), (2, 9.0), (3, 2.0)]
    assert c[0]["grad_norm"] is None and c[0]["val_loss"] is None


def test_read_curves_refuses_a_table_of_the_first_schema(sweep, tmp_path):
    runs, _ = sweep
    _, curves_path = write_collection(collect(runs, "demo"), tmp_path / "out")
    assert read_curves(curves_path).num_rows > 0
    old = pq.read_table(curves_path).drop_columns(["kind"])
    pq.write_table(old.replace_schema_metadata({SCHEMA_METADATA_KEY: b"1"}), tmp_path / "old.parquet")
    for path, message in (
        (tmp_path / "old.parquet", "version 1"),
        (tmp_path / "none.parquet", "does not exist"),
    ):
        with pytest.raises(UserError, match=message) as e:
            read_curves(path)
        assert "scaling collect" in str(e.value) and "\n" not in str(e.value)


def test_resumed_run_keeps_last_evaluation_of_a_step(tmp_path):
    spec = run_specs(arms=("ar",), budgets=(1e12,), widths=(16,))[0]
    write_run_folder(tmp_path, spec, "running")
    path = tmp_path / spec.run_key / "evals.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    path.write_text(path.read_text() + json.dumps(first | {"val_loss": 9.0}) + "\n" + '{"step": 1, "val')
    c = collect(tmp_path, "x").curves.to_pydict()
    assert c["kind"] == ["val"] * len(c["step"])  # no metrics.jsonl: validation rows only
    assert c["step"].count(first["step"]) == 1
    assert c["val_loss"][c["step"].index(first["step"])] == 9.0


def test_schema_types_metadata_and_docs(sweep, tmp_path):
    runs, _ = sweep
    runs_path, curves_path = write_collection(collect(runs, "demo"), tmp_path / "out")
    for path, columns, version in (
        (runs_path, RUNS_COLUMNS, SCHEMA_VERSION),
        (curves_path, CURVES_COLUMNS, CURVES_SCHEMA_VERSION),
    ):
        schema = pq.read_schema(path)
        assert [(f.name, f.type) for f in schema] == list(columns)
        assert schema.metadata[SCHEMA_METADATA_KEY] == str(version).encode()
    doc = (ROOT / "docs" / "results-schema.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", doc, flags=re.M))
    for name, _ in RUNS_COLUMNS + CURVES_COLUMNS:
        assert name in documented, f"column {name} is not documented in docs/results-schema.md"


def test_readable_without_this_package(sweep, tmp_path):
    """pandas, pyarrow, polars and DuckDB read the files with their own readers."""
    import duckdb
    import pandas as pd
    import polars as pl

    runs, facts = sweep
    runs_path, curves_path = write_collection(collect(runs, "demo"), tmp_path / "out")
    key = facts["specs"][0].run_key
    loss = facts["losses"][key]
    df = pd.read_parquet(runs_path)
    assert len(df) == 12 and df.set_index("run_key").loc[key, "val_loss"] == loss
    assert pl.read_parquet(runs_path).filter(pl.col("run_key") == key)["val_loss"][0] == loss
    assert pq.read_table(curves_path).num_rows == len(pd.read_parquet(curves_path))
    con = duckdb.connect()
    got = con.execute(
        f"select val_loss, created_at from read_parquet('{runs_path}') where run_key = ?", [key]
    ).fetchone()
    assert got[0] == loss and got[1] is not None
    n = con.execute(
        f"select count(*) from read_parquet('{curves_path}') where run_key = ? and kind = 'val'", [key]
    ).fetchone()[0]
    assert n == 3


def test_cli_collect_is_idempotent(sweep, capsys):
    runs, _ = sweep
    assert main(["collect", "demo"]) == 0
    out = capsys.readouterr()
    assert "12 runs" in out.out and "malformed" in out.err
    first = pq.read_table(runs.parent / "runs.parquet")
    assert main(["collect", "demo"]) == 0
    assert pq.read_table(runs.parent / "runs.parquet").equals(first)
    assert not [p for p in runs.parent.iterdir() if p.name.endswith(".tmp")]


def test_cli_missing_sweep_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path))
    assert main(["collect", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scaling sweep nope" in err
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    assert main(["collect", "empty"]) == 2
    assert not (tmp_path / "empty" / "runs.parquet").exists()


def test_collected_losses_follow_the_law(sweep):
    """The collector's N and D are those the law was evaluated at (what the fit relies on)."""
    from analysis.synthetic import CHINCHILLA_LAW

    runs, _ = sweep
    t = collect(runs, "demo").runs.to_pydict()
    done = [i for i, s in enumerate(t["status"]) if s == "done"]
    n = np.array([t["params_non_embedding"][i] for i in done], dtype=float)
    d = np.array([t["tokens"][i] for i in done], dtype=float)
    np.testing.assert_allclose([t["val_loss"][i] for i in done], CHINCHILLA_LAW.loss(n, d), rtol=1e-12)


def test_runs_outside_the_current_plan_are_marked_and_not_fitted(tmp_path):
    """A config change leaves the old run folders on disk; collect marks them, fit skips them."""
    from analysis.table import load_runs
    from scaling import store
    from scaling.collect import parquet_bytes

    runs = tmp_path / "runs"
    specs = run_specs(arms=("ar",), budgets=(1e12,), widths=(16, 24, 32, 48))
    for s in specs:
        write_run_folder(runs, s, "done")
    keys = sorted(s.run_key for s in specs)
    store.write_plan_manifest(tmp_path, keys[1:])
    table = collect(runs, "t", plan_keys=store.read_plan_manifest(tmp_path)).runs
    in_plan = dict(zip(table.column("run_key").to_pylist(), table.column("in_plan").to_pylist()))
    assert in_plan[keys[0]] is False and all(in_plan[k] for k in keys[1:])
    assert all(collect(runs, "t").runs.column("in_plan").to_pylist())
    (tmp_path / "runs.parquet").write_bytes(parquet_bytes(table))
    data, warnings = load_runs(tmp_path / "runs.parquet")
    assert len(data) == len(specs) - 1
    assert any("not in the sweep's current plan" in w for w in warnings)
