"""Small runs share a GPU (scaling/packing.py): the rule against exact expectations (the paper
grid's small runs on 80 GB cards, smaller cards, the off switches, CPU nodes, grouping by length
under the requeue limit), the plan's pack column and totals, and on the localhost SLURM cluster
two runs packed in one task: both finish at the losses of unpacked runs, and a preempted task
resumes both."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit
from test_local_executor import results_of, runs_of, statuses, sweep_env
from test_slurm import (  # noqa: F401 (fixtures)
    long_spec,
    native,
    reference,
    reference_loss,
    slurm,
    slurm_cluster,
    slurm_executor,
    submit,
    submitted,
    wait_running,
    watch,
)

from scaling import memory, packing, placement, store
from scaling.cli import main
from scaling.config import load_sweep
from scaling.executors import Run, executor_for
from scaling.executors import slurm as slurm_job
from scaling.hardware import Hardware, require_peak
from scaling.plan import plan_sweep

RULE = packing.Rule(per_gpu=None, max_params=1e8)
ONE_GPU = {"processes": 1, "gpus": 1, "cpus": 8}


def card(gb: float) -> Hardware:
    return Hardware("H100", gb, require_peak("H100"), 0.35)


@pytest.fixture(scope="module")
def paper():
    return plan_sweep(load_sweep("paper"))


def run_of(plan, prefix: str):
    return next(s for s in plan.runs if s.run_key.startswith(prefix))


def shared(spec, gb: float, rule=RULE, **where):
    alone = placement.place(spec, 1, card(gb), 1440, 3)
    return alone, packing.share(spec, alone, rule, card_gb=gb, **(ONE_GPU | where))


def test_a_small_run_is_sized_for_its_share_of_the_card(paper):
    spec = run_of(paper, "ar-66M-6e18")
    alone, packed = shared(spec, 80)
    assert (alone.micro, alone.share) == (64, 1)  # alone it fills the card: 56 GB
    assert (packed.share, packed.micro, packed.accum, packed.checkpointing) == (4, 16, 16, False)
    one = memory.estimate(spec.model, spec.arm, 16).total
    assert packed.gb_per_gpu == pytest.approx(one / memory.GB)
    assert 4 * one <= 0.9 * 80e9 < 4 * memory.estimate(spec.model, spec.arm, 32).total
    # the time limit and GPU-hours of the run itself do not change; only its micro-batch
    assert (packed.gpu_hours, packed.time_limit_min) == (alone.gpu_hours, alone.time_limit_min)
    assert placement.apply(spec, packed).micro_batch == 16

    small = run_of(paper, "ar-6M-6e18")
    assert (shared(small, 80)[1].share, shared(small, 80)[1].micro) == (4, 64)


def test_the_card_limits_how_many_share_it(paper):
    spec = run_of(paper, "ar-66M-6e18")
    _, on24 = shared(spec, 24)  # 2 x 7.8 GB fit 90% of 24 GB, 3 do not
    assert (on24.share, on24.micro, on24.accum) == (2, 4, 64)
    assert 3 * memory.estimate(spec.model, spec.arm, 4).total > 0.9 * 24e9
    alone, on16 = shared(spec, 16)  # two copies at micro-batch 4 need 15.6 GB of 14.4
    assert on16 == alone and on16.share == 1
    _, capped = shared(spec, 80, packing.Rule(per_gpu=2, max_params=1e8))
    assert (capped.share, capped.micro) == (2, 32)  # the largest micro-batch of half the card


@pytest.mark.parametrize(
    "rule, where",
    [
        (packing.Rule(per_gpu=1, max_params=1e8), {}),  # off
        (packing.Rule(per_gpu=0, max_params=1e8), {}),  # off
        (packing.Rule(per_gpu=None, max_params=5e7), {}),  # 95M parameters: too large
        (RULE, {"gpus": 4, "processes": 4}),  # a run on four GPUs
        (RULE, {"card_gb": None}),  # an unknown card: no memory model
    ],
)
def test_off_switches_and_runs_that_never_share(paper, rule, where):
    spec = run_of(paper, "ar-66M-6e18")
    alone = placement.place(spec, 1, card(80), 1440, 3)
    assert packing.share(spec, alone, rule, **(ONE_GPU | {"card_gb": 80} | where)) == alone


def test_cpu_nodes_pack_only_when_the_config_says_so(paper):
    spec = run_of(paper, "ar-6M-6e18")
    alone = placement.place(spec, 1, None, 60, 0)

    def k(per_gpu, cpus: int, processes: int = 1) -> int:
        rule = packing.Rule(per_gpu, 1e8)
        return packing.share(spec, alone, rule, processes=processes, gpus=0, cpus=cpus, card_gb=None).share

    assert k(None, 8) == 1  # the default packs on GPUs only
    assert (k(2, 2), k(4, 2), k(4, 8), k(2, 1), k(2, 2, processes=2)) == (2, 2, 4, 1, 1)
    assert (
        packing.share(spec, alone, packing.Rule(2, 1e8), processes=1, gpus=0, cpus=2, card_gb=None).micro == 0
    )


def fake(hours: float | None, share: int = 4, delay: int = 100) -> placement.Placement:
    limit, requeues = placement.time_limit(hours, 1440, 1.3) if hours is not None else (60, 0)
    return placement.Placement(1, 8, 1, False, "ddp", 10.0, hours, limit, requeues, (), delay, share)


def test_runs_of_similar_length_share_a_task_within_the_requeue_limit():
    runs = [
        ("short-a", 1.0, fake(1.0)),
        ("long-a", 10.0, fake(10.0, delay=300)),
        ("short-b", 1.2, fake(1.2)),
        ("big", 50.0, fake(50.0, share=1)),  # not packable: alone, its own limit
        ("long-b", 9.5, fake(9.5)),
        ("short-c", 0.9, fake(0.9)),
        ("long-c", 9.0, fake(9.0)),
        ("long-d", 9.8, fake(9.8)),
        ("short-d", 1.1, fake(1.1)),
    ]
    groups = packing.pack(runs, 1440, 3, 1.3)
    assert [g.keys for g in groups] == [
        ("big",),
        ("long-a", "long-d", "long-b", "long-c"),
        ("short-b", "short-d", "short-a", "short-c"),
    ]
    # they share one GPU's throughput: 38.3 GPU-hours x 1.3 + 10 min is 2,998 min, in 1440-min jobs
    assert groups[1] == packing.Group(groups[1].keys, 1440, 2, 300)
    assert groups[2] == packing.Group(groups[2].keys, 360, 0, 100)  # 4.2 h: 338 min, in 30-min steps
    assert groups[0] == packing.Group(("big",), 1440, 2, 100)

    # one requeue at most: the four long runs (2,998 min) do not fit; three (2,295 min) do
    tight = packing.pack([r for r in runs if r[0] != "big"], 1440, 1, 1.3)
    assert [g.keys for g in tight] == [
        ("long-a", "long-d", "long-b"),
        ("long-c", "short-b", "short-d", "short-a"),
        ("short-c",),
    ]
    assert tight[2] == packing.alone("short-c", runs[5][2])


def test_a_group_holds_at_most_the_smallest_share_of_its_runs():
    runs = [(f"r{i}", 10.0 - i, fake(1.0, share=2 if i == 1 else 4)) for i in range(6)]
    assert [g.keys for g in packing.pack(runs, 1440, 3, 1.3)] == [("r0", "r1"), ("r2", "r3", "r4", "r5")]


def test_cpu_groups_keep_the_entry_limit():
    runs = [(f"r{i}", float(i), fake(None, share=2)) for i in range(3)]
    groups = packing.pack(runs, 60, 0, 1.3)
    assert groups == [packing.Group(("r2", "r1"), 60, 0, 100), packing.Group(("r0",), 60, 0, 100)]
    assert packing.labels(groups) == {"r2": "g1x2", "r1": "g1x2", "r0": None}
    assert packing.totals(groups, {k: p for k, _, p in runs}) == [
        "packing: 2 runs share 1 task (1 of 2 runs) instead of 2 (pack: g<group>x<runs>; "
        "cluster.pack_per_gpu=1 turns it off)"
    ]


def test_the_paper_grid_packs_its_small_runs(paper):
    executor = executor_for(load_sweep("paper", ["cluster=slurm"]).cluster)
    runs = [Run(Path(d.run_key), d.spec, d.params_total) for d in paper.details]
    placed = {r.run_key: executor.place(r) for r in runs}
    groups = executor.pack(runs)
    assert sorted(k for g in groups for k in g.keys) == sorted(placed)
    packed = [g for g in groups if len(g.keys) > 1]
    assert all(len(g.keys) <= min(placed[k].share for k in g.keys) for g in packed)
    assert all(g.requeues <= 3 for g in packed)
    # every run of one GPU shares it: 6M to 66M, six sizes per arm across the budgets
    one_gpu = {k for k, p in placed.items() if p.gpus == 1}
    assert {k for g in packed for k in g.keys} == one_gpu and len(one_gpu) == 30
    assert {len(g.keys) for g in packed} == {2, 4} and len(packed) == 9
    assert packing.totals(groups, placed)[0].startswith("packing: 30 runs share 9 GPUs (6 of 4, 3 of 2 runs)")

    off = executor_for(load_sweep("paper", ["cluster=slurm", "cluster.pack_per_gpu=1"]).cluster)
    assert all(len(g.keys) == 1 for g in off.pack(runs))


def test_plan_shows_the_pack_column_and_totals(capsys):
    assert main(["plan", "paper", "cluster=slurm", "budgets=[6e18]", "arms=[ar]", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    rows = {row["model"]: row for row in json.loads(out)}
    # 6M, 34M and 66M share one GPU: 20.6 GPU-hours x 1.3 in two 1440-minute jobs
    assert {
        m: (r["pack"], r["micro"], r["limit_min"], r["requeues"]) for m, r in rows.items() if r["pack"]
    } == {
        "6M": ("g1x3", 64, 1440, 1),
        "34M": ("g1x3", 16, 1440, 1),
        "66M": ("g1x3", 16, 1440, 1),
    }
    assert rows["666M"]["pack"] is None and rows["666M"]["micro"] == 8
    assert "packing: 3 runs share 1 GPU (1 of 3 runs) instead of 3" in err
    assert "their 21 GPU-hours at the assumed MFU are the same packed or not" in err


# --- the task that trains a group, without a cluster -------------------------------------------


@pytest.fixture
def task(tmp_path, monkeypatch):
    """Run folders a, b, c queued as job slurm:7_0 on node-3 with 8 CPUs; `started` lists the
    (run, threads) of every trainer the task starts, each a Python snippet from `scripts`."""
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(job_id="7_0", global_rank=0))
    monkeypatch.setenv("SLURMD_NODENAME", "node-3")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    scripts: dict[str, str] = {}
    started: list[tuple[str, str]] = []

    def launch(run_dir: Path, log_path: Path, header: str, env: dict, job_id: str) -> subprocess.Popen:
        assert job_id == "slurm:7_0"  # the trainer is told its job
        started.append((run_dir.name, env["SCALING_THREADS"]))
        return subprocess.Popen([sys.executable, "-c", scripts[run_dir.name]])

    monkeypatch.setattr(slurm_job, "launch_trainer", launch)
    dirs = {}
    for name in "abc":
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        store.mark_submitted(dirs[name], "slurm:7_0")
    return SimpleNamespace(dirs=dirs, scripts=scripts, started=started)


def test_a_failing_run_marks_only_itself_failed_at_once(task):
    a, b = task.dirs["a"], task.dirs["b"]
    task.scripts["a"] = "raise SystemExit(3)"
    # b goes on until a's failure is in a's status.json, then it is preempted (exit 75)
    task.scripts["b"] = (
        "import json, time\n"
        f"for _ in range(100):\n"
        f"    if json.load(open({str(a / 'status.json')!r}))['state'] == 'failed': raise SystemExit(75)\n"
        "    time.sleep(0.1)\n"
    )
    with pytest.raises(RuntimeError, match="^a: scaling train exited with code 3$"):
        slurm_job.TrainJob()(str(a), str(b))
    assert task.started == [("a", "4"), ("b", "4")]  # two runs split the task's 8 CPUs
    failed, other = store.read_status(a), store.read_status(b)
    assert (failed.state, failed.job_id, failed.failed_nodes) == ("failed", "slurm:7_0", ["node-3"])
    assert other.state == "running" and other.failed_nodes == []

    # the requeued task trains b again, not a: it failed in this job (b keeps its threads: a
    # resumed CPU run is bitwise equal only with the count it was trained with)
    task.started.clear()
    task.scripts["b"] = "raise SystemExit(75)"
    assert slurm_job.TrainJob()(str(a), str(b)) == {"b": "running"}
    assert task.started == [("b", "4")] and store.read_status(a).state == "failed"


def test_a_task_starting_as_its_runs_are_cancelled_trains_none_of_them(task):
    """`scaling cancel` marks a queued run cancelled while SLURM starts its task: the task must not
    write `running` over it (the queue's bare CANCELLED would then replace the cancel's reason)."""
    a, b = task.dirs["a"], task.dirs["b"]
    store.write_status(a, "cancelled", reason="cancelled by `scaling cancel`")
    task.scripts["b"] = "raise SystemExit(75)"
    assert slurm_job.TrainJob()(str(a), str(b)) == {"b": "running"}
    assert task.started == [("b", "4")]
    assert (store.read_status(a).state, store.read_status(a).reason) == (
        "cancelled",
        "cancelled by `scaling cancel`",
    )


def test_a_stall_requeues_the_task_and_counts_for_its_run_only(task):
    a, b, c = (str(task.dirs[n]) for n in "abc")
    job = slurm_job.TrainJob(signal_delay_s=20, max_stalls=1)
    job._stalled, job._stalled_run = "stalled: no heartbeat for 0.5 min on node-3", b
    again = job.checkpoint(a, b, c)
    assert again is not None and again.args == (a, b, c)
    plain, stalled = store.read_status(a), store.read_status(b)
    assert (plain.state, plain.requeues, plain.stalls, plain.failed_nodes) == ("requeued", 1, 0, [])
    assert (stalled.state, stalled.stalls, stalled.failed_nodes) == ("requeued", 1, ["node-3"])
    assert stalled.reason == job._stalled

    # its second stall is one too many: b fails, alone; a and c requeue
    again = job.checkpoint(a, b, c)
    assert again is not None and store.read_status(b).state == "failed"
    assert "more than cluster.max_stalls" in store.read_status(b).reason
    assert {store.read_status(d).state for d in (a, c)} == {"requeued"}

    # nothing left to train: no requeue
    for d in (a, c):
        store.write_status(d, "failed", reason="test")
    assert job.checkpoint(a, b, c) is None


def test_sigterm_reaches_every_trainer_of_the_task(task):
    job = slurm_job.TrainJob()
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    job._trainers = [
        slurm_job._Trainer(task.dirs[n], task.dirs[n] / "train.log", subprocess.Popen(sleeper)) for n in "ab"
    ]
    job._on_sigterm(15, None)  # scancel, scontrol requeue: each trainer checkpoints, SLURM decides
    assert [t.child.wait(timeout=10) for t in job._trainers] == [-15, -15] and job._terminated


def test_a_task_pickled_by_the_previous_version_still_runs():
    """A task queued before packing (one run folder, the old attributes) is requeued by this version."""
    before = slurm_job.TrainJob.__new__(slurm_job.TrainJob)
    before.__dict__.update(
        signal_delay_s=30,
        stall_s=60.0,
        max_stalls=1,
        _child=None,
        _terminated=False,
        _stalled=None,
        _gave_up=False,
    )
    job = pickle.loads(pickle.dumps(before))
    assert (job.signal_delay_s, job.stall_s, job.max_stalls) == (30, 60.0, 1)
    assert job._trainers == [] and job._stalled_run is None and not hasattr(job, "_child")


# --- on the localhost SLURM cluster -------------------------------------------------------------

PACK_TWO = [
    "cluster=slurm-cpu",
    "cluster.pack_per_gpu=2",  # CPU nodes pack only when told; the two runs split the task's 2 CPUs
    "cluster.resources=[{max_params:1e12,gpus_per_node:0,cpus_per_task:2,mem_gb:2,timeout_min:10}]",
    "cluster.poll_s=0.5",
]


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    return sweep_env(tmp_path, monkeypatch, text_corpus)


@pytest.mark.slurm
@pytest.mark.slow
def test_packed_runs_finish_at_the_losses_of_unpacked_runs(slurm_cluster, env, capsys):  # noqa: F811
    results = env / "results"
    # unpacked first, here (it also prepares the data, which the SLURM sweep then finds)
    alone = [
        "sweep",
        "t",
        "name=alone",
        "cluster.threads_per_run=1",
        "cluster.max_parallel=2",
        "cluster.poll_s=0.2",
    ]
    assert main(alone) == 0
    assert "4 runs: 4 done" in capsys.readouterr().out

    assert main(["sweep", "t", *PACK_TWO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count(" g1x2") == 2 and out.count(" g2x2") == 2 and "packing: 4 runs share 2 tasks" in out
    assert main(["sweep", "t", *PACK_TWO]) == 0
    assert "4 runs: 4 done" in capsys.readouterr().out
    jobs = {k: s["job_id"] for k, s in statuses(results).items()}
    assert len(set(jobs.values())) == 2  # two tasks of two runs each
    for run in runs_of(results):
        log = (run / "logs" / "train.log").read_text()
        assert log.count("=== ") == 1 and f"job {jobs[run.name]} restart 0" in log
    losses = {k: r["val_loss"] for k, r in results_of(results).items()}
    assert losses == {k: r["val_loss"] for k, r in results_of(results, "alone").items()}

    # several runs of one job id: status lists each with it
    assert main(["status", "t", "--runs"]) == 0
    table = capsys.readouterr().out
    assert all(table.count(job) == 2 for job in set(jobs.values())), table


@pytest.mark.slurm
@pytest.mark.slow
def test_a_preempted_packed_task_resumes_both_runs(slurm_cluster, env, submitted):  # noqa: F811
    sweep_dir = env / "results" / "t"
    specs = [long_spec(steps=500, seed=seed) for seed in (0, 1)]
    dirs = [sweep_dir / "runs" / f"packed-{i}" for i in range(2)]
    executor = slurm_executor(
        pack_per_gpu=2,
        resources=[
            {"max_params": 1e12, "gpus_per_node": 0, "cpus_per_task": 2, "mem_gb": 2, "timeout_min": 10}
        ],
    )
    jobs = submit(executor, sweep_dir, list(zip(specs, dirs)), submitted)
    assert len(set(jobs.values())) == 1
    for d in dirs:
        wait_running(d, 100)
    slurm("scancel", "--signal=USR2", native(jobs[dirs[0]]))  # a preemption: the task checkpoints both
    refs = [reference(env / f"ref-{i}", spec) for i, spec in enumerate(specs)]
    watch(dirs, timeout=420)

    for i, d in enumerate(dirs):
        status, result = store.read_status(d), store.read_result(d)
        assert status.state == "done" and status.job_id == jobs[d] and status.requeues == 1, status
        assert result is not None and result.restarts == 1, result
        assert result.val_loss == reference_loss(env / f"ref-{i}", refs[i]), d.name
        log = (d / "logs" / "train.log").read_text()
        assert "stopped by SIGUSR2" in log and "restart 1" in log and "resumed" in log
        assert json.loads((d / "result.json").read_text())["steps"] == 500
