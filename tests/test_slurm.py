"""The SLURM executor on a real single-node cluster (scripts/local-slurm.sh up; .ci/run starts it).

Every job is real `scaling train` under submitit: a sweep matches the local executor's results,
preemption (USR2) and a real time limit requeue and resume to the uninterrupted final loss,
`scontrol requeue`, `scancel` and failing jobs are reported correctly, and bad input fails in one
line with exit code 2. Without a cluster the `slurm` tests are skipped, unless
SCALING_REQUIRE_SLURM=1 (CI), where a missing cluster fails them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from test_local_executor import (
    long_run_overrides,
    rerun_after_deleting_a_result,
    results_of,
    runs_of,
    statuses,
    sweep_env,
)

from scaling import store
from scaling.cli import main
from scaling.executors import Run, parse_cluster, reconcile
from scaling.executors.slurm import SlurmExecutor
from scaling.paths import PROJECT_ROOT

ONE_CPU = "cluster.resources=[{max_params:1e12,gpus_per_node:0,cpus_per_task:1,mem_gb:1,timeout_min:10}]"


def cluster_up() -> tuple[bool, str]:
    script = PROJECT_ROOT / "scripts" / "local-slurm.sh"
    try:
        out = subprocess.run([str(script), "status"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return out.returncode == 0, (out.stderr or out.stdout).strip()


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    return sweep_env(tmp_path, monkeypatch, text_corpus)


@pytest.fixture(scope="session")
def slurm_cluster():
    up, why = cluster_up()
    if not up:
        message = f"no local SLURM cluster ({why}): start one with `scripts/local-slurm.sh up` (root, Debian)"
        if os.environ.get("SCALING_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def submitted():
    """Job ids a test submitted; whatever still runs at its end is cancelled."""
    ids: list[str] = []
    yield ids
    if ids:  # only jobs still waiting or running: a completing job would be recorded as cancelled
        out = subprocess.run(
            [
                "squeue",
                "-h",
                "-r",
                "-t",
                "PD,R",
                "-j",
                ",".join({native(i).split("_")[0] for i in ids}),
                "-o",
                "%i",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.stdout.split():
            subprocess.run(["scancel", *out.stdout.split()], capture_output=True, timeout=60)


def native(job_id: str) -> str:
    """SLURM's own id of one of our job ids (`slurm:1234_0` -> `1234_0`)."""
    assert job_id.startswith("slurm:"), job_id
    return SlurmExecutor.native_id(job_id)


def slurm_executor(**cluster) -> SlurmExecutor:
    raw = {
        "executor": "slurm",
        "poll_s": 1,
        "resources": [
            {"max_params": 1e12, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10}
        ],
    }
    return SlurmExecutor(parse_cluster(raw | cluster))


def long_spec(steps: int, seed: int = 0):
    """The d64-l2 spec of `long_run_overrides`, planned from the test sweep (needs `env`)."""
    from scaling.config import load_sweep
    from scaling.plan import plan_sweep

    (spec,) = plan_sweep(load_sweep("t", [*long_run_overrides(steps), f"seeds=[{seed}]"])).runs
    return spec


def steps_for_seconds(env: Path, seconds: float) -> int:
    """How many steps of `long_spec` one core trains in `seconds` on this machine."""
    spec, out = long_spec(steps=300, seed=99), env / "calibration"
    store.ensure_run(out, spec)
    subprocess.run(
        [sys.executable, "-m", "scaling.cli", "train", str(out / "spec.yaml"), "--out", str(out)],
        check=True,
        capture_output=True,
        env=os.environ | {"SCALING_THREADS": "1"},
        timeout=300,
    )
    return int(seconds * spec.steps / json.loads((out / "result.json").read_text())["wall_s"])


