"""The run store: status.json merge rules, states derived from result.json, the layout marker,
the cluster config schema, and locked writes from concurrent processes."""

import json
import multiprocessing
import os

import pytest

from scaling import store
from scaling.errors import UserError
from scaling.executors import Run, parse_cluster
from scaling.executors.local import LocalConfig
from scaling.executors.slurm import Resources, SlurmConfig
from scaling.flops import ModelShape
from scaling.spec import DataSpec, EvalSpec, OptimSpec, RunSpec


def spec(steps=10, budget=1e9, seed=0):
    return RunSpec(
        arm="ar",
        model=ModelShape("m", 16, 1, 2, 257, 32),
        budget_flops=budget,
        flops_convention="attention",
        steps=steps,
        global_batch=4,
        optim=OptimSpec(1e-3, 1e-4, 2),
        data=DataSpec("c", "bytes", 256, 32),
        eval=EvalSpec(5, 8),
        seed=seed,
    )


def test_missing_status_reads_planned(tmp_path):
    assert store.read_status(tmp_path) == store.RunStatus()
    (tmp_path / "status.json").write_text('{"state": "runn')  # torn by a crash: never a traceback
    assert store.read_status(tmp_path).state == "planned"


def test_write_status_merges_fields_and_clears_reason(tmp_path):
    store.write_status(tmp_path, "queued", job_id="12_3", requeues=0)
    store.write_status(tmp_path, "failed", reason="FAILED, exit code 1:0")
    s = store.read_status(tmp_path)
    assert (s.state, s.job_id, s.requeues, s.reason) == ("failed", "12_3", 0, "FAILED, exit code 1:0")
    s = store.write_status(tmp_path, "running", requeues=2)  # the trainer passes no job id: it is kept
    assert (s.state, s.job_id, s.requeues, s.reason) == ("running", "12_3", 2, None)
    on_disk = json.loads((tmp_path / "status.json").read_text())
    assert set(on_disk) == {
        "state",
        "job_id",
        "requeues",
        "reason",
        "updated_at",
        "host",
        "failed_nodes",
        "stalls",
    }
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_write_status_rejects_unknown_states_and_fields(tmp_path):
    with pytest.raises(ValueError):
        store.write_status(tmp_path, "finished")
    with pytest.raises(ValueError):
        store.write_status(tmp_path, "done", loss=1.0)


def test_mark_submitted_does_not_overwrite_the_jobs_own_state(tmp_path):
    store.write_status(tmp_path, "running", job_id="7_0")  # the job started before the sweep wrote
    assert store.mark_submitted(tmp_path, "7_0").state == "running"
    store.write_status(tmp_path, "failed", job_id="6_0", reason="x", requeues=3)
    s = store.mark_submitted(tmp_path, "7_1")  # a new submission of an old run
    assert (s.state, s.job_id, s.requeues, s.reason) == ("queued", "7_1", 0, None)


def result(status: str, **fields) -> store.RunResult:
    return store.RunResult(
        **({"status": status, "run_key": "k", "steps": 3, "tokens": 96, "flops": {}} | fields)
    )


def test_result_json_is_read_through_its_record(tmp_path):
    written = result("done", val_loss=2.5, flops={"attention": 1e9})
    store.write_result(tmp_path, written)
    assert store.load_result(tmp_path) == written
    for text, reason in (
        ('{"status": "done"}', "missing field 'run_key'"),
        ('{"status": "won", "run_key": "k", "steps": 1, "tokens": 1, "flops": {}}', "status 'won'"),
        (
            '{"status": "done", "run_key": "k", "steps": "x", "tokens": 1, "flops": {}}',
            "steps: expected a whole",
        ),
        ("[1, 2]", "not a JSON object"),
        ("\x00\xff garbage", "not valid JSON"),
    ):
        (tmp_path / "result.json").write_text(text)
        with pytest.raises(store.MalformedFile, match=reason):
            store.load_result(tmp_path)
        assert store.read_result(tmp_path) is None


def test_run_state_follows_result_json(tmp_path):
    store.write_status(tmp_path, "done")
    assert store.run_state(tmp_path) == "planned"  # result.json deleted: the run must run again
    store.write_result(tmp_path, result("diverged"))
    assert store.run_state(tmp_path) == "diverged"
    store.write_result(tmp_path, result("done", val_loss=2.5))
    assert store.run_state(tmp_path) == "done"
    (tmp_path / "result.json").write_text('{"status": "done", "val_lo')  # torn: the run ends again
    assert store.run_state(tmp_path) == "planned"


def test_progress_from_metrics_tail_and_result(tmp_path):
    s = spec(steps=10, budget=1e9)
    assert store.run_progress(tmp_path, s) == store.Progress(0, 10, None, 0.0)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for step in (1, 2, 3):
            f.write(
                json.dumps({"step": step, "train_loss": 5.0 - step, "flops": {"attention": 1e8 * step}})
                + "\n"
            )
        f.write('{"step": 4, "train_lo')  # a torn last line
    assert store.run_progress(tmp_path, s) == store.Progress(3, 10, 2.0, 3e8)
    store.write_result(tmp_path, result("done", val_loss=1.5, steps=10))
    assert store.run_progress(tmp_path, s) == store.Progress(10, 10, 1.5, 1e9)


def test_last_jsonl_reads_only_the_tail(tmp_path):
    path = tmp_path / "m.jsonl"
    with open(path, "w") as f:
        for i in range(20000):
            f.write(json.dumps({"step": i}) + "\n")
    assert store.last_jsonl(path) == {"step": 19999}
    assert store.last_jsonl(tmp_path / "absent.jsonl") is None


