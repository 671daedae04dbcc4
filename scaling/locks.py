"""Locks on the results folder, for the file systems clusters use.

- `sweep_lock`: the step of a sweep from reading its runs' states to recording their submissions
  (seconds to minutes). A lock file created with O_CREAT | O_EXCL, which is atomic on local disks,
  NFS (v3 and later) and Lustre, where flock may be ignored or local to a node. It holds
  `host pid time`; a lock whose holder is a dead process of this host, or that is older than its
  lease, is broken (a sweep killed with SIGKILL cannot leave the sweep locked forever).
- `held`: an flock held by one process for as long as it works (a trainer on its run folder, through
  scaling/store.py's `hold_run`; a data preparation on its folder); the kernel releases it when the
  process dies, whatever kills it. `holder_of` names a live holder.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scaling.errors import UserError

LEASE_S = 1800  # a sweep lock older than this is stale even if its holder cannot be checked
POLL_S = 0.5


@contextmanager
def exclusive(path: Path, what: str, wait_s: float, lease_s: float = LEASE_S) -> Iterator[None]:
    """Holds the lock file `path` for the block; waits up to `wait_s` for another holder, then
    fails with a one-line UserError naming it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while not _create(path):
        holder = _holder(path)
        if holder is not None and _stale(holder, lease_s):
            _break(path, holder)
            continue
        if time.monotonic() > deadline:
            who = _describe(holder)
            raise UserError(
                f"{what} is locked by {who} ({path}); wait for it to finish, or delete that file if "
                "no such process runs"
            )
        time.sleep(POLL_S)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
    return True


def _holder(path: Path) -> dict | None:
    """The holder's record; None while it is being written (or if it cannot be read)."""
    try:
        holder = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None if path.exists() and time.time() - _mtime(path) < 10 else {}
    return holder if isinstance(holder, dict) else {}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _stale(holder: dict, lease_s: float) -> bool:
    if not holder:  # unreadable for more than a few seconds: a writer died while creating it
        return True
    started = holder.get("time")
    if not isinstance(started, (int, float)) or time.time() - started > lease_s:
        return True
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _break(path: Path, holder: dict) -> None:
    """Removes a stale lock, unless another process replaced it meanwhile."""
    if _holder(path) == holder:
        path.unlink(missing_ok=True)


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')}"


@contextmanager
def held(
    path: Path, role: str, subject: object, wait_s: float, say: Callable[[str], None] = print
) -> Iterator[None]:
    """An exclusive flock on the file `path` while a `role` (e.g. "trainer") works on `subject`
    (e.g. a run folder); the file says `<role> pid N on HOST`. A second process waits up to
    `wait_s` (saying so once), then fails with a one-line UserError naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        deadline = time.monotonic() + wait_s
        waiting = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _flock_text(f)
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{subject} is held by {holder}: stop that process (or wait for it) first"
                    ) from None
                if not waiting:
                    limit = "" if math.isinf(wait_s) else f" up to {wait_s:.0f}s"
                    say(f"waiting{limit} for {holder} to release {subject}")
                    waiting = True
                time.sleep(POLL_S)
        f.seek(0)
        f.truncate()
        f.write(f"{role} pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def holder_of(path: Path) -> str | None:
    """What a live process holds `held`'s lock on `path` for, None when nobody does."""
    try:
        f = open(path)
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _flock_text(f)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _flock_text(f) -> str:
    f.seek(0)
    return f.read().strip() or "another process"
