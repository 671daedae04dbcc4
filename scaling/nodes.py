"""Bad nodes: the compute nodes on which a sweep's runs failed or stalled, and which of them new
submissions avoid.

Each run's status.json lists the node of every failure of its trainer (an exit without a result
that was not bad input) and of every stall (no heartbeat; scaling/executors/slurm.py). A node that
collected `after` of them over the sweep's runs is excluded from resubmissions, never the last
node left: when every node of the partition qualifies, the one with the fewest failures is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scaling import atomic
from scaling.store import MalformedFile, RunStatus, load_json

FILE = "nodes.json"  # results/<sweep>/nodes.json: the exclusion of the sweep's latest submission


@dataclass(frozen=True)
class Exclusion:
    excluded: list[str]  # nodes new jobs must not use (sbatch --exclude)
    spared: list[str]  # nodes that qualified but are kept: the last ones left
    failures: Counter  # node -> failures over the sweep's runs


def failures(statuses: Iterable[RunStatus]) -> Counter:
    """Node -> how many failures and stalls of the runs were recorded on it."""
    return Counter(node for s in statuses for node in s.failed_nodes)


def exclusion(counts: Counter, nodes: Sequence[str], after: int) -> Exclusion:
    """The nodes with at least `after` failures (0: none), except that one node of `nodes` (the
    partition's) always stays usable. With `nodes` unknown (empty) nothing is excluded: a job
    that excludes every node would never start."""
    if not nodes:
        return Exclusion([], [], counts)
    # a node that left the partition needs no exclusion
    bad = sorted(n for n, k in counts.items() if after > 0 and k >= after and n in nodes)
    spared: list[str] = []
    if bad and set(nodes) <= set(bad):
        keep = min(bad, key=lambda n: (counts[n], n))
        bad, spared = [n for n in bad if n != keep], [keep]
    return Exclusion(bad, spared, counts)


def record(sweep_dir: Path, e: Exclusion) -> None:
    atomic.write_json(sweep_dir / FILE, {"excluded": e.excluded, "spared": e.spared})


def recorded(sweep_dir: Path, statuses: Iterable[RunStatus]) -> Exclusion:
    """The failures of these runs with the exclusion the latest submission applied."""
    try:
        saved = load_json(sweep_dir / FILE) or {}
    except MalformedFile:
        saved = {}
    return Exclusion(list(saved.get("excluded", [])), list(saved.get("spared", [])), failures(statuses))


def summary(e: Exclusion) -> str | None:
    """One line for `scaling sweep` and `scaling status`, or None when no run failed on a node."""
    if not e.failures:
        return None
    listed = ", ".join(f"{n} ({k})" for n, k in sorted(e.failures.items(), key=lambda kv: (-kv[1], kv[0])))
    words = [f"nodes with failed or stalled runs: {listed}"]
    if e.excluded:
        words.append(f"excluded from new jobs: {', '.join(e.excluded)}")
    if e.spared:
        words.append(f"not excluded, the last node(s) left: {', '.join(e.spared)}")
    return "; ".join(words)
