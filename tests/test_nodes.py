"""Stuck trainers and bad nodes without a cluster: the exclusion rule (never the last node), the
node list in status.json, sbatch's --exclude, the heartbeat the trainer writes and the watchdog
that takes a silent heartbeat for a stuck trainer (the localhost-cluster test is in test_stalls.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from test_slurm import slurm_cluster  # noqa: F401 (a fixture)

from scaling import nodes, store
from scaling.executors import parse_cluster
from scaling.executors.base import STUCK, StallClock, mtime
from scaling.executors.slurm import Resources, SlurmExecutor, TrainJob


def test_a_node_is_excluded_after_the_given_failures_but_never_the_last_one():
    counts = Counter({"n1": 2, "n2": 1, "n3": 3})
    e = nodes.exclusion(counts, ["n1", "n2", "n3"], after=2)
    assert e.excluded == ["n1", "n3"] and e.spared == []
    assert nodes.exclusion(counts, ["n1", "n2", "n3"], after=0).excluded == []  # 0: never
    # every node qualifies: the one with the fewest failures stays usable
    e = nodes.exclusion(counts, ["n1", "n3"], after=2)
    assert e.excluded == ["n3"] and e.spared == ["n1"]
    e = nodes.exclusion(Counter({"only": 5}), ["only"], after=2)
    assert e.excluded == [] and e.spared == ["only"]
    # a node that left the partition needs no exclusion; an unknown partition excludes nothing
    assert nodes.exclusion(Counter({"gone": 4, "n2": 2}), ["n1", "n2"], 2).excluded == ["n2"]
    assert nodes.exclusion(counts, [], after=1) == nodes.Exclusion([], [], counts)
    line = nodes.summary(nodes.exclusion(counts, ["n1", "n3"], after=2))
    assert line == (
        "nodes with failed or stalled runs: n3 (3), n1 (2), n2 (1); excluded from new jobs: n3; "
        "not excluded, the last node(s) left: n1"
    )
    assert nodes.summary(nodes.exclusion(Counter(), ["n1"], 2)) is None


def test_failures_and_stalls_add_their_node_to_status_json(tmp_path):
    run = tmp_path / "run"
    store.write_status(run, "running", job_id="slurm:7")
    store.write_status(run, "requeued", stalls=1, failed_on="gpu-a", reason="stalled")
    store.write_status(run, "running")  # a later state keeps the history
    store.write_status(run, "failed", failed_on="gpu-b")
    status = store.read_status(run)
    assert status.failed_nodes == ["gpu-a", "gpu-b"] and status.stalls == 1
    assert store.mark_submitted(run, "slurm:8").stalls == 0  # a new job starts without stalls
    assert nodes.failures([status, store.read_status(run)]) == Counter({"gpu-a": 2, "gpu-b": 2})


def test_excluded_nodes_reach_sbatch():
    executor = SlurmExecutor(parse_cluster({"executor": "slurm"}))
    params = executor.parameters(Resources(1e12), "t", 60, exclude=["n3", "n1"])
    assert params["slurm_additional_parameters"] == {"exclude": "n3,n1"}
    assert "slurm_additional_parameters" not in executor.parameters(Resources(1e12), "t", 60)


def test_stall_settings_are_checked():
    with pytest.raises(Exception, match="stall_timeout_min, max_stalls and exclude_after must be >= 0"):
        parse_cluster({"executor": "slurm", "max_stalls": -1})


def test_the_watchdog_signals_the_job_when_the_heartbeat_stops(tmp_path, monkeypatch):
    """A heartbeat that keeps changing keeps the trainer alive; once it stops for stall_s the
    job gets USR2 (submitit's checkpoint-and-requeue) and says why."""
    monkeypatch.setenv("SLURMD_NODENAME", "node-7")
    received: list[float] = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: received.append(time.monotonic()))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    beat = tmp_path / store.HEARTBEAT_FILE
    stop_beating = threading.Event()

    def trainer() -> None:  # beats every 0.2 s for 2 s, then hangs
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            beat.touch()
            time.sleep(0.2)
        stop_beating.set()

    try:
        job = TrainJob(stall_s=1.0)
        threading.Thread(target=trainer, daemon=True).start()
        start = time.monotonic()
        job._watch(tmp_path, child)
        waited = time.monotonic() - start
        assert stop_beating.is_set() and received, "the watchdog returned without a stall"
        assert waited >= 2.0 + 1.0 - 0.3  # not while the heartbeat was changing
        assert job._stalled is not None and job._stalled.startswith("stalled: no heartbeat for")
        assert job._stalled.endswith("on node-7")
    finally:
        signal.signal(signal.SIGUSR2, previous)
        child.kill()
        child.wait()