def submit(executor: SlurmExecutor, sweep_dir: Path, specs_and_dirs, submitted: list[str]) -> dict[Path, str]:
    store.init_layout(sweep_dir)
    runs = []
    for spec, run_dir in specs_and_dirs:
        store.ensure_run(run_dir, spec)
        runs.append(Run(run_dir, spec, 10**6))
    ids: dict[str, str] = {}
    executor.submit(sweep_dir, runs, ids.update)
    submitted.extend(ids.values())
    for run in runs:
        store.mark_submitted(run.run_dir, ids[run.run_key])
    return {run.run_dir: ids[run.run_key] for run in runs}


def watch(run_dirs: list[Path], timeout: float, until=None) -> dict[Path, list[str]]:
    """Reconciles until no run is active (or `until(views)`); returns the states each run went through."""
    seen: dict[Path, list[str]] = {d: [] for d in run_dirs}
    deadline = time.monotonic() + timeout
    while True:
        views, warnings = reconcile(run_dirs)
        assert not warnings, warnings
        for v in views:
            if not seen[v.run_dir] or seen[v.run_dir][-1] != v.state:
                seen[v.run_dir].append(v.state)
        done = (
            until({v.run_dir: v for v in views}) if until else not any(v.state in store.ACTIVE for v in views)
        )
        if done:
            return seen
        assert time.monotonic() < deadline, f"still active after {timeout}s: {seen}"
        time.sleep(0.5)


def reference(tmp_path: Path, spec) -> subprocess.Popen:
    out = tmp_path / "reference"
    store.ensure_run(out, spec)
    return subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "train", str(out / "spec.yaml"), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=os.environ | {"SCALING_THREADS": "1"},
    )


def reference_loss(tmp_path: Path, proc: subprocess.Popen) -> float:
    assert proc.wait(timeout=600) == 0
    return json.loads((tmp_path / "reference" / "result.json").read_text())["val_loss"]


def wait_running(run_dir: Path, step: int, timeout: float = 180) -> None:
    """Until the run's job is running and its trainer has logged `step` in this attempt."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.read_status(run_dir).state == "running":
            row = store.last_jsonl(run_dir / "metrics.jsonl")
            if row and row["step"] >= step:
                return
        time.sleep(0.2)
    raise AssertionError(f"{run_dir.name} never ran to step {step}")


def slurm(*argv: str) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def step_pids(job_id: str) -> list[int]:
    """The PIDs of the job's step 0 on this node: submitit's task process and its trainer."""
    raw_id = slurm(
        "squeue", "-h", "-j", job_id, "-o", "%A"
    ).strip()  # listpids wants the raw id of an array task
    rows = [line.split() for line in slurm("scontrol", "listpids", raw_id).splitlines()[1:]]
    pids = [int(row[0]) for row in rows if row[2] == "0"]
    assert len(pids) >= 2, rows
    return pids


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_through_submitit_matches_local_and_is_idempotent(slurm_cluster, env, capsys):
    results = env / "results"
    on_slurm = ["sweep", "t", "cluster=slurm", ONE_CPU, "cluster.poll_s=0.5"]
    assert main(on_slurm) == 0
    out = capsys.readouterr().out
    assert "4 to submit (slurm)" in out and "4 runs: 4 done" in out
    first = statuses(results)
    assert all(s["state"] == "done" and native(s["job_id"]).split("_")[0].isdigit() for s in first.values())
    assert len({native(s["job_id"]).split("_")[0] for s in first.values()}) == 1  # one job array

    assert (
        main(
            [
                "sweep",
                "t",
                "name=tlocal",
                "cluster.threads_per_run=1",
                "cluster.max_parallel=2",
                "cluster.poll_s=0.2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    on_slurm_losses = {k: r["val_loss"] for k, r in results_of(results).items()}
    assert on_slurm_losses == {k: r["val_loss"] for k, r in results_of(results, "tlocal").items()}

    submissions = set((results / "t" / "submitit").iterdir())
    assert main(on_slurm) == 0  # nothing to do: no sbatch
    assert "4 ended, 0 queued or running, 0 to submit" in capsys.readouterr().out
    assert set((results / "t" / "submitit").iterdir()) == submissions
    assert statuses(results) == first

    rerun_after_deleting_a_result(results, on_slurm, runs_of(results)[2], "1 to submit (slurm)", capsys)


@pytest.mark.slurm
@pytest.mark.slow
def test_preemption_and_time_limit_requeue_and_resume_to_the_same_loss(slurm_cluster, env, submitted):
    sweep_dir = env / "results" / "t"
    preempt, timed = sweep_dir / "runs" / "preempt", sweep_dir / "runs" / "time-limit"
    # slurmctld checks time limits every 30 s and sends the warning up to one period early: with
    # USR2 5 s before a 1-minute limit it lands 25-55 s after the start, the kill one check later.
    # 150 s of training on one core (measured here) makes sure the first attempt is cut, even when
    # the job runs faster than the calibration did (with 70 s a run once finished inside the limit).
    long, short = long_spec(steps=steps_for_seconds(env, 150)), long_spec(steps=800, seed=1)
    refs = {timed: reference(env / "ref-time-limit", long), preempt: reference(env / "ref-preempt", short)}
    limit = slurm_executor(
        max_num_timeout=5,
        signal_delay_s=5,
        resources=[
            {"max_params": 1e12, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 1}
        ],
    )
    jobs = submit(limit, sweep_dir, [(long, timed)], submitted)
    jobs |= submit(slurm_executor(max_num_timeout=3), sweep_dir, [(short, preempt)], submitted)

    wait_running(preempt, short.steps // 5)
    slurm("scancel", "--signal=USR2", native(jobs[preempt]))
    seen = watch([preempt, timed], timeout=420)

    for run_dir, ref in refs.items():
        status, result = store.read_status(run_dir), store.read_result(run_dir)
        assert status.state == "done" and status.job_id == jobs[run_dir], (run_dir.name, seen[run_dir])
        assert result.restarts == status.requeues >= 1, (run_dir.name, result, status)
        assert result.val_loss == reference_loss(env / f"ref-{run_dir.name}", ref), run_dir.name
    assert store.read_status(preempt).requeues == 1
    log = (preempt / "logs" / "train.log").read_text()
    assert "stopped by SIGUSR2" in log and "restart 1" in log and "resumed" in log
    log = (timed / "logs" / "train.log").read_text()
    assert "stopped by SIGUSR2" in log and "resumed" in log


@pytest.mark.slurm
@pytest.mark.slow
def test_requeue_cancel_kill_and_failure_are_reported(slurm_cluster, env, capsys, submitted):
    sweep_dir = env / "results" / "t"
    spec = long_spec(steps=1500)
    requeue, cancel, kill, fail = (
        sweep_dir / "runs" / name for name in ("requeue", "cancel", "kill", "fail")
    )

    broken = replace(
        spec, seed=7, data=replace(spec.data, corpus=str(env / "missing.txt"), shards=str(env / "none"))
    )
    ref = reference(env, spec)
    jobs = submit(slurm_executor(), sweep_dir, [(spec, requeue), (replace(spec, seed=1), cancel)], submitted)
    wait_running(requeue, 50)
    wait_running(cancel, 50)
    slurm("scontrol", "requeue", native(jobs[requeue]))
    slurm("scancel", native(jobs[cancel]))
    # a requeued job is held >= 10 s (AuthInfo=cred_expire=10): time to see it waiting
    seen = watch([requeue], timeout=60, until=lambda views: views[requeue].state == "requeued")
    assert main(["status", "t", "--runs"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if jobs[requeue] in line)
    assert " requeued " in row and " 1 " in row, row  # state and requeue count

    jobs |= submit(slurm_executor(), sweep_dir, [(replace(spec, seed=2), kill), (broken, fail)], submitted)
    wait_running(kill, 20)
    for pid in step_pids(native(jobs[kill])):  # the job's processes die, as in an OOM kill
        os.kill(pid, signal.SIGKILL)

    watch([requeue, cancel, kill, fail], timeout=300)
    state = {d: store.read_status(d) for d in (requeue, cancel, kill, fail)}
    assert state[requeue].state == "done" and state[requeue].requeues == 1, (seen, state[requeue])
    assert store.read_result(requeue).val_loss == reference_loss(env, ref)
    assert state[cancel].state == "cancelled" and state[cancel].reason.startswith("CANCELLED"), state[cancel]
    assert state[kill].state == "failed" and state[kill].reason.startswith("FAILED"), state[kill]
    assert state[fail].state == "failed"
    assert (
        state[fail].reason.startswith("scaling train exited with code 2")
        and "missing.txt" in state[fail].reason
    )

    assert main(["status", "t"]) == 0
    assert capsys.readouterr().out.strip().endswith("4 runs: 1 done, 2 failed, 1 cancelled")


@pytest.mark.slurm
def test_cancel_marks_queued_and_running_jobs(slurm_cluster, env, capsys, submitted):
    sweep_dir = env / "results" / "t"
    spec = long_spec(steps=1500)

    run_dirs = [sweep_dir / "runs" / f"r{i}" for i in range(3)]  # 2 CPUs: two run, one waits
    submit(
        slurm_executor(), sweep_dir, [(replace(spec, seed=i), d) for i, d in enumerate(run_dirs)], submitted
    )
    wait_running(run_dirs[0], 5)
    assert main(["cancel", "t"]) == 0
    assert "cancelled 3 run(s) of t" in capsys.readouterr().out
    seen = watch(run_dirs, timeout=60)
    assert all(s[-1] == "cancelled" for s in seen.values()), seen
    assert {store.read_status(d).reason for d in run_dirs} == {"cancelled by `scaling cancel`"}


# --- bad input ---------------------------------------------------------------------------------


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "override, message",
    [
        ("cluster=k8s", "no cluster config 'k8s': choose from local, slurm"),  # the later cluster= wins
        ("cluster.executor=k8s", "unknown executor 'k8s'"),
        ("+cluster.gpus=4", r"unknown field(s) gpus"),
        ("+cluster.resources.0.gpu=1", "resources[0]: unknown field(s) gpu"),
    ],
)
def test_unknown_cluster_or_option_is_one_line(env, capsys, override, message):
    assert message in one_line_error(capsys, ["sweep", "t", "cluster=slurm", override, "--dry-run"])
    assert not (env / "results").exists()


def test_missing_slurm_commands_is_one_line(env, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    err = one_line_error(capsys, ["sweep", "t", "cluster=slurm", "--dry-run"])
    assert "cluster=slurm needs sbatch" in err and "cluster=local" in err


@pytest.mark.slurm
def test_unknown_partition_surfaces_sbatch_error(slurm_cluster, env, capsys):
    argv = ["sweep", "t", "cluster=slurm", ONE_CPU, "cluster.partition=no-such-partition"]
    refusal = "sbatch: error: invalid partition specified: no-such-partition"
    # the data are prepared first, as a job in the same partition
    assert re.fullmatch(
        f"scaling sweep: error: sbatch refused the job prepare-[^:]+: {refusal} \\(the job asked for 1 cores and 1 GB: .*data.prepare_mem_gb.*\\)",
        one_line_error(capsys, argv),
    )
    assert main(["prepare", "t"]) == 0  # prepared here: the runs' job array is next
    capsys.readouterr()
    assert one_line_error(capsys, argv) == f"scaling sweep: error: sbatch refused the job array: {refusal}"


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        h.update(f"{p.relative_to(folder)} {st.st_mtime_ns} {st.st_size}".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize(
    "command", [["sweep", "t"], ["status", "t"], ["cancel", "t"], ["sweep", "t", "--dry-run"]]
)
def test_incompatible_results_folder_is_refused_untouched(env, capsys, command):
    sweep_dir = env / "results" / "t"
    run_dir = sweep_dir / "runs" / "ar-old-run"
    run_dir.mkdir(parents=True)
    (sweep_dir / "store.json").write_text(json.dumps({"store_version": 0}))
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "job_id": "41_0"}))
    (run_dir / "spec.yaml").write_text("arm: ar\nmodel_size: 6M\n")
    before = tree_digest(env / "results")
    err = one_line_error(capsys, command)
    assert "incompatible version" in err and "store_version 0" in err
    assert tree_digest(env / "results") == before
    assert not (env / "data").exists()


@pytest.mark.slurm
def test_two_tasks_train_one_run_with_ddp_through_srun(slurm_cluster, env, submitted):
    """A run given two tasks (CPU, gloo): SLURM's variables make them ranks 0 and 1 of one DDP run,
    which ends at the loss of a single process (the noise is keyed by sequence, not by rank)."""
    sweep_dir = env / "results" / "t"
    spec = long_spec(steps=40)
    ref = reference(env, spec)
    two = slurm_executor(
        resources=[
            {
                "max_params": 1e12,
                "gpus_per_node": 0,
                "tasks_per_node": 2,
                "cpus_per_task": 1,
                "mem_gb": 1,
                "timeout_min": 10,
            }
        ]
    )
    run_dir = sweep_dir / "runs" / spec.run_key
    submit(two, sweep_dir, [(spec, run_dir)], submitted)
    watch([run_dir], timeout=300)
    result = store.read_result(run_dir)
    assert result is not None and result.world_size == 2, (run_dir / "logs" / "train.log").read_text()[-2000:]
    assert result.val_loss == pytest.approx(reference_loss(env, ref), rel=1e-5)
    assert (run_dir / "logs" / "train.rank1.log").exists()


def test_rendezvous_port_and_host_without_scontrol(monkeypatch):
    from trainer import distributed

    assert distributed.first_host("gpu[003-005,9],cpu1") == "gpu003"
    assert distributed.first_host("node7,node8") == "node7"
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "a[10-11]")
    monkeypatch.setenv("SLURM_JOB_ID", "1234567")
    distributed._slurm_rendezvous()
    assert os.environ["MASTER_ADDR"] == "a10"
    port = int(os.environ["MASTER_PORT"])
    assert 20000 <= port < 30000 and port == 20000 + 1234567 % 10000  # below the ephemeral range


@pytest.mark.parametrize(
    "how, params, extra",
    [
        ("gpus_per_node", {"gpus_per_node": 4}, {}),
        ("gpus_per_task", {}, {"gpus-per-task": 1}),
        ("gres", {}, {"gres": "gpu:4"}),
    ],
)
def test_gpus_are_asked_for_as_the_cluster_wants_with_one_task_per_gpu(how, params, extra):
    executor = slurm_executor(gpu_request=how, sbatch={"exclusive": True})
    r = executor.config.resources[0].__class__(max_params=1e9, gpus_per_node=4)
    got = executor.parameters(r, "s", 60)
    assert got["tasks_per_node"] == 4 and got["timeout_min"] == 60
    assert ("gpus_per_node" in got) == bool(params) and all(got[k] == v for k, v in params.items())
    assert got["slurm_additional_parameters"] == {"exclusive": True, **extra}


@pytest.mark.slurm
def test_a_refused_array_leaves_the_accepted_ones_recorded(slurm_cluster, env, submitted):
    """sbatch accepts the first job array and refuses the second (it asks for 100 TB of memory of a small
    node): the first array's job is recorded at once, so no later sweep submits it again."""
    from scaling.errors import UserError

    sweep_dir = env / "results" / "t"
    store.init_layout(sweep_dir)
    spec = long_spec(steps=2000)
    small = Run(sweep_dir / "runs" / "small", spec, 1)
    big = Run(sweep_dir / "runs" / "big", replace(spec, seed=1), 10**9)
    for run in (small, big):
        store.ensure_run(run.run_dir, run.spec)
    executor = slurm_executor(
        resources=[
            {"max_params": 1e6, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10},
            {"max_params": 1e12, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 100000, "timeout_min": 10},
        ]
    )
    recorded: dict[str, str] = {}

    def record(ids: dict[str, str]) -> None:
        recorded.update(ids)
        submitted.extend(ids.values())
        for key, job_id in ids.items():
            store.mark_submitted(small.run_dir if key == small.run_key else big.run_dir, job_id)

    with pytest.raises(UserError, match="sbatch refused the job array"):
        executor.submit(sweep_dir, [small, big], record)
    assert list(recorded) == [small.run_key]
    assert store.read_status(small.run_dir).job_id == recorded[small.run_key]
    assert store.read_status(big.run_dir).job_id is None


