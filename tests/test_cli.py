"""The command line as a user meets it: help texts, outputs, one-line errors with exit code 2."""

import csv
import io
import json
import subprocess
import sys

import pytest

from scaling.cli import COMMANDS


def scaling(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "scaling.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_top_level_help_lists_every_command():
    out = scaling("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_explains_itself(name):
    out = scaling(name, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: scaling " + name in out.stdout


def test_ladder_csv_has_the_documented_columns():
    out = scaling("ladder", "paper", "--vocab", "32001", "--seq-len", "2048", "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 28
    assert list(rows[0]) == [
        "name",
        "d_model",
        "n_layers",
        "n_heads",
        "vocab",
        "seq_len",
        "params_total",
        "params_non_embedding",
        "fwd_flops_per_seq_reference",
        "fwd_flops_per_seq_attention",
        "fwd_flops_per_seq_causal",
        "fwd_flops_per_seq_6N",
    ]
    first = rows[0]
    d, L, V, T = 256, 6, 32001, 2048
    assert float(first["fwd_flops_per_seq_reference"]) == 2 * T * (12 * L * d * d + d * V)


def test_plan_prints_the_grid_and_writes_specs(tmp_path):
    out = scaling("plan", "paper", "--format", "json", "--specs", str(tmp_path / "specs"))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 210 and {r["arm"] for r in rows} == {"ar", "mdlm-elbo", "mdlm-ce", "duo", "eso"}
    assert all(r["steps"] > 0 for r in rows)
    specs = sorted((tmp_path / "specs").glob("*.yaml"))
    assert len(specs) == 210 and {p.stem for p in specs} == {r["run_key"] for r in rows}
    from scaling.spec import load_spec

    spec = load_spec(specs[0])
    assert spec.run_key == specs[0].stem and spec.model.vocab == 32001


def test_plan_overrides_and_table():
    out = scaling("plan", "paper", "budgets=[6e18,1e19]", "arms=[mdlm-ce]")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["run_key", "arm", "model"]
    assert len(lines) == 2 + 16
    assert "16 runs" in out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["plan", "nope"], "unknown sweep"),
        (["plan", "paper", "arms=[gpt]"], "unknown arm"),
        (["plan", "paper", "budgets=[0]"], "must be > 0"),
        (["plan", "smoke", "budgets=[1e3]"], "too small for any model"),
        (["plan", "paper", "budgets=["], "bad override 'budgets=['"),
        (["plan", "paper", "nonsense=1"], "nonsense: no such key; a sweep has name, arms"),
        (["plan", "paper", "data.seq_len=0"], "seq_len must be > 0"),
        (["plan", "paper", "train.global_batch=0"], "global_batch must be > 0"),
        (["plan", "paper", "cluster=mars"], "no cluster config 'mars': choose from local, slurm, slurm-cpu"),
        (["ladder", "nope"], "unknown ladder"),
        (["ladder", "paper", "--seq-len", "0"], "must be > 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    out = scaling(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_overrides_may_follow_options():
    out = scaling("plan", "smoke", "--format", "csv", "budgets=[1e8]", "arms=[ar]")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 1 + 3
    bad = scaling("plan", "smoke", "--bogus")
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr
