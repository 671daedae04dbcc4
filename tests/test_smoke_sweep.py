"""The whole flow on the `smoke` sweep: sweep -> collect -> fit -> plot, then a rerun trains nothing."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow


def scaling(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "scaling.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "SCALING_RESULTS": str(root / "results"), "SCALING_DATA": str(root / "data")}
    first = scaling("sweep", "smoke", "cluster.max_parallel=2", env=env)
    return root, env, first


def test_every_stage_writes_its_files(smoke):
    root, env, first = smoke
    assert first.returncode == 0, first.stdout + first.stderr
    sweep = root / "results" / "smoke"
    runs = sorted(p for p in (sweep / "runs").iterdir() if p.is_dir())  # beside them: trainers' .lock files
    assert len(runs) == 2 * 2 * 3
    for run in runs:
        result = json.loads((run / "result.json").read_text())
        assert result["status"] == "done" and result["val_loss"] > 0
        assert len(result["git_sha"]) == 40

    collect = scaling("collect", "smoke", env=env)
    assert collect.returncode == 0, collect.stderr
    table = pq.read_table(sweep / "runs.parquet").to_pandas()
    assert len(table) == 12 and set(table["status"]) == {"done"} and table["in_plan"].all()
    assert table["git_sha"].str.len().eq(40).all()
    assert pq.read_table(sweep / "curves.parquet").num_rows >= 12

    fit = scaling("fit", "smoke", "--bootstrap", "50", env=env)
    assert fit.returncode == 0, fit.stdout + fit.stderr
    assert (sweep / "fits" / "fits.json").exists() and (sweep / "fits" / "fits.parquet").exists()

    plot = scaling("plot", "smoke", env=env)
    assert plot.returncode == 0, plot.stdout + plot.stderr
    pngs = list((sweep / "plots").glob("*.png"))
    assert pngs and len(list((sweep / "plots").glob("*.pdf"))) == len(pngs)


def test_a_second_sweep_trains_nothing(smoke):
    root, env, first = smoke
    assert first.returncode == 0
    before = {p: p.stat().st_mtime_ns for p in (root / "results" / "smoke" / "runs").glob("*/result.json")}
    again = scaling("sweep", "smoke", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 to submit" in again.stdout
    after = {p: p.stat().st_mtime_ns for p in (root / "results" / "smoke" / "runs").glob("*/result.json")}
    assert before == after