@pytest.mark.slurm
def test_jobs_a_killed_sweep_did_not_record_are_adopted_not_submitted_again(
    slurm_cluster, env, capsys, monkeypatch, submitted
):
    """A sweep killed between sbatch's answer and its record (here: the record is lost) leaves live
    jobs no run folder names; the next sweep asks the queue and adopts them instead of training
    every run twice. The jobs are held so that none starts and records itself."""
    from scaling.config import load_sweep
    from scaling.workflows.prepare import prepare_for_sweep

    prepare_for_sweep(load_sweep("t", []), say=lambda _: None)  # here, not as a (held) SLURM job
    held = ["sweep", "t", "cluster=slurm", ONE_CPU, "cluster.sbatch={hold:true}", "--no-wait"]
    lost: dict[str, str] = {}
    with monkeypatch.context() as m:
        m.setattr(store, "mark_submitted", lambda run_dir, job_id: lost.update({Path(run_dir).name: job_id}))
        assert main(held) == 0
    submitted.extend(lost.values())
    results = env / "results"
    assert len(lost) == 4 and {s["state"] for s in statuses(results).values()} == {"planned"}
    submissions = set((results / "t" / "submitit").iterdir())
    capsys.readouterr()

    assert main(held) == 0
    out = capsys.readouterr().out
    assert "adopted 4 run(s)" in out and "4 queued or running, 0 to submit" in out, out
    assert set((results / "t" / "submitit").iterdir()) == submissions  # no second sbatch
    assert {k: (s["state"], s["job_id"]) for k, s in statuses(results).items()} == {
        k: ("queued", j) for k, j in lost.items()
    }
    assert main(held) == 0  # recorded now: the folders answer, nothing is adopted twice
    out = capsys.readouterr().out
    assert "adopted" not in out and "4 queued or running, 0 to submit" in out, out

    # a live job the folder names as the one its run failed in is not adopted: the run goes anew
    failed = runs_of(results)[0]
    store.write_status(failed, "failed", reason="boom")
    assert main(held) == 0
    out = capsys.readouterr().out
    assert "adopted" not in out and "3 queued or running, 1 to submit" in out, out
    submitted.append(store.read_status(failed).job_id)
    assert store.read_status(failed).job_id != lost[failed.name]


@pytest.mark.slurm
def test_adopt_names_the_runs_of_live_tasks_only(slurm_cluster, env, submitted):
    """The executor's side: the runs asked about whose tasks wait or run, none of a cancelled task."""
    sweep_dir = env / "results" / "t"
    spec = long_spec(steps=2000)
    runs = [Run(sweep_dir / "runs" / f"r{i}", replace(spec, seed=i), 10**6) for i in range(2)]
    store.init_layout(sweep_dir)
    for run in runs:
        store.ensure_run(run.run_dir, run.spec)
    ids: dict[str, str] = {}
    slurm_executor(sbatch={"hold": True}).submit(sweep_dir, runs, ids.update)
    submitted.extend(ids.values())
    assert slurm_executor().adopt(sweep_dir, runs) == ids
    assert slurm_executor().adopt(sweep_dir, runs[1:]) == {runs[1].run_key: ids[runs[1].run_key]}
    subprocess.run(["scancel", native(ids[runs[0].run_key])], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while slurm_executor().adopt(sweep_dir, runs) != {runs[1].run_key: ids[runs[1].run_key]}:
        assert time.monotonic() < deadline, "a cancelled task is still adopted"
        time.sleep(0.5)