def test_layout_marker_refuses_other_versions(tmp_path):
    store.init_layout(tmp_path)
    assert json.loads((tmp_path / "store.json").read_text())["store_version"] == store.STORE_VERSION
    store.check_layout(tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({"store_version": store.STORE_VERSION + 1}))
    with pytest.raises(UserError, match="incompatible version"):
        store.check_layout(tmp_path)
    foreign = tmp_path / "foreign"
    (foreign / "runs" / "x").mkdir(parents=True)
    with pytest.raises(UserError, match="not written by this tool"):
        store.check_layout(foreign)


def test_ensure_run_keeps_an_existing_spec(tmp_path):
    store.ensure_run(tmp_path, spec(seed=1))
    before = (tmp_path / "spec.yaml").read_text()
    store.ensure_run(tmp_path, spec(seed=1))
    assert (tmp_path / "spec.yaml").read_text() == before
    assert store.load_run_spec(tmp_path) == spec(seed=1)


def _hammer(run_dir, state, n):
    for i in range(n):
        store.write_status(run_dir, state, requeues=i)


def test_concurrent_writers_always_leave_valid_json(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(tmp_path, state, 200)) for state in ("running", "queued")]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):
        if (tmp_path / "status.json").exists():
            json.loads((tmp_path / "status.json").read_text())  # never torn
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert seen > 0
    assert store.read_status(tmp_path).requeues == 199
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# --- cluster config schema ----------------------------------------------------------------


def test_parse_cluster_defaults_and_numbers():
    assert parse_cluster({}) == LocalConfig()
    c = parse_cluster(
        {
            "executor": "slurm",
            "partition": "gpu",
            "max_num_timeout": "5",
            "resources": [
                {"max_params": "1e8", "gpus_per_node": 2, "mem_gb": 32},
                {"max_params": 1e12, "gpus_per_node": 8},
            ],
        }
    )
    assert isinstance(c, SlurmConfig)
    assert c.max_num_timeout == 5 and c.partition == "gpu"
    assert c.resources == [Resources(1e8, gpus_per_node=2, mem_gb=32.0), Resources(1e12, gpus_per_node=8)]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"executor": "kubernetes"}, "unknown executor 'kubernetes'"),
        (
            {"executor": "local", "partition": "gpu"},
            r"cluster: unknown field\(s\) partition \(known: executor",
        ),
        ({"executor": "slurm", "gpus": 4}, r"unknown field\(s\) gpus"),
        (
            {"executor": "slurm", "resources": [{"gpus_per_node": 1}]},
            r"resources\[0\]: missing field 'max_params'",
        ),
        (
            {"executor": "slurm", "resources": [{"max_params": 1e9, "gpu": 1}]},
            r"resources\[0\]: unknown field",
        ),
        ({"executor": "slurm", "resources": []}, "cluster.resources must be a non-empty list"),
        ({"executor": "slurm", "max_num_timeout": 2.5}, "whole number"),
        ({"executor": "slurm", "array_parallelism": "many"}, "expected a number"),
        ({"executor": "slurm", "sbatch": ["--exclusive"]}, "cluster.sbatch: expected a mapping"),
    ],
)
def test_parse_cluster_rejects_bad_options(raw, message):
    with pytest.raises(UserError, match=message):
        parse_cluster(raw)


def test_resources_pick_the_first_entry_that_fits(tmp_path):
    c = parse_cluster(
        {
            "executor": "slurm",
            "resources": [{"max_params": 1e6, "cpus_per_task": 1}, {"max_params": 1e8, "cpus_per_task": 4}],
        }
    )
    small, big, huge = (Run(tmp_path, spec(), n) for n in (1e6, 1e6 + 1, 1e9))
    assert c.resources_for(small).cpus_per_task == 1
    assert c.resources_for(big).cpus_per_task == 4
    with pytest.raises(UserError, match="larger max_params"):
        c.resources_for(huge)


def test_a_stale_job_cannot_overwrite_a_resubmitted_run(tmp_path):
    store.write_status(tmp_path, "running", job_id="local:h:1")
    store.mark_submitted(tmp_path, "local:h:2")  # the run was resubmitted while job 1 finished
    s = store.write_status(tmp_path, "failed", if_job="local:h:1", reason="exited without a result")
    assert (s.state, s.job_id) == ("queued", "local:h:2")
    s = store.write_status(tmp_path, "failed", if_job="local:h:2", reason="boom")
    assert (s.state, s.job_id, s.reason) == ("failed", "local:h:2", "boom")


def test_a_cancel_is_not_overwritten_by_the_job_it_cancelled(tmp_path):
    store.mark_submitted(tmp_path, "9_0")
    store.write_status(tmp_path, "cancelled", reason="cancelled by `scaling cancel`")
    assert not store.mark_running(tmp_path, "9_0")  # the job starts after the cancel
    assert store.read_status(tmp_path).reason == "cancelled by `scaling cancel`"
    assert store.mark_running(tmp_path, None)  # a trainer started by hand may train it
    assert store.mark_running(tmp_path, "9_1", requeues=2)  # and so may a resubmission
    s = store.read_status(tmp_path)
    assert (s.state, s.job_id, s.requeues) == ("running", "9_1", 2)


def test_a_stale_poll_does_not_overwrite_a_newer_state(tmp_path):
    store.mark_submitted(tmp_path, "9_0")
    store.write_status(tmp_path, "cancelled", reason="cancelled by `scaling cancel`")
    s = store.write_status(tmp_path, "running", if_job="9_0", if_state=("queued",))  # read before the cancel
    assert (s.state, s.reason) == ("cancelled", "cancelled by `scaling cancel`")
    s = store.write_status(tmp_path, "queued", if_state=("cancelled",))
    assert s.state == "queued"