def test_a_stat_that_hangs_counts_as_no_heartbeat(tmp_path, monkeypatch):
    gate = threading.Event()
    real_stat = type(tmp_path).stat

    def hanging(self, *args, **kwargs):
        if self.name == store.HEARTBEAT_FILE:
            gate.wait(5)
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "stat", hanging)
    assert mtime(tmp_path / store.HEARTBEAT_FILE, timeout=0.2) is STUCK
    gate.set()
    assert mtime(tmp_path / "missing", timeout=1) is None


def test_the_stall_clock_runs_while_the_heartbeat_does_not_change(tmp_path):
    beat = tmp_path / store.HEARTBEAT_FILE
    clock = StallClock(tmp_path, limit_s=0.5)  # no heartbeat yet: the clock runs from now
    assert clock.stalled_for() is None
    time.sleep(0.3)
    beat.touch()  # the first beat
    time.sleep(0.3)
    assert clock.stalled_for() is None  # 0.3 s since the beat: below the limit
    time.sleep(0.6)
    idle = clock.stalled_for()
    assert idle is not None and 0.5 <= idle < 2
    os.utime(beat, ns=(time.time_ns(), time.time_ns() + 10**9))  # a beat again
    assert clock.stalled_for() is None


def test_a_job_the_queue_ends_with_node_fail_records_its_node(tmp_path, monkeypatch):
    """A node that dies under a job cannot let the job record it: the queue's NODE_FAIL does."""
    from scaling.executors import _apply
    from scaling.executors import slurm as slurm_executor

    squeue = "77|0|77_0|NODE_FAIL|None|0|n7|\n78|0|78_0|FAILED|NonZeroExitCode|0|n8|\n"
    monkeypatch.setattr(
        slurm_executor, "run_command", lambda argv, **kw: subprocess.CompletedProcess(argv, 0, squeue, "")
    )
    infos = slurm_executor._poll(["77_0", "78_0"])
    assert (infos["77_0"].node, infos["78_0"].node) == (
        "n7",
        None,
    )  # a failed trainer is not the node's fault
    store.write_status(tmp_path, "running", job_id="slurm:77_0")
    _, state = _apply(tmp_path, store.read_status(tmp_path), "running", infos["77_0"], write=True)
    status = store.read_status(tmp_path)
    assert (state, status.failed_nodes, status.reason) == ("failed", ["n7"], "NODE_FAIL")


def test_a_multi_node_job_blames_the_node_sinfo_reports_down(monkeypatch):
    """squeue names all of a NODE_FAIL job's nodes; the one now down (or not responding) is blamed,
    and when every node is healthy again none is."""
    from scaling.executors import slurm as slurm_executor

    answers = {
        "scontrol": "n1\nn2\nn3\n",
        "sinfo": "n1|allocated\nn2|down*\nn3|allocated\n",
    }
    asked: list[list[str]] = []

    def run(argv, **kw):
        asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, answers[argv[0]], "")

    monkeypatch.setattr(slurm_executor, "run_command", run)
    assert slurm_executor._info("NODE_FAIL", "None", 0, node="n[1-3]").node == "n2"
    assert asked[0] == ["scontrol", "show", "hostnames", "n[1-3]"]
    assert asked[1][asked[1].index("-n") + 1] == "n1,n2,n3"
    answers["sinfo"] = "n1|idle\nn2|drained\nn3|idle\n"
    assert slurm_executor._info("NODE_FAIL", "None", 0, node="n[1-3]").node == "n2"
    answers["sinfo"] = "n1|idle\nn2|idle*\nn3|idle\n"
    assert slurm_executor._info("BOOT_FAIL", "None", 0, node="n1,n2,n3").node == "n2"
    answers["sinfo"] = "n1|idle\nn2|idle\nn3|mixed\n"
    assert slurm_executor._info("NODE_FAIL", "None", 0, node="n[1-3]").node is None
    asked.clear()
    assert slurm_executor._info("NODE_FAIL", "None", 0, node="n7").node == "n7"  # one node: no question
    assert asked == []


@pytest.mark.slurm
def test_the_real_queue_commands_answer_as_parsed(slurm_cluster):  # noqa: F811
    """On the localhost cluster: scontrol expands a node list and sinfo gives name|state per node."""
    from scaling.executors import slurm as slurm_executor

    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=60)
    name = node.stdout.split()[0]
    assert slurm_executor._ask(["scontrol", "show", "hostnames", f"{name},{name}"]) == [name, name]
    (line,) = slurm_executor._ask(["sinfo", "-h", "-N", "-n", name, "-o", "%N|%T"])
    assert line.split("|")[0] == name and line.split("|")[1]
    assert slurm_executor._info("NODE_FAIL", "None", 0, node=f"{name},{name}").node is None  # healthy
