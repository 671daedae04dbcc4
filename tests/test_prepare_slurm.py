"""Data preparation as its own SLURM job on the localhost cluster (scaling/workflows/prepare.py):
the sweep's data is prepared by a job, not in this process; a malformed file fails the job with
its one-line error, and a rerun after the fix resumes."""

from __future__ import annotations

import json

import pytest
from test_slurm import slurm_cluster  # noqa: F401  (the fixture)

from scaling.config import load_sweep
from scaling.errors import UserError
from scaling.workflows import prepare as workflow
from trainer import data

pytestmark = pytest.mark.slurm


def _cfg(corpus, *extra):
    return load_sweep(
        "tiny",
        [
            "cluster=slurm-cpu",
            "cluster.poll_s=1",
            f"data.corpus={corpus}",
            "data.val_fraction=0.2",
            "data.prepare_mem_gb=1",
            "data.prepare_timeout_min=5",
            *extra,
        ],
    )


def test_preparation_runs_as_a_job_and_resumes(slurm_cluster, tmp_path, monkeypatch, text_corpus):  # noqa: F811
    monkeypatch.setenv("SCALING_DATA", str(tmp_path / "data"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in sorted(text_corpus.glob("*.txt"))[:6]:
        (corpus / p.name).write_text(p.read_text())
    (corpus / "zz.jsonl").write_text('{"text": "fine"}\n{"text": broken}\n')
    said: list[str] = []
    with pytest.raises(UserError) as e:
        workflow.prepare_for_sweep(_cfg(corpus), say=said.append)
    assert f"{corpus / 'zz.jsonl'} line 2: not JSON" in str(e.value) and "\n" not in str(e.value)
    assert any("submitted the preparation" in s for s in said) and any("slurm:" in s for s in said)
    folder = data.folder_of(_cfg(corpus).data)
    assert len(list((folder / "shards").glob("*.json"))) == 6  # the good files were prepared and kept
    kept = {p: p.stat().st_mtime_ns for p in (folder / "shards").glob("*.json")}
    logs = sorted((tmp_path / "data" / ".jobs").iterdir())
    assert (
        len(logs) == 1
        and "scaling.cli" in json.loads((folder.parent / f".{folder.name}.job.json").read_text())["argv"]
    )

    (corpus / "zz.jsonl").write_text('{"text": "fine"}\n{"text": "mended"}\n')
    said.clear()
    assert workflow.prepare_for_sweep(_cfg(corpus), say=said.append) == folder
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # resumed: the six shards were not redone
    manifest = data.read_manifest(folder)
    assert len(manifest["shards"]) == 7
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 8
    assert not (folder.parent / f".{folder.name}.job.json").exists()
    # prepared: a third call neither submits nor waits
    said.clear()
    assert workflow.prepare_for_sweep(_cfg(corpus), say=said.append) == folder and said == []
