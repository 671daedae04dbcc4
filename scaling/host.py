"""Facts about this machine that several layers need."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """The cores this process may run on (the affinity mask under SLURM or taskset; every core where
    the platform has no affinity call, e.g. macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
